"""FeatureStore's bulk read API (scan_versions, seek_versions, estimate_versions,
sample_value_bytes, flush, identity) on a real RocksDB in tmp_path, against slow oracles over the
rows written."""

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrank.errors import InputError, NotFoundError, StoreError
from adrank.hashing import string_id_keys
from feature_service import (
    Dtype,
    EntityIdKind,
    FeatureGroup,
    FeatureSpec,
    FeatureStore,
    Shape,
    VersionChunk,
)
from feature_service.codec import ValueCodec
from feature_service.ingest import columns_from_arrow

S = 1_000_000  # microseconds per second

FEATURES = (
    FeatureSpec("rid", Dtype.INT64),  # which written row a version is
    FeatureSpec("ctr", Dtype.FLOAT32),
    FeatureSpec("tags", Dtype.INT64, Shape.LIST),
    FeatureSpec("title", Dtype.STRING),
    FeatureSpec("emb", Dtype.FLOAT32, Shape.VECTOR, dim=2),
)

Row = tuple[int | str, int, int, int]  # (entity id, event_us, created_us, rid)


def make_group(
    name: str = "ads", kind: EntityIdKind = EntityIdKind.INT, ttl_s: int | None = None
) -> FeatureGroup:
    return FeatureGroup(name, "ad", kind, FEATURES, ttl_s)


def cols(g: FeatureGroup, rids: Sequence[int]) -> dict:
    """Feature columns for rows identified by ``rids``; every value is derived from the rid."""
    r = list(rids)
    table = pa.table(
        {
            "rid": pa.array(r, pa.int64()),
            "ctr": pa.array([x / 8 for x in r], pa.float32()),
            "tags": pa.array([[x] * (x % 3) for x in r], pa.list_(pa.int64())),
            "title": pa.array([None if x % 5 == 0 else f"t{x}" for x in r], pa.string()),
            "emb": pa.FixedSizeListArray.from_arrays(
                pa.array([v for x in r for v in (x, -x)], pa.float32()), 2
            ),
        }
    )
    return columns_from_arrow(table, g, "test")


def write(store: FeatureStore, name: str, rows: Sequence[Row]) -> None:
    """One write call (one batch) of ``rows``."""
    if not rows:
        return
    ids = [r[0] for r in rows]
    ev = np.array([r[1] for r in rows], dtype=np.int64)
    cr = np.array([r[2] for r in rows], dtype=np.int64)
    store.write(name, ids, ev, cols(store.group(name), [r[3] for r in rows]), created_us=cr)


def key_of(entity: int | str) -> int:
    return int(string_id_keys([entity])[0]) if isinstance(entity, str) else entity


def expected_versions(rows: Sequence[Row]) -> list[tuple[int, int, int, int]]:
    """Slow, obvious: the stored versions ``(entity key, event, created, rid)`` in key order; a row
    with the key of an earlier one replaces it."""
    by_key: dict[tuple[int, int, int], int] = {}
    for e, ev, cr, rid in rows:
        by_key[(key_of(e), ev, cr)] = rid
    return sorted(
        ((k, ev, cr, rid) for (k, ev, cr), rid in by_key.items()),
        key=lambda v: (v[0], -v[1], -v[2]),
    )


def scanned(chunks: Iterator[VersionChunk]) -> list[tuple[int, int, int, int]]:
    out = []
    for c in chunks:
        rids = c.columns["rid"].values.tolist()
        for k, ev, cr, rid in zip(
            c.entity_keys.tolist(), c.event_us.tolist(), c.created_us.tolist(), rids, strict=True
        ):
            out.append((k, ev, cr, rid))
    return out


def check_values(chunk: VersionChunk) -> None:
    """Every feature of every version is the one derived from its rid."""
    rids = chunk.columns["rid"].values.tolist()
    assert chunk.columns["ctr"].values.tolist() == [r / 8 for r in rids]
    assert chunk.columns["emb"].values.tolist() == [[r, -r] for r in rids]
    title = chunk.columns["title"]
    assert title.valid.tolist() == [r % 5 != 0 for r in rids]
    tags = chunk.columns["tags"]
    assert tags.offsets is not None
    assert np.diff(tags.offsets).tolist() == [r % 3 for r in rids]


