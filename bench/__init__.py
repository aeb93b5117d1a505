"""Benchmarks: every headline figure, reproducible by one command, written as JSON lines.

Run one with ``python -m bench NAME [--config bench/configs/NAME.yaml] [--smoke]``. Each module
``bench/<name>.py`` provides ``run(config: dict, smoke: bool) -> BenchResult`` and
``DEFAULT_CONFIG``. Results are appended to ``bench/results/<name>.jsonl`` (git-ignored) and
printed.
Never collected by pytest; a unit test runs each benchmark at its ``--smoke`` size.
"""

from bench.harness import BenchResult, measure_peak_rss_bytes, run_benchmark

__all__ = ["BenchResult", "measure_peak_rss_bytes", "run_benchmark"]
