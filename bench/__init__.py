"""Benchmarks of the shipped paths (run as modules from the repository root: ``python -m bench.NAME``;
``python bench/NAME.py`` re-runs itself that way). Measured numbers live in bench/RESULTS.md and docs/,
not in code. Experiments that ship nothing, and the code only they use, are in ``bench/lab/``."""
