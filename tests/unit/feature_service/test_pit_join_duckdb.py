"""The point-in-time join equals DuckDB's ASOF LEFT JOIN on the same random data.

DuckDB's ASOF join picks, per example, the feature row with the greatest ``event_ts <= ts`` for the
same entity; it has no created-time tie-break and no TTL. So the data given to DuckDB is made
comparable explicitly: rows tied on (entity, event_ts) are pre-deduplicated to the newest
created_ts (the row our join must pick), and a TTL is applied after DuckDB's join as a filter on the
matched row's age (``event_ts >= ts - ttl``, inclusive, as ours). Timestamps are cast to one type
(TIMESTAMP, microseconds) on both sides, as DuckDB requires matching types.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from feature_service import FeatureStore, JoinSpec, JoinStrategy, ingest_parquet, join_to_parquet

S = 1_000_000
_TS = pa.timestamp("us", tz="UTC")


def feature_rows(rng: np.random.Generator, n: int, entities: int, ties: bool) -> pa.Table:
    ent = rng.integers(0, entities, n)
    ev = rng.integers(0, 1000, n) * S
    if not ties:  # unique (entity, event): one row per pair
        _u, first = np.unique(np.stack([ent, ev]), axis=1, return_index=True)
        ent, ev = ent[np.sort(first)], ev[np.sort(first)]
    m = ent.shape[0]
    cr = ev + rng.integers(1, 50, m) * S
    return pa.table(
        {
            "ent": pa.array(ent, pa.int64()),
            "event_ts": pa.array(ev, pa.int64()).cast(_TS),
            "created_ts": pa.array(cr, pa.int64()).cast(_TS),
            "rid": pa.array(np.arange(m), pa.int64()),
            "x": pa.array(rng.standard_normal(m).astype(np.float32)),
            "name": pa.array([f"n{i % 97}" if i % 11 else None for i in range(m)], pa.string()),
        }
    )


def examples(rng: np.random.Generator, n: int, entities: int) -> pa.Table:
    ent = rng.integers(0, entities + entities // 5, n)  # some entities have no rows
    ts = rng.integers(-50, 1100, n) * S + rng.integers(0, 3, n) * (S // 2)
    return pa.table(
        {
            "row": pa.array(np.arange(n), pa.int64()),
            "ent": pa.array(ent, pa.int64(), mask=rng.random(n) < 0.02),
            "ts": pa.array(ts, pa.int64(), mask=rng.random(n) < 0.02).cast(_TS),
            "label": pa.array(rng.integers(0, 2, n), pa.int8()),
        }
    )


def dedup_newest_created(rows: pa.Table) -> pa.Table:
    """Keep, per (entity, event_ts), the row with the newest created_ts (what our join picks)."""
    con = duckdb.connect()
    con.register("f", rows)
    return con.sql(
        "SELECT * FROM f QUALIFY row_number() OVER "
        "(PARTITION BY ent, event_ts ORDER BY created_ts DESC) = 1"
    ).to_arrow_table()


def duckdb_asof(ex: pa.Table, rows: pa.Table, ttl_s: int | None) -> pa.Table:
    con = duckdb.connect()
    con.register("e", ex)
    con.register("f", rows)
    live = "TRUE" if ttl_s is None else f"f.event_ts >= e.ts - INTERVAL {ttl_s} SECOND"
    return con.sql(
        f"""
        SELECT e.row,
               CASE WHEN {live} THEN f.rid END AS rid,
               CASE WHEN {live} THEN f.x END AS x,
               CASE WHEN {live} THEN f.name END AS name
        FROM (SELECT row, ent, CAST(ts AS TIMESTAMP) AS ts FROM e) e
        ASOF LEFT JOIN (SELECT ent, CAST(event_ts AS TIMESTAMP) AS event_ts, rid, x, name FROM f) f
          ON e.ent = f.ent AND e.ts >= f.event_ts
        ORDER BY e.row
        """
    ).to_arrow_table()


def ours(tmp_path: Path, rows: pa.Table, ex: pa.Table, ttl_s: int | None, strategy: JoinStrategy):
    snap = tmp_path / "rows.parquet"
    src = tmp_path / "ex.parquet"
    pq.write_table(rows, snap)
    pq.write_table(ex, src, row_group_size=700)
    with FeatureStore.open(tmp_path / f"store-{strategy.value}") as store:
        ingest_parquet(
            store,
            [snap],
            group="g",
            entity_column="ent",
            timestamp_column="event_ts",
            created_column="created_ts",
            ttl_s=ttl_s,
        )
        out = tmp_path / "out.parquet"
        report = join_to_parquet(
            store,
            src,
            out,
            [JoinSpec("g", "ent", features=("rid", "x", "name"))],
            timestamp_column="ts",
            batch_rows=500,
            strategy=strategy,
        )
    return pq.read_table(out), report


@pytest.mark.parametrize("strategy", [JoinStrategy.SCAN, JoinStrategy.SEEK])
def test_equals_duckdb_asof_without_ties_or_ttl(tmp_path: Path, strategy: JoinStrategy) -> None:
    rng = np.random.default_rng(7)
    rows = feature_rows(rng, 3000, 300, ties=False)
    ex = examples(rng, 4000, 300)
    got, report = ours(tmp_path, rows, ex, None, strategy)
    want = duckdb_asof(ex, rows, None)
    assert got.column("row").to_pylist() == list(range(ex.num_rows))  # order kept
    assert got.column("label").equals(ex.column("label"))
    for ours_name, theirs in (("g__rid", "rid"), ("g__x", "x"), ("g__name", "name")):
        assert got.column(ours_name).to_pylist() == want.column(theirs).to_pylist(), ours_name
    (g,) = report.groups
    assert g.matched == int(pc.sum(pc.is_valid(want.column("rid"))).as_py())
    assert g.null_key > 0 and g.no_entity > 0 and g.future_only > 0  # the data covers each case


def test_equals_duckdb_on_deduplicated_ties_with_ttl(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    rows = feature_rows(rng, 3000, 200, ties=True)
    ex = examples(rng, 3000, 200)
    ttl_s = 40
    got, report = ours(tmp_path, rows, ex, ttl_s, JoinStrategy.SCAN)
    deduped = dedup_newest_created(rows)
    assert deduped.num_rows < rows.num_rows  # the data does hold ties
    want = duckdb_asof(ex, deduped, ttl_s)
    assert got.column("g__rid").to_pylist() == want.column("rid").to_pylist()
    (g,) = report.groups
    assert g.expired > 0
