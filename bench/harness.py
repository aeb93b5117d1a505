"""Shared benchmark plumbing: the result record, peak memory, git sha, device, JSON lines."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "BENCHMARKS",
    "BenchResult",
    "concurrent_throughput",
    "measure_peak_rss_bytes",
    "percentiles_ms",
    "run_benchmark",
]

BENCHMARKS = (
    "stats",
    "plan_allocation",
    "kv_get",
    "pit_join",
    "ingest",
    "plan_vs_torchrec",
    "parity",
    "request_centric",
    "router",
    "e2e_rank",
)
"""Benchmark names; each is a module ``bench/<name>.py``."""

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True, slots=True)
class BenchResult:
    """One benchmark run.

    Attributes:
        name: Benchmark name.
        config: The effective configuration (defaults overlaid with the file).
        metrics: Headline numbers with units in their names (``ids_per_s``, ``p50_ms``,
            ``peak_rss_bytes``, ``ratio_vs_duckdb``...).
        targets: Each target with its threshold and whether it was met, e.g.
            ``{"wall_s": {"max": 60, "measured": 41.2, "met": True}}``.
        notes: Where the time goes, caveats; free text.
        git_sha / device / timestamp_utc / python: Provenance, filled in by :func:`run_benchmark`.
    """

    name: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    targets: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: str = ""
    git_sha: str = ""
    device: str = ""
    timestamp_utc: str = ""
    python: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def measure_peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes (Linux ru_maxrss is KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def percentiles_ms(samples_s: list[float]) -> dict[str, float]:
    """p50/p90/p99 (ms) of latency samples given in seconds."""
    import numpy as np

    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {f"p{q}_ms": float(np.percentile(a, q)) for q in (50, 90, 99)}


def concurrent_throughput(fn: Any, items: list[Any], threads: int) -> float:
    """Calls per second of ``fn(item)`` over ``items`` shared by ``threads`` client threads.

    Raises:
        The first exception a call raised (after every thread finished).
    """
    import threading
    import time

    chunks = [items[i::threads] for i in range(threads)]
    errors: list[BaseException] = []

    def work(chunk: list[Any]) -> None:
        try:
            for item in chunk:
                fn(item)
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(c,)) for c in chunks]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return len(items) / wall


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        sha = out.stdout.strip() or "unknown"
        return sha + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device() -> str:
    return f"cpu:{platform.processor() or platform.machine()} x{os.cpu_count()}"


def run_benchmark(
    name: str,
    config_path: str | None = None,
    smoke: bool = False,
    write: bool = True,
    overrides: dict[str, Any] | None = None,
) -> BenchResult:
    """Run benchmark ``name`` and append its result to ``bench/results/<name>.jsonl``.

    Args:
        name: One of :data:`BENCHMARKS`.
        config_path: Optional YAML overlay on the module's ``DEFAULT_CONFIG``.
        smoke: Run the tiny size that unit tests use.
        write: Append the JSON line to the results file.
        overrides: Settings applied after the file (e.g. ``{"devices": 4}`` from the CLI).
    """
    if name not in BENCHMARKS:
        raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    module = importlib.import_module(f"bench.{name}")
    config = dict(module.DEFAULT_CONFIG)
    if config_path:
        with open(config_path, encoding="utf-8") as f:
            overlay = yaml.safe_load(f) or {}
        unknown = sorted(set(overlay) - set(config))
        if unknown:
            raise SystemExit(f"{config_path}: unknown keys {unknown}; known: {sorted(config)}")
        config.update(overlay)
    if overrides:
        unknown = sorted(set(overrides) - set(config))
        if unknown:
            raise SystemExit(
                f"benchmark {name!r} has no settings {unknown}; known: {sorted(config)}"
            )
        config.update(overrides)
    result: BenchResult = module.run(config, smoke)
    result = dataclasses.replace(
        result,
        git_sha=_git_sha(),
        device=_device(),
        timestamp_utc=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        python=sys.version.split()[0],
    )
    if write:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        with open(RESULTS_DIR / f"{name}.jsonl", "a", encoding="utf-8") as f:
            f.write(result.to_json() + "\n")
    return result
