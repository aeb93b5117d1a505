"""``python -m bench stats``: throughput and peak memory of ``adrank stats`` (compute_stats).

Data: ``rows`` rows x 26 int64 sparse columns C1..C26 plus an int64 ``ts`` column (epoch seconds
over ``days`` days), written once to ``data_dir`` (git-ignored, keyed by the data settings) in row
groups of ``row_group_rows``, so generating it needs memory for one row group only. Column i draws
ids from a Zipf-like law (inverse CDF of the continuous power law, exponent between
``zipf_min`` and ``zipf_max``) over a vocabulary of the i-th Criteo Kaggle cardinality; ids are
scrambled by an odd multiplier so hot ids are not small integers.

Measured: the stats run (compute + write of stats.json) in a fresh process started with
'spawn', after a warm-up run on a small file there (numba kernels load from their on-disk cache,
or compile on the first ever run; the warm-up time is reported separately). The peak resident
memory is that child's (``RUSAGE_CHILDREN``). ``--smoke`` runs in-process on a tiny file.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import resource
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from adrank.constants import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_EXACT_DISTINCT_LIMIT,
    DEFAULT_HEAVY_HITTERS,
    DEFAULT_HLL_PRECISION,
)
from bench.harness import BenchResult, measure_peak_rss_bytes

__all__ = ["DEFAULT_CONFIG", "ensure_data", "run"]

_GIB = 1 << 30

# Per-feature cardinalities of the Criteo Display Advertising Challenge (Kaggle) sparse features
# C1..C26, as used by the DLRM reference code; copied from
# /work/shared/data/published_cardinalities/cardinalities.json ("criteo_kaggle").
CRITEO_KAGGLE_CARDINALITIES = [
    1460,
    583,
    10131227,
    2202608,
    305,
    24,
    12517,
    633,
    3,
    93145,
    5683,
    8351593,
    3194,
    27,
    14992,
    5461306,
    10,
    5652,
    2173,
    4,
    7046547,
    18,
    15,
    286181,
    105,
    142572,
]

DEFAULT_CONFIG: dict[str, Any] = {
    "rows": 10_000_000,
    "row_group_rows": 1_000_000,
    "cardinalities": CRITEO_KAGGLE_CARDINALITIES,
    "zipf_min": 0.9,
    "zipf_max": 1.3,
    "days": 7,
    "seed": 0,
    "data_dir": str(Path(__file__).resolve().parent / "data"),
    "batch_rows": DEFAULT_BATCH_ROWS,
    "threads": 2,
    "exact_limit": DEFAULT_EXACT_DISTINCT_LIMIT,
    "hll_precision": DEFAULT_HLL_PRECISION,
    "heavy_hitters": DEFAULT_HEAVY_HITTERS,
    "target_wall_s": 60.0,
    "target_peak_rss_bytes": 4 * _GIB,
    "smoke_rows": 20_000,
    "smoke_columns": 4,
}

_DATA_KEYS = ("rows", "row_group_rows", "cardinalities", "zipf_min", "zipf_max", "days", "seed")
_START_S = 1_767_225_600  # 2026-01-01T00:00:00Z


def _data_config(config: dict[str, Any], smoke: bool) -> dict[str, Any]:
    data = {k: config[k] for k in _DATA_KEYS}
    if smoke:
        data["rows"] = config["smoke_rows"]
        data["row_group_rows"] = max(1, config["smoke_rows"] // 4)
        data["cardinalities"] = list(config["cardinalities"])[: config["smoke_columns"]]
    return data


def ensure_data(config: dict[str, Any], smoke: bool = False) -> Path:
    """Generate the benchmark's parquet file unless a file for these settings exists.

    Returns:
        Its path (``<data_dir>/stats-<key>.parquet``).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = _data_config(config, smoke)
    key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    out = Path(config["data_dir"]) / f"stats-{key}.parquet"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cards = [int(c) for c in data["cardinalities"]]
    rng = np.random.default_rng(data["seed"])
    exponents = rng.permutation(np.linspace(data["zipf_min"], data["zipf_max"], len(cards)))
    names = [f"C{i + 1}" for i in range(len(cards))]
    schema = pa.schema([("ts", pa.int64())] + [(n, pa.int64()) for n in names])
    rows, group = int(data["rows"]), int(data["row_group_rows"])
    span_s = int(data["days"]) * 86_400
    fd, tmp = tempfile.mkstemp(prefix=".stats-", suffix=".parquet.tmp", dir=out.parent)
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, rows, group):
                n = min(group, rows - start)
                # Rows are in time order, as logs usually are.
                ts = _START_S + (np.arange(start, start + n, dtype=np.int64) * span_s) // rows
                cols = [pa.array(ts)]
                for card, s in zip(cards, exponents, strict=True):
                    cols.append(pa.array(_zipf_ids(rng, n, card, float(s))))
                writer.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=group)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _zipf_ids(rng: Any, n: int, vocab: int, s: float) -> Any:
    """``n`` ids with P(rank r) ~ r**-s over ``vocab`` ranks (continuous inverse CDF), scrambled."""
    import numpy as np

    u = rng.random(n)
    if abs(s - 1.0) < 1e-9:
        r = np.exp(u * np.log(vocab + 1.0))
    else:
        r = (((vocab + 1.0) ** (1.0 - s) - 1.0) * u + 1.0) ** (1.0 / (1.0 - s))
    rank = np.clip(np.floor(r).astype(np.int64) - 1, 0, vocab - 1)
    # An odd multiplier is a bijection on int64: distinct ranks stay distinct ids.
    return rank * np.int64(0x9E3779B1) + np.int64(12345)


