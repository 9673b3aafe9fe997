"""Download a real Qwen-VL model from ModelScope or Hugging Face, and check the folder is complete.

Both hubs' ``snapshot_download`` resume partial files into ``local_dir`` and show a progress bar.
Before calling them we probe the host with a short timeout: offline, their own retries take minutes
and end in a traceback; the probe fails in seconds with one line.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from vlft.config import BaseConfig, field, require
from vlft.errors import UserError

log = logging.getLogger(__name__)

Source = Literal["modelscope", "hf"]
DEFAULT_MODEL = "Qwen/Qwen3-VL-4B-Instruct"
PROBE_TIMEOUT_S = 3.0


class HubError(UserError, RuntimeError):
    """The hub is unreachable, the download failed, or the folder is incomplete (one-line message)."""


def hub_url(source: Source) -> str:
    """Base URL the download talks to first (HF_ENDPOINT / MODELSCOPE_DOMAIN respected)."""
    if source == "hf":
        return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    domain = os.environ.get("MODELSCOPE_DOMAIN") or "www.modelscope.cn"
    return (domain if "://" in domain else f"https://{domain}").rstrip("/")


def probe(url: str, timeout: float = PROBE_TIMEOUT_S,
          hint: str = "check the network or proxy, or use --tiny for the offline model") -> None:
    """Raise HubError unless ``url`` answers an HTTP HEAD (any status) within ``timeout`` seconds.

    An HTTP answer, not just an open TCP port: transparent proxies accept every connection.
    Proxies from the environment are used, as the hubs' clients do. DNS lookups ignore socket
    timeouts, so the request runs in a thread that we stop waiting for.
    """
    import urllib.error
    import urllib.request

    def head() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url + "/", method="HEAD"), timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # the server answered (401/404/...): reachable

    host = urlparse(url).netloc or url
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(head).result(timeout=timeout + 0.5)
    except (concurrent.futures.TimeoutError, socket.timeout, TimeoutError):
        raise HubError(f"cannot reach {host} (no answer in {timeout:g} s); {hint}") from None
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        reason = getattr(reason, "strerror", None) or str(reason) or e.__class__.__name__
        raise HubError(f"cannot reach {host} ({reason}); {hint}") from None
    finally:
        pool.shutdown(wait=False)


def verify_model_dir(model_dir: str | Path) -> list[str]:
    """Names of required files that are missing or empty (empty list = complete).

    Required: config.json, the tokenizer (tokenizer_config.json + tokenizer.json or vocab.json and
    merges.txt), preprocessor_config.json, and every shard named in model.safetensors.index.json
    (or a single model.safetensors).
    """
    d = Path(model_dir)

    def ok(name: str) -> bool:
        p = d / name
        return p.is_file() and p.stat().st_size > 0

    missing = [n for n in ("config.json", "tokenizer_config.json", "preprocessor_config.json") if not ok(n)]
    if not ok("tokenizer.json") and not (ok("vocab.json") and ok("merges.txt")):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            missing.append("model.safetensors.index.json (unreadable weight_map)")
            shards = []
        missing += [s for s in shards if not ok(s)]
    elif not ok("model.safetensors"):
        missing.append("model.safetensors (or model.safetensors.index.json + shards)")
    return missing


def check_complete(model_dir: str | Path) -> Path:
    missing = verify_model_dir(model_dir)
    if missing:
        raise HubError(f"{model_dir}: incomplete model folder, missing: {', '.join(missing)} "
                       "(re-run the same download command to resume)")
    return Path(model_dir)


def download_model(model: str = DEFAULT_MODEL, target: str | Path = "./qwen3-vl-4b-instruct",
                   source: Source = "modelscope", revision: str | None = None,
                   probe_timeout: float = PROBE_TIMEOUT_S) -> Path:
    """Download ``model`` into ``target`` (resuming), then verify it; returns the folder."""
    target = Path(target)
    if source == "hf" and os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise HubError("HF_HUB_OFFLINE is set: unset it to download from Hugging Face")
    probe(hub_url(source), probe_timeout)
    target.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s into %s", model, source, target)
    try:
        if source == "hf":
            from huggingface_hub import snapshot_download
            snapshot_download(repo_id=model, revision=revision, local_dir=str(target))
        elif source == "modelscope":
            from modelscope import snapshot_download
            snapshot_download(model_id=model, revision=revision, local_dir=str(target))
        else:
            raise HubError(f"source: {source!r} is not one of modelscope, hf")
    except HubError:
        raise
    except KeyboardInterrupt:
        raise HubError(f"interrupted; re-run the same command to resume into {target}") from None
    except Exception as e:  # the hubs raise many types; the user needs one line, not a traceback
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise HubError(f"{source} download of {model} failed: {e.__class__.__name__}: {msg}") from None
    return check_complete(target)


# -- stage entry -------------------------------------------------------------------------------
@dataclasses.dataclass
class DownloadModelConfig(BaseConfig):
    """Download the base Qwen-VL model, or build the offline tiny one with --tiny."""
    model: str = field(DEFAULT_MODEL, "model id on the hub (e.g. Qwen/Qwen2.5-VL-3B-Instruct)")
    source: Source = field("modelscope", "where to download from")
    target: str = field("./qwen3-vl-4b-instruct", "folder to download into (resumes what is there)")
    revision: str | None = field(None, "branch, tag or commit on the hub")
    tiny: bool = field(False, "build the tiny random-weight model offline instead of downloading")
    family: Literal["qwen3-vl", "qwen2.5-vl"] = field("qwen3-vl", "tiny model family (qwen2.5-vl reads ../shared/assets)")
    seed: int = field(0, "seed for the tiny model's random weights")
    tiny_prior_data: str | None = field(None, "with --tiny: a training split whose captions give the tiny model a "
                                        "language prior (a short pre-training, cached in ~/.cache/vlft)")
    tiny_prior_steps: int = field(200, "with --tiny_prior_data: pre-training steps")
    probe_timeout: float = field(PROBE_TIMEOUT_S, "seconds to wait for the hub before giving up")
    verbose: bool = field(False, "more log output")

    def validate(self) -> None:
        super().validate()
        require(bool(self.target), "target", "must be a folder path")
        require(self.probe_timeout > 0, "probe_timeout", "must be positive")
        require(self.tiny_prior_steps > 0, "tiny_prior_steps", "must be positive")
        require(not self.tiny_prior_data or self.tiny, "tiny_prior_data", "only with --tiny")


def fetch_model(cfg: DownloadModelConfig) -> Path:
    """--tiny: build the tiny model; else download + verify. Raises HubError with one line."""
    if cfg.tiny:
        from vlft.models.tiny import build_tiny_model
        if not cfg.verbose:  # a one-shard, sub-second save needs no progress bar
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
        try:
            if cfg.tiny_prior_data:
                from vlft.models.tiny import build_tiny_with_prior
                return build_tiny_with_prior(cfg.target, cfg.tiny_prior_data, family=cfg.family, seed=cfg.seed,
                                             steps=cfg.tiny_prior_steps)
            return build_tiny_model(cfg.target, family=cfg.family, seed=cfg.seed)
        except (FileNotFoundError, ValueError) as e:
            raise HubError(str(e)) from None
    return download_model(cfg.model, cfg.target, cfg.source, cfg.revision, cfg.probe_timeout)
