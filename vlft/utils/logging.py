"""Quiet by default, verbose on request: one setup used by every CLI."""

from __future__ import annotations

import logging
import os
import warnings


THIRD_PARTY_LOGGERS = ("transformers", "httpx", "httpcore", "urllib3", "sentence_transformers", "jieba",
                       "bitsandbytes", "accelerate", "peft", "swanlab", "faiss", "kernels", "huggingface_hub",
                       "modelscope", "torch._dynamo", "torch._inductor", "datasets", "pypdf")


def setup_logging(verbose: bool = False) -> None:
    """INFO for our own loggers (WARNING with verbose=False), and silence third-party chatter."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s" if not verbose else
                        "%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("vlft", "multi_agent"):
        logging.getLogger(name).setLevel(level)
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # Third-party warnings are noise to a user who did not ask for --verbose (bitsandbytes'
        # "Failed to load CPU gemm_4bit_forward ..." on every 4-bit load); errors still show.
        for noisy in THIRD_PARTY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.ERROR)
        # Libraries' deprecation notices (e.g. transformers' min_pixels/max_pixels spelling, which the
        # Qwen2.5-VL limits need) are for developers, not for a user running a stage.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    else:
        for noisy in THIRD_PARTY_LOGGERS:   # verbose after a quiet run in the same process: all back
            logging.getLogger(noisy).setLevel(logging.NOTSET)