def _stats_run(
    path: str, out: str, knobs: dict[str, Any], warmup_path: str | None
) -> dict[str, Any]:
    """Warm up, then compute and write stats; return the figures (runs in the measured process)."""
    from sharding_planner import StatsConfig, compute_stats, write_stats

    config = StatsConfig(
        exact_distinct_limit=knobs["exact_limit"],
        hll_precision=knobs["hll_precision"],
        heavy_hitters=knobs["heavy_hitters"],
        batch_rows=knobs["batch_rows"],
        threads=knobs["threads"],
    )
    warmup_s = 0.0
    if warmup_path is not None:
        t0 = time.perf_counter()
        compute_stats([warmup_path], config)
        warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = compute_stats([path], config)
    t1 = time.perf_counter()
    write_stats(report, out)
    t2 = time.perf_counter()
    timings = report.timings
    assert timings is not None
    return {
        "warmup_s": warmup_s,
        "compute_wall_s": t1 - t0,
        "write_s": t2 - t1,
        "wall_s": t2 - t0,
        "read_s": timings.read_s,
        "sketch_thread_s": timings.compute_s,
        "summarize_s": timings.summarize_s,
        "total_ids": sum(f.total_ids for f in report.features.values()),
        "rows": sum(i.rows for i in report.inputs),
        "features": len(report.features),
        "sampled_features": sum(not f.distinct_exact for f in report.features.values()),
        "stats_file_bytes": os.path.getsize(out),
        "distinct": {n: f.distinct for n, f in report.features.items()},
    }


def _child(conn: Connection, *args: Any) -> None:
    try:
        result = _stats_run(*args)
        result["peak_rss_self_bytes"] = measure_peak_rss_bytes()
        conn.send(("ok", result))
    except BaseException as exc:  # reported to the parent
        conn.send(("error", repr(exc)))
    finally:
        conn.close()


def _run_isolated(*args: Any) -> tuple[dict[str, Any], int]:
    """Run :func:`_stats_run` in a spawned child; return its figures and its peak RSS (bytes)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, *args))
    proc.start()
    child.close()
    status, payload = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"stats benchmark child failed: {payload}")
    peak = int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024
    return payload, max(peak, int(payload["peak_rss_self_bytes"]))


def run(config: dict[str, Any], smoke: bool) -> BenchResult:
    """Run the benchmark.

    Args:
        config: :data:`DEFAULT_CONFIG` overlaid with the YAML file.
        smoke: Tiny data, in-process (for the unit test).
    """
    t0 = time.perf_counter()
    path = ensure_data(config, smoke=smoke)
    gen_s = time.perf_counter() - t0
    knobs = {
        k: config[k]
        for k in ("exact_limit", "hll_precision", "heavy_hitters", "batch_rows", "threads")
    }
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        out = str(Path(tmp) / "stats.json")
        if smoke:
            figures = _stats_run(str(path), out, knobs, None)
            peak = measure_peak_rss_bytes()
        else:
            warmup = ensure_data(config, smoke=True)
            figures, peak = _run_isolated(str(path), out, knobs, str(warmup))
    wall = figures["wall_s"]
    metrics = {
        "wall_s": wall,
        "compute_wall_s": figures["compute_wall_s"],
        "write_s": figures["write_s"],
        "warmup_s": figures["warmup_s"],
        "read_s": figures["read_s"],
        "sketch_thread_s": figures["sketch_thread_s"],
        "summarize_s": figures["summarize_s"],
        "ids_per_s": figures["total_ids"] / wall,
        "rows_per_s": figures["rows"] / wall,
        "total_ids": figures["total_ids"],
        "rows": figures["rows"],
        "features": figures["features"],
        "sampled_features": figures["sampled_features"],
        "stats_file_bytes": figures["stats_file_bytes"],
        "peak_rss_bytes": peak,
        "data_file_bytes": path.stat().st_size,
        "data_generation_s": gen_s,
    }
    targets = {
        "wall_s": {
            "max": config["target_wall_s"],
            "measured": wall,
            "met": wall <= config["target_wall_s"],
        },
        "peak_rss_bytes": {
            "max": config["target_peak_rss_bytes"],
            "measured": peak,
            "met": peak <= config["target_peak_rss_bytes"],
        },
    }
    notes = (
        f"{figures['features']} int64 features, {figures['sampled_features']} beyond the exact "
        f"limit (sampled). Time split: parquet decode {figures['read_s']:.1f} s on the reader "
        "thread, "
        f"sketch updates {figures['sketch_thread_s']:.1f} thread-s over {config['threads']} worker "
        f"threads, summaries {figures['summarize_s']:.1f} s, writing stats.json "
        f"{figures['write_s']:.1f} s. wall_s excludes the warm-up (numba cache load or first "
        f"compile: {figures['warmup_s']:.1f} s) and data generation."
    )
    if smoke:
        notes += " Smoke size: in-process, peak RSS is the whole test process's."
    return BenchResult(
        name="stats", config=dict(config), metrics=metrics, targets=targets, notes=notes
    )
