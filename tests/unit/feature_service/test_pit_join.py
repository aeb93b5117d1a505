"""Point-in-time join against a slow, obviously correct oracle (Feast's find_latest_record, as
loops), on a real RocksDB store in a temporary directory: both read paths (scan, seek), TTL
boundaries, created-time tie-breaks, null keys, string and int ids, order and columns preserved,
nothing from the future; plus the streaming iterator, the cache and input validation."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adrank.errors import InputError, NotFoundError
from feature_service import (
    Dtype,
    EntityIdKind,
    FeatureGroup,
    FeatureSpec,
    FeatureStore,
    JoinSpec,
    JoinStrategy,
    Shape,
    VersionCache,
    iter_joined_batches,
    join_to_parquet,
)
from feature_service.ingest import columns_from_arrow

S = 1_000_000  # microseconds per second

FEATURES = (
    FeatureSpec("rid", Dtype.INT64),  # which written row the join attached
    FeatureSpec("score", Dtype.FLOAT32),
    FeatureSpec("tags", Dtype.INT64, Shape.LIST),
    FeatureSpec("title", Dtype.STRING),
    FeatureSpec("emb", Dtype.FLOAT32, Shape.VECTOR, dim=2),
)

Row = tuple[object, int, int, int]  # (entity, event_us, created_us, rid)


def make_group(name: str, kind: EntityIdKind, ttl_s: int | None) -> FeatureGroup:
    return FeatureGroup(name, "thing", kind, FEATURES, ttl_s)


def feature_columns(g: FeatureGroup, rids: Sequence[int]) -> dict:
    """Every feature value is derived from the row id, so the expected output follows from it."""
    r = list(rids)
    table = pa.table(
        {
            "rid": pa.array(r, pa.int64()),
            "score": pa.array([None if x % 7 == 3 else x / 4 for x in r], pa.float32()),
            "tags": pa.array([[x] * (x % 3) for x in r], pa.list_(pa.int64())),
            "title": pa.array([None if x % 5 == 0 else f"t{x}" for x in r], pa.string()),
            "emb": pa.FixedSizeListArray.from_arrays(
                pa.array([v for x in r for v in (x, -x)], pa.float32()), 2
            ),
        }
    )
    return columns_from_arrow(table, g, "test")


def expected_features(rid: int | None) -> dict:
    if rid is None:
        return {"rid": None, "score": None, "tags": None, "title": None, "emb": None}
    return {
        "rid": rid,
        "score": None if rid % 7 == 3 else rid / 4,
        "tags": [rid] * (rid % 3),
        "title": None if rid % 5 == 0 else f"t{rid}",
        "emb": [float(rid), float(-rid)],
    }


def write_rows(store: FeatureStore, g: FeatureGroup, rows: list[Row]) -> None:
    store.register_group(g)
    if not rows:
        return
    ids = [r[0] for r in rows]
    ev = np.array([r[1] for r in rows], dtype=np.int64)
    cr = np.array([r[2] for r in rows], dtype=np.int64)
    id_arg = np.array(ids, dtype=np.int64) if g.entity_id_kind is EntityIdKind.INT else ids
    store.write(g.name, id_arg, ev, feature_columns(g, [r[3] for r in rows]), created_us=cr)


def oracle(
    rows: list[Row], entity: object, t: int | None, ttl_s: int | None
) -> tuple[str, Row | None]:
    """Feast's find_latest_record as a loop: among the entity's rows with event <= t, the newest
    event, then the newest created (then the later write: the store replaces identical keys);
    expired when its event is older than t - ttl (bounds inclusive)."""
    if entity is None or t is None:
        return "null_key", None
    mine = [(order, r) for order, r in enumerate(rows) if r[0] == entity]
    if not mine:
        return "no_entity", None
    best: tuple[int, Row] | None = None
    for order, r in mine:
        if r[1] > t:
            continue
        if best is None or (r[1], r[2], order) >= (best[1][1], best[1][2], best[0]):
            best = (order, r)
    if best is None:
        return "future_only", None
    if ttl_s is not None and best[1][1] < t - ttl_s * S:
        return "expired", None
    return "matched", best[1]


def examples_table(examples: list[tuple[object, int | None]], kind: EntityIdKind) -> pa.Table:
    ent_type = pa.int64() if kind is EntityIdKind.INT else pa.string()
    n = len(examples)
    return pa.table(
        {
            "row": pa.array(range(n), pa.int64()),
            "ent": pa.array([e for e, _t in examples], ent_type),
            "t": pa.array([t for _e, t in examples], pa.int64()),
            "label": pa.array([i % 2 for i in range(n)], pa.int8()),
        }
    )


def check_against_oracle(
    out: pa.Table,
    examples: pa.Table,
    rows: list[Row],
    ttl_s: int | None,
    prefix: str = "g",
    sep: str = "__",
) -> dict[str, int]:
    # Left join: every example row, in order, with its own columns unchanged.
    assert out.num_rows == examples.num_rows
    for name in examples.column_names:
        assert out.column(name).to_pylist() == examples.column(name).to_pylist(), name
    counts = {"matched": 0, "null_key": 0, "no_entity": 0, "future_only": 0, "expired": 0}
    got = out.to_pylist()
    for i, (entity, t) in enumerate(
        zip(examples.column("ent").to_pylist(), examples.column("t").to_pylist(), strict=True)
    ):
        reason, row = oracle(rows, entity, t, ttl_s)
        counts[reason] += 1
        want = expected_features(None if row is None else row[3])
        for f, v in want.items():
            assert got[i][f"{prefix}{sep}{f}"] == v, (i, f, entity, t, reason)
        ev = got[i].get(f"{prefix}{sep}event_ts")
        if f"{prefix}{sep}event_ts" in out.column_names:
            if row is None:
                assert ev is None
            else:
                us = int(pa.scalar(ev, pa.timestamp("us", tz="UTC")).cast(pa.int64()).as_py())
                assert us == row[1] and us <= t  # never a feature from the future
    return counts


def run_join(
    store: FeatureStore,
    examples: pa.Table,
    strategy: JoinStrategy,
    batch_rows: int,
    **kw: object,
) -> tuple[pa.Table, object]:
    batches = iter_joined_batches(
        store,
        examples,
        [JoinSpec("g", "ent")],
        timestamp_column="t",
        timestamp_unit="us",
        batch_rows=batch_rows,
        strategy=strategy,
        include_event_ts=True,
        **kw,  # type: ignore[arg-type]
    )
    got = list(batches)
    assert all(b.num_rows <= batch_rows for b in got)
    return pa.Table.from_batches(got, schema=batches.schema), batches.report


int_entities = st.integers(-3, 5)
str_entities = st.sampled_from(["a", "b", "é", "long-id-x", ""])


@st.composite
def join_cases(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from([EntityIdKind.INT, EntityIdKind.STRING]))
    ents = int_entities if kind is EntityIdKind.INT else str_entities
    rows = draw(
        st.lists(
            st.tuples(ents, st.integers(0, 12).map(lambda s: s * S), st.integers(0, 2)),
            max_size=30,
        )
    )
    # The row id is the write order.
    feature_rows = [(e, ev, cr, i) for i, (e, ev, cr) in enumerate(rows)]
    ttl_s = draw(st.one_of(st.none(), st.integers(1, 5)))
    # Example times land on, between and beyond event times; some examples sit exactly on a row's
    # TTL bound (or one microsecond past it) for that row's entity.
    ttl_us = (ttl_s or 0) * S
    times = st.one_of(st.none(), st.integers(-1, 15).map(lambda s: s * S), st.integers(-S, 15 * S))
    pairs = [st.tuples(st.one_of(st.none(), ents), times)]
    if rows:
        pairs.append(
            st.tuples(st.sampled_from(rows), st.sampled_from([0, ttl_us, ttl_us + 1])).map(
                lambda rd: (rd[0][0], rd[0][1] + rd[1])
            )
        )
    examples = draw(st.lists(st.one_of(*pairs), min_size=1, max_size=25))
    batch_rows = draw(st.integers(1, 8))
    return kind, feature_rows, examples, ttl_s, batch_rows


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=join_cases())
def test_both_paths_equal_the_oracle(case: tuple) -> None:
    kind, rows, examples, ttl_s, batch_rows = case
    with tempfile.TemporaryDirectory() as tmp, FeatureStore.open(Path(tmp) / "s") as store:
        g = make_group("g", kind, ttl_s)
        write_rows(store, g, rows)
        ex = examples_table(examples, kind)
        for strategy in (JoinStrategy.SCAN, JoinStrategy.SEEK):
            out, report = run_join(store, ex, strategy, batch_rows)
            counts = check_against_oracle(out, ex, rows, ttl_s)
            (gc,) = report.groups
            assert gc.rows == len(examples) and report.rows == len(examples)
            assert {
                "matched": gc.matched,
                "null_key": gc.null_key,
                "no_entity": gc.no_entity,
                "future_only": gc.future_only,
                "expired": gc.expired,
            } == counts
            assert gc.strategy == strategy.value


def test_tie_on_event_time_takes_the_newest_created_and_ttl_bounds_are_inclusive(
    tmp_path: Path,
) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        g = make_group("g", EntityIdKind.INT, ttl_s=10)
        # Entity 1: two rows at event 100 s (created 5 and 9: the correction wins), one at 200 s.
        # Entity 2: only a row at 500 s. Entity 3: no rows.
        rows: list[Row] = [
            (1, 100 * S, 9 * S, 1),
            (1, 100 * S, 5 * S, 2),
            (1, 200 * S, 0, 3),
            (2, 500 * S, 0, 4),
        ]
        write_rows(store, g, rows)
        times = [100 * S, 110 * S, 110 * S + 1, 199 * S, 200 * S, 499 * S, 100 * S, 7]
        ents = [1, 1, 1, 1, 1, 2, 3, None]
        ex = pa.table({"ent": pa.array(ents, pa.int64()), "t": pa.array(times, pa.int64())})
        for strategy in JoinStrategy:
            out, report = run_join(store, ex, strategy, batch_rows=3)
            # t = event: visible. t = event + ttl: still live. One microsecond later: expired.
            assert out.column("g__rid").to_pylist() == [1, 1, None, None, 3, None, None, None]
            (gc,) = report.groups
            assert (gc.matched, gc.expired, gc.future_only, gc.no_entity, gc.null_key) == (
                3,
                2,
                1,
                1,
                1,
            )


def test_timestamp_columns_of_any_unit_round_down_never_up(tmp_path: Path) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        g = make_group("g", EntityIdKind.INT, None)
        write_rows(store, g, [(1, 2, 0, 10), (1, 1, 0, 11), (1, -2, 0, 12), (1, -1, 0, 13)])
        # 1500 ns is 1.5 us: the version at 1 us qualifies, the one at 2 us does not; -1500 ns is
        # -1.5 us: the version at -2 us qualifies, the one at -1 us (later) does not.
        ts = pa.array([1500, -1500, 2000], pa.timestamp("ns", tz="UTC"))
        ex = pa.table({"ent": pa.array([1, 1, 1], pa.int64()), "t": ts})
        out = pa.Table.from_batches(
            list(iter_joined_batches(store, ex, [JoinSpec("g", "ent")], timestamp_column="t"))
        )
        assert out.column("g__rid").to_pylist() == [11, 12, 10]
        assert out.column("t").type == ts.type  # example columns keep their types
        ms = pa.table({"ent": [1], "t": pa.array([0], pa.timestamp("ms"))})
        out = pa.Table.from_batches(
            list(iter_joined_batches(store, ms, [JoinSpec("g", "ent")], timestamp_column="t"))
        )
        assert out.column("g__rid").to_pylist() == [13]
        secs = pa.table({"ent": [1], "t": pa.array([0], pa.int32())})
        out = pa.Table.from_batches(
            list(iter_joined_batches(store, secs, [JoinSpec("g", "ent")], timestamp_column="t"))
        )
        assert out.column("g__rid").to_pylist() == [13]


def two_groups(store: FeatureStore) -> None:
    users = FeatureGroup("users", "user", EntityIdKind.INT, (FeatureSpec("age", Dtype.INT64),))
    ads = FeatureGroup(
        "ads", "ad", EntityIdKind.STRING, (FeatureSpec("bid", Dtype.FLOAT64),), ttl_s=100
    )
    store.register_group(users)
    store.register_group(ads)
    age = columns_from_arrow(pa.table({"age": pa.array([30, 31, 40], pa.int64())}), users, "t")
    store.write("users", np.array([1, 1, 2]), np.array([10, 20, 10]) * S, age)
    bid = columns_from_arrow(pa.table({"bid": pa.array([0.5, 0.7])}), ads, "t")
    store.write("ads", ["x", "y"], np.array([10, 15]) * S, bid)


def test_several_groups_custom_names_and_a_group_joined_twice(tmp_path: Path) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        two_groups(store)
        ex = pa.table(
            {
                "buyer": pa.array([1, 2, 1, 3], pa.int64()),
                "seller": pa.array([2, 1, None, 1], pa.int64()),
                "ad": pa.array(["x", "y", "x", None]),
                "ts": pa.array([15, 16, 25, 200], pa.int64()),
            }
        )
        specs = [
            JoinSpec("users", "buyer", prefix="buyer"),
            JoinSpec("users", "seller", prefix="seller"),
            JoinSpec("ads", "ad"),
        ]
        batches = iter_joined_batches(store, ex, specs, timestamp_column="ts", separator=".")
        out = pa.Table.from_batches(list(batches))
        assert out.column_names == [
            "buyer",
            "seller",
            "ad",
            "ts",
            "buyer.age",
            "seller.age",
            "ads.bid",
        ]
        assert out.column("buyer.age").to_pylist() == [30, 40, 31, None]
        assert out.column("seller.age").to_pylist() == [40, 30, None, 31]
        assert out.column("ads.bid").to_pylist() == [0.5, 0.7, 0.5, None]
        by = {g.prefix: g for g in batches.report.groups}
        assert (by["buyer"].matched, by["buyer"].no_entity) == (3, 1)
        assert by["seller"].null_key == 1
        assert (by["ads"].matched, by["ads"].null_key) == (3, 1)


def test_features_subset_and_parquet_output_with_progress(tmp_path: Path) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        g = make_group("g", EntityIdKind.INT, None)
        write_rows(store, g, [(1, 0, 0, 5), (2, 0, 0, 6)])
        src = tmp_path / "ex.parquet"
        pq.write_table(
            pa.table({"ent": pa.array([2, 1, 9], pa.int64()), "t": [1, 1, 1]}),
            src,
            row_group_size=2,
        )
        seen: list[int] = []
        report = join_to_parquet(
            store,
            src,
            tmp_path / "out.parquet",
            [JoinSpec("g", "ent", features=("title", "rid"))],
            timestamp_column="t",
            progress=seen.append,
        )
        out = pq.read_table(tmp_path / "out.parquet")
        assert out.column_names == ["ent", "t", "g__title", "g__rid"]
        assert out.column("g__rid").to_pylist() == [6, 5, None]
        assert out.schema.field("g__title").type == pa.large_string()
        assert sum(seen) == 3 and report.rows == 3 and report.groups[0].no_entity == 1
        assert set(report.timings_s) >= {"read", "scan", "match", "gather", "write"}
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cache_is_reused_across_joins_and_invalidated_by_a_write(tmp_path: Path) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        g = make_group("g", EntityIdKind.INT, None)
        write_rows(store, g, [(1, 0, 0, 5)])
        ex = pa.table({"ent": pa.array([1], pa.int64()), "t": pa.array([S], pa.int64())})
        cache = VersionCache(1 << 20)
        out, report = run_join(store, ex, JoinStrategy.SCAN, 10, cache=cache)
        assert report.groups[0].versions_scanned == 1 and cache.used_bytes > 0
        out, report = run_join(store, ex, JoinStrategy.SCAN, 10, cache=cache)
        assert report.groups[0].versions_scanned == 0  # served from the cache
        assert report.groups[0].strategy == "memory"
        write_rows(store, g, [(1, S, 0, 7)])
        out, report = run_join(store, ex, JoinStrategy.SCAN, 10, cache=cache)
        assert report.groups[0].versions_scanned == 2
        assert out.column("g__rid").to_pylist() == [7]


def test_group_over_the_memory_budget_is_read_by_seeks(tmp_path: Path) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        g = make_group("g", EntityIdKind.INT, None)
        rows: list[Row] = [(i % 5, i * S, 0, i) for i in range(50)]
        write_rows(store, g, rows)
        ex = examples_table([(i % 6, i * S) for i in range(0, 60, 7)], EntityIdKind.INT)
        out, report = run_join(store, ex, JoinStrategy.SCAN, 4, memory_budget_bytes=100)
        assert report.groups[0].strategy == "seek"
        check_against_oracle(out, ex, rows, None)


def test_auto_scans_for_many_rows_and_seeks_for_few(tmp_path: Path) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        g = make_group("g", EntityIdKind.INT, None)
        write_rows(store, g, [(i, 0, 0, i) for i in range(2000)])
        store.flush()  # RocksDB's key estimate counts flushed files
        few = examples_table([(1, S)], EntityIdKind.INT)
        _out, report = run_join(store, few, JoinStrategy.AUTO, 10)
        assert report.groups[0].strategy == "seek" and report.groups[0].seeks == 1
        many = examples_table([(i % 2000, S) for i in range(1000)], EntityIdKind.INT)
        _out, report = run_join(store, many, JoinStrategy.AUTO, 100)
        assert report.groups[0].strategy == "scan" and report.groups[0].matched == 1000


def test_validation_reports_every_problem_before_any_work(tmp_path: Path) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        two_groups(store)
        ex = pa.table({"uid": pa.array([1.5]), "ts": pa.array(["x"]), "users__age": [1]})
        with pytest.raises(InputError) as err:
            iter_joined_batches(
                store,
                ex,
                [JoinSpec("users", "uid"), JoinSpec("ads", "ad_id"), JoinSpec("nope", "uid")],
                timestamp_column="ts",
            )
        text = str(err.value)
        for culprit in ("'ts'", "'uid'", "'ad_id'", "'nope'", "'users__age'"):
            assert culprit in text, culprit
        with pytest.raises(NotFoundError) as nf:
            iter_joined_batches(
                store,
                pa.table({"u": [1], "ts": [1]}),
                [JoinSpec("nope", "u")],
                timestamp_column="ts",
            )
        assert nf.value.source == "nope"
        with pytest.raises(NotFoundError) as nf:
            iter_joined_batches(
                store,
                pa.table({"u": [1], "ts": [1]}),
                [JoinSpec("users", "u", features=("height",))],
                timestamp_column="ts",
            )
        assert "height" in str(nf.value)
        with pytest.raises(NotFoundError):
            iter_joined_batches(store, tmp_path / "missing.parquet", [], timestamp_column="ts")
        (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
        with pytest.raises(InputError) as bad:
            iter_joined_batches(
                store, tmp_path / "bad.parquet", [JoinSpec("users", "u")], timestamp_column="ts"
            )
        assert bad.value.source == str(tmp_path / "bad.parquet")


def test_output_onto_the_examples_file_is_refused(tmp_path: Path) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        two_groups(store)
        src = tmp_path / "ex.parquet"
        pq.write_table(pa.table({"u": [1], "ts": [1]}), src)
        before = src.read_bytes()
        with pytest.raises(InputError, match="examples file"):
            join_to_parquet(store, src, src, [JoinSpec("users", "u")], timestamp_column="ts")
        assert src.read_bytes() == before


def test_empty_examples_empty_group_and_dictionary_ids(tmp_path: Path) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        write_rows(store, make_group("g", EntityIdKind.INT, None), [])  # registered, no versions
        write_rows(store, make_group("h", EntityIdKind.INT, None), [(4, 0, 0, 9)])
        empty = pa.table({"ent": pa.array([], pa.int64()), "t": pa.array([], pa.int64())})
        out_path = tmp_path / "out.parquet"
        report = join_to_parquet(
            store, empty, out_path, [JoinSpec("g", "ent")], timestamp_column="t"
        )
        out = pq.read_table(out_path)
        assert out.num_rows == 0 and report.rows == 0 and "g__rid" in out.column_names
        ids = pa.array([4, 5, 4], pa.int64()).dictionary_encode()
        ex = pa.table({"ent": ids, "t": pa.array([1, 1, 1], pa.int64())})
        for strategy in (JoinStrategy.SCAN, JoinStrategy.SEEK):
            batches = iter_joined_batches(
                store,
                ex,
                [JoinSpec("g", "ent"), JoinSpec("h", "ent")],
                timestamp_column="t",
                strategy=strategy,
            )
            got = pa.Table.from_batches(list(batches))
            assert got.column("g__rid").to_pylist() == [None, None, None]
            assert got.column("h__rid").to_pylist() == [9, None, 9]
            g, h = batches.report.groups
            assert g.no_entity == 3 and (h.matched, h.no_entity) == (2, 1)
