"""``python -m bench ingest``: bulk ingest throughput of :func:`feature_service.ingest_parquet`.

Data: the feature snapshots of ``bench pit_join`` (its data settings, the same cached files: per
group ``rows`` rows of entity id, event and created time and four features, 1% corrections, in
time order). Measured: each group's file ingested into a fresh store in a temporary directory under
``data_dir`` (on the same disk as the cached data; the default WAL is on, as for ``adrank
ingest``), one after another; feature rows written per second, per group and overall, median of
``repeats`` fresh stores.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import pit_join
from bench.harness import BenchResult, measure_peak_rss_bytes

__all__ = ["DEFAULT_CONFIG", "run"]

DEFAULT_CONFIG: dict[str, Any] = {
    **{k: pit_join.DEFAULT_CONFIG[k] for k in pit_join.DATA_KEYS},
    **{k: pit_join.DEFAULT_CONFIG[k] for k in ("smoke_examples", "smoke_rows", "smoke_entities")},
    "data_dir": pit_join.DEFAULT_CONFIG["data_dir"],
    "batch_rows": 65_536,
    "repeats": 1,
}


def run(config: dict[str, Any], smoke: bool) -> BenchResult:
    """Run the benchmark.

    Args:
        config: :data:`DEFAULT_CONFIG` overlaid with the YAML file.
        smoke: Tiny data (for the unit test).
    """
    from feature_service import FeatureStore, ingest_parquet

    data_config = dict(pit_join.DEFAULT_CONFIG, **config)
    root = pit_join.ensure_data(data_config, smoke)
    groups = list(data_config["groups"])
    per_group: dict[str, list[float]] = {g: [] for g in groups}
    snapshot: dict[str, list[float]] = {g: [] for g in groups}
    rows: dict[str, int] = {}
    for _ in range(1 if smoke else int(config["repeats"])):
        with (
            tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=config["data_dir"]) as tmp,
            FeatureStore.open(Path(tmp) / "store") as store,
        ):
            for g in groups:
                t0 = time.perf_counter()
                report = ingest_parquet(
                    store,
                    [root / "features" / f"{g}.parquet"],
                    group=g,
                    entity_column=f"{g}_id",
                    timestamp_column="event_ts",
                    created_column="created_ts",
                    ttl_s=data_config["groups"][g]["ttl_s"],
                    batch_rows=int(config["batch_rows"]),
                )
                # The rows' write rate, and apart from it the scan-snapshot refresh that follows.
                per_group[g].append(time.perf_counter() - t0 - report.snapshot_s)
                snapshot[g].append(report.snapshot_s)
                rows[g] = report.rows_written
    wall = {g: statistics.median(v) for g, v in per_group.items()}
    total_rows = sum(rows.values())
    total_s = sum(wall.values())
    metrics = {
        "rows": total_rows,
        "wall_s": total_s,
        "rows_per_s": total_rows / total_s,
        "per_group": {
            g: {
                "rows": rows[g],
                "wall_s": wall[g],
                "rows_per_s": rows[g] / wall[g],
                "scan_snapshot_s": statistics.median(snapshot[g]),
            }
            for g in groups
        },
        "scan_snapshot_s": sum(statistics.median(v) for v in snapshot.values()),
        "peak_rss_bytes": measure_peak_rss_bytes(),
    }
    notes = (
        f"{total_rows:,} feature rows in {len(groups)} groups, {config['batch_rows']:,} rows per "
        "atomic WriteBatch (version rows, latest rows and the ingest checkpoint), WAL on. "
        "wall_s and rows_per_s exclude the scan-snapshot refresh after each group's ingest "
        "(scan_snapshot_s: one scan of the group, written as .npy files for joins)."
    )
    if smoke:
        notes += " Smoke size."
    return BenchResult(name="ingest", config=dict(config), metrics=metrics, notes=notes)
