"""The pit_join and ingest benchmarks run at their --smoke size (so they do not rot): in-process,
DuckDB as the only peer, results checked equal, the fields reported."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from bench import ingest, pit_join
from bench.harness import BENCHMARKS, BenchResult


def test_pit_join_benchmark_smoke(tmp_path: Path) -> None:
    config = dict(pit_join.DEFAULT_CONFIG, data_dir=str(tmp_path))
    result = pit_join.run(config, smoke=True)
    assert isinstance(result, BenchResult) and result.name == "pit_join"
    assert "pit_join" in BENCHMARKS and "ingest" in BENCHMARKS
    m = result.metrics
    n = config["smoke_examples"]
    assert m["rows"] == n and m["groups"] == 3
    for system in ("adrank_cold", "adrank_cold_scan", "adrank_warm", "adrank_parquet", "duckdb"):
        assert m[f"{system}_s"] > 0 and m[f"{system}_rows_per_s"] == n / m[f"{system}_s"]
    assert m["adrank_cold_vs_duckdb_speed"] == m["duckdb_s"] / m["adrank_cold_s"]
    assert set(m["adrank_cold_split_s"]) >= {"read", "scan", "match", "gather"}
    # The same rows as DuckDB's ASOF join, value for value.
    assert m["checks"]["duckdb"] == {
        "rows_returned": n,
        "rows_dropped": 0,
        "value_mismatches": 0,
        "mismatches_by_column": {},
        "equal": True,
    }
    counts = m["adrank_counts"]
    assert set(counts) == {"user", "ad", "advertiser"}
    for c in counts.values():
        assert c["strategy"] == "snapshot"  # written by the ingest
        assert c["matched"] + c["null_key"] + c["no_entity"] + c["future_only"] + c["expired"] == n
    assert counts["ad"]["expired"] > 0 and counts["advertiser"]["expired"] == 0  # TTL vs none
    assert m["ingest_rows_per_s"] > 0 and m["duckdb_bare_s"] > 0 and m["adrank_warm_arrow_s"] > 0
    assert set(result.targets) == {
        "adrank_cold_s",
        "adrank_warm_s",
        "adrank_warm_arrow_s",
        "adrank_cold_scan_s",
    }
    assert m["ingest_scan_snapshot_s"] > 0
    assert "scan" in result.notes and "DuckDB" in result.notes
    # The data is cached by its settings: examples, raw and deduplicated snapshots, the store.
    (root,) = tmp_path.glob("pit_join-*")
    ex = pq.read_table(root / "examples.parquet")
    assert ex.num_rows == n and ex.column_names[:2] == ["row_id", "ts"]
    for g in ("user", "ad", "advertiser"):
        raw = pq.read_metadata(root / "features" / f"{g}.parquet").num_rows
        dedup = pq.read_metadata(root / "dedup" / f"{g}.parquet").num_rows
        assert raw == config["smoke_rows"] and dedup < raw  # corrections are ties
    assert pit_join.ensure_data(config, smoke=True) == root


def test_ingest_benchmark_smoke(tmp_path: Path) -> None:
    config = dict(ingest.DEFAULT_CONFIG, data_dir=str(tmp_path))
    result = ingest.run(config, smoke=True)
    assert result.name == "ingest"
    m = result.metrics
    rows = pit_join.DEFAULT_CONFIG["smoke_rows"]
    assert m["rows"] == 3 * rows and m["rows_per_s"] == m["rows"] / m["wall_s"]
    assert {g: v["rows"] for g, v in m["per_group"].items()} == {
        "user": rows,
        "ad": rows,
        "advertiser": rows,
    }
    assert not list(tmp_path.glob("bench-ingest-*"))  # its stores are temporary