# Several write calls with corrections: entity 1 at t=10 is corrected (created 5 > 1), entity 2 gets
# an exact duplicate key (the later write wins), entity -3 (negative ids sort first) has one row.
INT_BATCHES: list[list[Row]] = [
    [(2, 20 * S, 0, 1), (1, 10 * S, 1, 2), (1, 30 * S, 0, 3)],
    [(1, 10 * S, 5, 4), (-3, 5 * S, 0, 5), (2, 20 * S, 0, 6)],
    [(2, 40 * S, 2, 7), (1, 10 * S, 3, 8)],
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeatureStore]:
    with FeatureStore.open(tmp_path / "s") as s:
        yield s


def test_scan_returns_every_version_in_key_order(store: FeatureStore) -> None:
    store.register_group(make_group())
    for batch in INT_BATCHES:
        write(store, "ads", batch)
    chunks = list(store.scan_versions("ads"))
    assert len(chunks) == 1
    got = scanned(iter(chunks))
    assert got == expected_versions([r for b in INT_BATCHES for r in b])
    # Spelled out: entity ascending, event descending, created descending; rid 6 replaced rid 1.
    assert [v[3] for v in got] == [5, 3, 4, 8, 2, 7, 6]
    check_values(chunks[0])
    assert list(chunks[0].columns) == [f.name for f in FEATURES]
    for arr in (chunks[0].entity_keys, chunks[0].event_us, chunks[0].created_us):
        assert arr.dtype == np.int64


def test_scan_of_string_ids_orders_by_their_keys(store: FeatureStore) -> None:
    store.register_group(make_group("users", EntityIdKind.STRING))
    rows: list[Row] = [("bob", 3 * S, 0, 1), ("alice", 1 * S, 0, 2), ("carol", 2 * S, 0, 3)]
    write(store, "users", rows[:2])
    write(store, "users", [*rows[2:], ("bob", 3 * S, 7, 4)])
    got = scanned(store.scan_versions("users"))
    assert got == expected_versions([*rows, ("bob", 3 * S, 7, 4)])
    assert sorted(k for k, *_ in got) == [k for k, *_ in got]


