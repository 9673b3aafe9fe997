"""The training data as the recipe needs it: read with the data stage's loader, every sample measured
(tokens, images included) by the training encoder, the ones that cannot train skipped and counted.

Runs before the model is loaded (it needs the processor only), so a bad data file fails in seconds,
and the run plan is sized for the longest real sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlft.train.config import TrainConfig

log = logging.getLogger(__name__)


class SftDataset:
    """Normalized samples kept after filtering, with their token lengths (images included)."""

    def __init__(self, samples: list[dict], lengths: list[int]):
        self.samples, self.lengths = samples, lengths

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


@dataclass
class DataStats:
    path: str
    n_records: int = 0
    n_loaded: int = 0
    n_kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    tokens: int = 0

    def line(self) -> str:
        s = f"{self.path}: {self.n_kept} training samples ({self.tokens} tokens)"
        if self.skipped:
            s += ", skipped " + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
        return s


@dataclass
class TrainingData:
    """The training (and optional eval) samples that can train, with what was skipped and why."""
    train: SftDataset
    eval: SftDataset | None
    stats: dict[str, Any]  # {"train": DataStats fields, "eval": ...}

    @property
    def max_len(self) -> int:
        """Longest training or eval sample (tokens, images included): what the auto batch is sized for."""
        return max(max(ds.lengths, default=0) for ds in (self.train, self.eval) if ds is not None)

    def line(self) -> str:
        s = f"data: {self.stats['train']['n_kept']} training samples"
        if self.eval is not None:
            s += f", {self.stats['eval']['n_kept']} eval samples"
        sk = self.stats["train"].get("skipped") or {}
        return s + f", longest {self.max_len} tokens" + (
            (", skipped " + ", ".join(f"{k}: {v}" for k, v in sorted(sk.items()))) if sk else "")


def load_dataset(path: str, processor, cfg: TrainConfig) -> tuple[SftDataset, DataStats]:
    """Read with the data stage's loader, then drop (and count) samples that cannot train."""
    from tqdm.auto import tqdm

    from vlft.data.dataset import load_samples
    from vlft.train.collator import SampleEncoder, SampleError

    result = load_samples(path, image_folder=cfg.image_folder, strict=cfg.strict_data)
    stats = DataStats(path=str(path), n_records=result.n_records, n_loaded=len(result.samples),
                      skipped=dict(result.skipped))
    for line in result.errors[:5]:
        log.warning(line)
    if len(result.errors) > 5:
        log.warning("... and %d more bad records", len(result.errors) - 5)
    encoder = SampleEncoder(processor, cfg.model_max_length)
    kept, lengths = [], []
    first_error: dict[str, str] = {}
    for s in tqdm(result.samples, desc="measuring samples", disable=len(result.samples) < 2000):
        try:
            lengths.append(encoder.measure(s))
            kept.append(s)
        except SampleError as e:
            stats.skipped[e.reason] = stats.skipped.get(e.reason, 0) + 1
            first_error.setdefault(e.reason, f"{path}: sample {s.get('id')}: {e}")
            result.rejects.append((e.reason, f"{path}: sample {s.get('id')}: {e}"))
    for line in first_error.values():
        log.warning("skipped: %s", line)
    rejects = result.write_rejects(Path(cfg.output_dir) / f"{Path(path).stem}.rejects.csv")
    if rejects is not None:
        log.warning("all %d skipped records are listed in %s", len(result.rejects), rejects)
    stats.n_kept, stats.tokens = len(kept), sum(lengths)
    if not kept:
        from vlft.data.dataset import DataError
        raise DataError(f"{path}: no usable training samples ({stats.line()})")
    return SftDataset(kept, lengths), stats


def load_training_data(cfg: TrainConfig, processor) -> TrainingData:
    """The training set and, with ``eval_data_path``, the held-out set, read and measured."""
    train, tstats = load_dataset(cfg.data_path, processor, cfg)
    log.debug(tstats.line())
    data = TrainingData(train=train, eval=None, stats={"train": tstats.__dict__})
    if cfg.eval_data_path:
        data.eval, estats = load_dataset(cfg.eval_data_path, processor, cfg)
        log.debug(estats.line())
        data.stats["eval"] = estats.__dict__
    return data
