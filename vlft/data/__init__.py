"""Data stages: collect image/caption pairs (collect), CSV -> JSON (convert), and the loader
training and evaluation use (dataset.load_samples)."""

from vlft.data.dataset import DataError, LoadResult, load_samples, normalize_record

__all__ = ["DataError", "LoadResult", "load_samples", "normalize_record"]