def test_chunks_concatenate_to_the_one_chunk_scan(store: FeatureStore) -> None:
    store.register_group(make_group())
    rows: list[Row] = [(i % 4, (i * 7 % 11) * S, i % 2, i) for i in range(20)]
    write(store, "ads", rows[:9])
    write(store, "ads", rows[9:])
    whole = list(store.scan_versions("ads"))
    small = list(store.scan_versions("ads", chunk_versions=3))
    sizes = [c.num_versions for c in small]
    total = sum(sizes)
    assert sizes == [3] * (total // 3) + ([total % 3] if total % 3 else [])
    assert scanned(iter(small)) == scanned(iter(whole)) == expected_versions(rows)
    for c in small:
        check_values(c)


def test_feature_subsets_keep_the_request_order(store: FeatureStore) -> None:
    store.register_group(make_group())
    write(store, "ads", INT_BATCHES[0])
    (chunk,) = store.scan_versions("ads", ["title", "rid"])
    assert list(chunk.columns) == ["title", "rid"]
    assert chunk.columns["title"].valid.shape == (3,)
    (bare,) = store.scan_versions("ads", [])
    assert bare.columns == {}
    assert bare.event_us.tolist() == chunk.event_us.tolist()


def test_scan_of_an_empty_group(store: FeatureStore) -> None:
    store.register_group(make_group())
    assert list(store.scan_versions("ads")) == []
    assert store.estimate_versions("ads") == 0
    assert store.sample_value_bytes("ads") == 0.0


def test_unknown_group_or_feature_fails_at_the_call(store: FeatureStore) -> None:
    store.register_group(make_group())
    with pytest.raises(NotFoundError, match="'nope'") as info:
        store.scan_versions("nope")
    assert "ads" in str(info.value)  # lists the registered groups
    with pytest.raises(NotFoundError, match="ctr_7d") as info:
        store.scan_versions("ads", ["rid", "ctr_7d"])
    assert info.value.source == "ads.ctr_7d"
    with pytest.raises(InputError, match="chunk_versions"):
        store.scan_versions("ads", chunk_versions=0)
    for call in (
        lambda: store.estimate_versions("nope"),
        lambda: store.sample_value_bytes("nope"),
        lambda: store.seek_versions("nope", np.array([1]), 0),
    ):
        with pytest.raises(NotFoundError, match="'nope'"):
            call()


def test_a_corrupt_version_is_a_store_error_naming_the_group(tmp_path: Path) -> None:
    from feature_service.keys import version_keys

    path = tmp_path / "s"
    with FeatureStore.open(path) as store:
        store.register_group(make_group())
        write(store, "ads", INT_BATCHES[0])
        # Damage a version below the store's API (through its handle: there is no public way).
        store._handles("ads").versions.put(version_keys([1], [10 * S], 1)[0], b"\x01garbage")
    with FeatureStore.open(path, read_only=True) as store:
        with pytest.raises(StoreError, match="corrupt version in group 'ads'") as info:
            list(store.scan_versions("ads"))
        assert info.value.source == str(path)
        with pytest.raises(StoreError, match="corrupt value in group 'ads'"):
            store.seek_versions("ads", np.array([1], dtype=np.int64), 10 * S)


def test_estimate_and_sample_after_flush(store: FeatureStore) -> None:
    g = store.register_group(make_group())
    rows: list[Row] = [(i, (i % 9) * S, 0, i) for i in range(300)]
    write(store, "ads", rows)
    store.flush()
    assert store.estimate_versions("ads") == 300
    # Expected sizes: the encoded values of the first n versions in key order (entity = rid here).
    encoded = ValueCodec(g).encode(
        np.array([r[1] for r in rows], dtype=np.int64),
        np.zeros(300, dtype=np.int64),
        cols(g, [r[3] for r in rows]),
    )
    sizes = [len(v) for v in encoded]
    assert store.sample_value_bytes("ads", 5) == pytest.approx(sum(sizes[:5]) / 5)
    assert store.sample_value_bytes("ads") == pytest.approx(sum(sizes[:256]) / 256)
    with pytest.raises(InputError, match="n must be"):
        store.sample_value_bytes("ads", 0)


def test_flush_of_a_read_only_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with FeatureStore.open(path) as store:
        store.register_group(make_group())
        identity = store.identity()
    assert identity is not None and len(identity) >= 16
    with FeatureStore.open(path, read_only=True) as store:
        assert store.identity() == identity  # fixed when the database is created
        with pytest.raises(InputError, match="read-only"):
            store.flush()


def test_an_abandoned_scan_releases_its_rocksdb_iterators(tmp_path: Path) -> None:
    path = tmp_path / "s"
    store = FeatureStore.open(path)
    store.register_group(make_group())
    write(store, "ads", INT_BATCHES[0])
    scan = store.scan_versions("ads", chunk_versions=1)
    first = next(scan)
    assert first.num_versions == 1
    scan.close()
    store.close()
    # A live RocksDB iterator would keep the database (and its lock) open: reopening would fail.
    with FeatureStore.open(path) as again:
        assert len(scanned(again.scan_versions("ads"))) == 3


def test_a_scan_sees_the_group_as_of_its_start_whatever_is_written_meanwhile(
    store: FeatureStore,
) -> None:
    store.register_group(make_group())
    rows: list[Row] = [(i, S, 0, i) for i in range(10)]
    write(store, "ads", rows)
    scan = store.scan_versions("ads", chunk_versions=2)
    first = next(scan)
    # Writes between chunks: one before the scan position, one after it, one overwrite.
    write(store, "ads", [(0, 2 * S, 0, 97), (8, 2 * S, 0, 98), (9, S, 0, 99)])
    assert scanned(iter([first, *scan])) == expected_versions(rows)
    # A new scan sees them.
    assert scanned(store.scan_versions("ads")) == expected_versions(
        [*rows, (0, 2 * S, 0, 97), (8, 2 * S, 0, 98), (9, S, 0, 99)]
    )


# ---------------------------------------------------------------------- seek_versions


def oracle_seek(
    rows: Sequence[Row], entity: int, t: int, ttl_us: int | None
) -> tuple[int | None, bool, bool]:
    """Slow, obvious: (rid of the matched version or None, has_past, has_entity)."""
    versions = [v for v in expected_versions(rows) if v[0] == entity]
    past = [v for v in versions if v[1] <= t]
    if not past:
        return None, False, bool(versions)
    best = max(past, key=lambda v: (v[1], v[2]))
    if ttl_us is not None and best[1] < t - ttl_us:
        return None, True, True
    return best[3], True, True


def check_seek(store: FeatureStore, rows: Sequence[Row], keys: list[int], times: list[int]) -> None:
    ttl = store.group("ads").ttl_us
    res = store.seek_versions("ads", np.array(keys, dtype=np.int64), np.array(times))
    assert res.seeks == len(set(zip(keys, times, strict=True)))
    rids = res.columns["rid"].values
    for i, (k, t) in enumerate(zip(keys, times, strict=True)):
        rid, has_past, has_entity = oracle_seek(rows, k, t, ttl)
        r = int(res.row[i])
        assert (None if r < 0 else int(rids[r])) == rid, (k, t)
        assert bool(res.has_past[i]) == has_past and bool(res.has_entity[i]) == has_entity
        if r >= 0:
            assert res.event_us[r] <= t


def test_seek_matches_classifies_and_dedupes(tmp_path: Path) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        store.register_group(make_group(ttl_s=15))
        rows = [r for b in INT_BATCHES for r in b]
        for batch in INT_BATCHES:
            write(store, "ads", batch)
        keys = [1, 1, 1, 2, 2, -3, 7, 1, 2]
        times = [10 * S, 9 * S, 40 * S, 25 * S, 19 * S, 30 * S, 50 * S, 10 * S, 99 * S]
        check_seek(store, rows, keys, times)
        res = store.seek_versions("ads", np.array(keys, dtype=np.int64), np.array(times))
        # Spelled out: the correction (rid 4) wins at t=10 and both duplicates share its row;
        # entity 1 at t=9 has only future versions, -3 at t=30 is expired, 7 does not exist.
        assert res.row[0] == res.row[7] >= 0 and res.columns["rid"].values[res.row[0]] == 4
        assert res.seeks == 8
        assert (res.row[1], res.has_past[1], res.has_entity[1]) == (-1, False, True)
        assert (res.row[5], res.has_past[5], res.has_entity[5]) == (-1, True, True)
        assert (res.row[6], res.has_past[6], res.has_entity[6]) == (-1, False, False)


def test_seek_with_features_and_no_queries(store: FeatureStore) -> None:
    store.register_group(make_group())
    write(store, "ads", INT_BATCHES[0])
    res = store.seek_versions("ads", np.array([2], dtype=np.int64), 20 * S, ["title"])
    assert list(res.columns) == ["title"] and res.row.tolist() == [0]
    empty = store.seek_versions("ads", np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert empty.seeks == 0 and empty.row.shape == (0,) and len(empty.columns) == len(FEATURES)
    with pytest.raises(InputError, match="int64"):
        store.seek_versions("ads", np.array([1.5]), 0)
    with pytest.raises(InputError, match="as_of_us"):
        store.seek_versions("ads", np.array([1, 2], dtype=np.int64), np.array([1]))


entity_ids = st.integers(-3, 3)
small_times = st.integers(0, 6).map(lambda x: x * S)
rows_st = st.lists(st.tuples(entity_ids, small_times, st.integers(0, 2)), max_size=25)


@settings(max_examples=25, deadline=None)
@given(
    batches=st.lists(rows_st, min_size=1, max_size=3),
    chunk=st.integers(1, 8),
    ttl_s=st.sampled_from([None, 2]),
    queries=st.lists(st.tuples(entity_ids, st.integers(-1, 7).map(lambda x: x * S)), max_size=20),
)
def test_scan_and_seek_agree_with_the_oracles(
    batches: list[list[tuple[int, int, int]]],
    chunk: int,
    ttl_s: int | None,
    queries: list[tuple[int, int]],
) -> None:
    with tempfile.TemporaryDirectory() as d, FeatureStore.open(Path(d) / "s") as store:
        store.register_group(make_group(ttl_s=ttl_s))
        rows: list[Row] = []
        for batch in batches:
            numbered: list[Row] = [
                (e, ev, cr, len(rows) + i) for i, (e, ev, cr) in enumerate(batch)
            ]
            write(store, "ads", numbered)
            rows.extend(numbered)
        assert scanned(store.scan_versions("ads", chunk_versions=chunk)) == expected_versions(rows)
        check_seek(store, rows, [q[0] for q in queries], [q[1] for q in queries])
