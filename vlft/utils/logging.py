"""Quiet by default, verbose on request: one setup used by every CLI."""

from __future__ import annotations

import logging
import os
import warnings


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
        for noisy in ("transformers", "httpx", "urllib3", "sentence_transformers", "jieba",
                      "bitsandbytes", "accelerate", "peft", "swanlab", "faiss"):
            logging.getLogger(noisy).setLevel(logging.WARNING if noisy != "transformers" else logging.ERROR)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
