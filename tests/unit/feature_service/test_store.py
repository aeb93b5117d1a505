"""FeatureStore on a real RocksDB in tmp_path: latest and as-of reads against a slow oracle, TTL,
compaction, batched request reads, schema evolution, errors, read-only mode and reopening."""

import tempfile
from collections.abc import Sequence
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
    FeatureRead,
    FeatureSpec,
    FeatureStore,
    IngestCheckpoint,
    Shape,
)
from feature_service.ingest import columns_from_arrow

S = 1_000_000  # microseconds per second

FEATURES = (
    FeatureSpec("rid", Dtype.INT64),  # which written row a read returned
    FeatureSpec("ctr", Dtype.FLOAT32),
    FeatureSpec("tags", Dtype.INT64, Shape.LIST),
    FeatureSpec("title", Dtype.STRING),
    FeatureSpec("emb", Dtype.FLOAT32, Shape.VECTOR, dim=2),
)


def group(
    name: str = "ads", ttl_s: int | None = None, kind: EntityIdKind = EntityIdKind.INT
) -> FeatureGroup:
    return FeatureGroup(name, "ad", kind, FEATURES, ttl_s)


def cols(g: FeatureGroup, rids: Sequence[int] | np.ndarray) -> dict:
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


def write(store: FeatureStore, name: str, rows: list[tuple[int, int, int, int]]) -> None:
    """rows: (entity, event_us, created_us, rid)."""
    if not rows:
        return
    ids, ev, cr, rids = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    store.write(name, ids, ev, cols(store.group(name), rids), created_us=cr)


def oracle(
    rows: list[tuple[int, int, int, int]],
    entity: int,
    as_of: int | None,
    ttl_us: int | None,
    now: int | None = None,
) -> tuple[int, int, int] | None:
    """Slow, obvious: the newest (event, created) row of ``entity`` with event <= as_of (the later
    write wins exact ties), or None; expired when older than (as_of or now) - ttl."""
    best = None
    for order, (e, ev, cr, rid) in enumerate(rows):
        if e != entity or (as_of is not None and ev > as_of):
            continue
        if best is None or (ev, cr, order) >= (best[0], best[1], best[3]):
            best = (ev, cr, rid, order)
    if best is None:
        return None
    ref = as_of if as_of is not None else now
    if ttl_us is not None and ref is not None and best[0] < ref - ttl_us:
        return None
    return best[0], best[1], best[2]


def check_frame(frame, expected: list[tuple[int, int, int] | None]) -> None:
    assert frame.found.tolist() == [e is not None for e in expected]
    assert frame.event_us.tolist() == [0 if e is None else e[0] for e in expected]
    assert frame.created_us.tolist() == [0 if e is None else e[1] for e in expected]
    rids = [None if e is None else e[2] for e in expected]
    assert frame["rid"].to_pylist() == rids
    assert frame["tags"].to_pylist() == [None if x is None else [x] * (x % 3) for x in rids]
    assert frame["title"].to_pylist() == [
        None if x is None or x % 5 == 0 else f"t{x}" for x in rids
    ]
    assert frame["emb"].to_pylist() == [None if x is None else [float(x), float(-x)] for x in rids]


@pytest.fixture
def store(tmp_path: Path):
    s = FeatureStore.open(tmp_path / "store")
    yield s
    s.close()


rows_strategy = st.lists(
    st.tuples(st.integers(-3, 5), st.integers(0, 12), st.integers(0, 2)), min_size=1, max_size=40
)


@settings(max_examples=80, deadline=None)
@given(
    raw=rows_strategy,
    ttl=st.none() | st.integers(1, 6),
    splits=st.lists(st.integers(0, 40), max_size=3),
    times=st.lists(st.integers(-1, 14), min_size=1, max_size=6),
)
def test_latest_and_as_of_match_the_oracle(raw, ttl, splits, times) -> None:
    rows = [(e, ev * S, cr * S, i) for i, (e, ev, cr) in enumerate(raw)]
    ttl_us = None if ttl is None else ttl * S
    with tempfile.TemporaryDirectory() as d, FeatureStore.open(Path(d) / "s") as store:
        store.register_group(group(ttl_s=ttl))
        # Several write calls, so the latest row is maintained across batches as well as within one.
        cuts = sorted({0, len(rows), *[c for c in splits if c < len(rows)]})
        for a, b in zip(cuts, cuts[1:], strict=False):
            write(store, "ads", rows[a:b])
        entities = list(range(-4, 7))  # includes entities never written
        check_frame(
            store.get_latest("ads", entities), [oracle(rows, e, None, None) for e in entities]
        )
        now = 10 * S
        check_frame(
            store.get_latest("ads", entities, now_us=now),
            [oracle(rows, e, None, ttl_us, now) for e in entities],
        )
        for t in times:
            check_frame(
                store.get_as_of("ads", entities, t * S),
                [oracle(rows, e, t * S, ttl_us) for e in entities],
            )
        # One read time per entity, with repeated entities in any order.
        ids = [e for e in entities for _ in times][::-1]
        per = [t * S for _ in entities for t in times][::-1]
        check_frame(
            store.get_as_of("ads", ids, np.array(per)),
            [oracle(rows, e, t, ttl_us) for e, t in zip(ids, per, strict=True)],
        )


@settings(max_examples=25, deadline=None)
@given(raw=rows_strategy, ttl=st.integers(1, 6), now=st.integers(0, 14), drop=st.booleans())
def test_compaction_never_changes_reads_at_or_after_now(raw, ttl, now, drop) -> None:
    rows = [(e, ev * S, cr * S, i) for i, (e, ev, cr) in enumerate(raw)]
    entities = list(range(-4, 7))
    with tempfile.TemporaryDirectory() as d, FeatureStore.open(Path(d) / "s") as store:
        store.register_group(group(ttl_s=ttl))
        write(store, "ads", rows)
        before = [
            store.get_as_of("ads", entities, t * S)["rid"].to_pylist() for t in range(now, 20)
        ]
        report = store.compact(now * S, drop_expired=drop)
        after = [store.get_as_of("ads", entities, t * S)["rid"].to_pylist() for t in range(now, 20)]
        assert after == before
        (gc,) = report.groups
        (stats,) = store.stats()
        assert stats.versions == gc.versions_scanned - gc.versions_deleted
        latest = store.get_latest("ads", entities)
        if not drop:
            # The newest version of every entity survives, so latest reads are unchanged.
            check_frame(latest, [oracle(rows, e, None, None) for e in entities])
        else:
            assert latest.found.sum() == stats.entities


def test_compaction_keeps_the_newest_version_and_drops_shadowed_expired_ones(
    store: FeatureStore,
) -> None:
    store.register_group(group(ttl_s=20))
    store.register_group(group("forever"))
    write(
        store, "ads", [(1, 10 * S, 0, 1), (1, 50 * S, 0, 2), (1, 100 * S, 0, 3), (2, 10 * S, 0, 4)]
    )
    write(store, "forever", [(1, 10 * S, 0, 1), (1, 50 * S, 0, 2)])
    report = store.compact(75 * S)
    by = {g.group: g for g in report.groups}
    assert (by["ads"].versions_scanned, by["ads"].versions_deleted, by["ads"].entities_dropped) == (
        4,
        2,
        0,
    )
    assert by["forever"].versions_deleted == 0
    stats = {s.group: s for s in store.stats()}
    assert (stats["ads"].entities, stats["ads"].versions) == (2, 2)
    assert store.get_latest("ads", [2])["rid"].to_pylist() == [4]  # newest kept although expired
    assert store.get_latest("ads", [2], now_us=75 * S).found.tolist() == [False]
    report = store.compact(75 * S, groups=["ads"], drop_expired=True)
    assert report.groups[0].entities_dropped == 1 and report.versions_deleted == 1
    assert store.get_latest("ads", [1, 2])["rid"].to_pylist() == [3, None]


def test_stats_count_entities_versions_and_time_range(store: FeatureStore) -> None:
    store.register_group(group())
    assert store.stats()[0].versions == 0 and store.stats()[0].oldest_event_us is None
    write(store, "ads", [(1, 5 * S, 0, 1), (1, 7 * S, 0, 2), (-2, 3 * S, 1, 3), (9, 11 * S, 0, 4)])
    (s,) = store.stats()
    assert (s.group, s.entities, s.versions, s.oldest_event_us, s.newest_event_us) == (
        "ads",
        3,
        4,
        3 * S,
        11 * S,
    )
    assert s.disk_bytes > 0


def test_created_time_breaks_event_ties_and_identical_versions_are_replaced(
    store: FeatureStore,
) -> None:
    store.register_group(group())
    write(store, "ads", [(1, 5 * S, 2 * S, 10), (1, 5 * S, 1 * S, 11)])
    assert store.get_latest("ads", [1])["rid"].to_pylist() == [10]
    assert store.get_as_of("ads", [1], 5 * S)["rid"].to_pylist() == [10]
    write(store, "ads", [(1, 5 * S, 2 * S, 12)])  # same key: a re-ingest replaces it
    assert store.get_latest("ads", [1])["rid"].to_pylist() == [12]
    assert store.get_as_of("ads", [1], 6 * S)["rid"].to_pylist() == [12]
    assert store.stats()[0].versions == 2
    write(store, "ads", [(1, 4 * S, 9 * S, 13)])  # older event: not the latest, visible as of 4 s
    assert store.get_latest("ads", [1])["rid"].to_pylist() == [12]
    assert store.get_as_of("ads", [1], 4 * S)["rid"].to_pylist() == [13]


def test_request_read_one_user_and_hundreds_of_ads(store: FeatureStore) -> None:
    users = FeatureGroup("users", "user", EntityIdKind.STRING, (FeatureSpec("age", Dtype.INT64),))
    store.register_group(users)
    store.register_group(group())
    store.write(
        "users",
        ["u1", "u2"],
        [1 * S, 1 * S],
        {
            "age": columns_from_arrow(pa.table({"age": pa.array([30, 40])}), users, "t")["age"],
        },
    )
    ad_ids = np.arange(500, dtype=np.int64) * 7 - 1000
    write(
        store, "ads", [(int(a), 2 * S, 0, i) for i, a in enumerate(ad_ids) if i % 10]
    )  # every 10th missing
    req = store.get_request(
        user_group="users",
        user_id="u2",
        candidate_group="ads",
        candidate_ids=ad_ids,
        candidate_features=["rid", "ctr"],
    )
    assert req.user["age"].to_pylist() == [40]
    assert req.user.entity_keys.tolist() == string_id_keys(["u2"]).tolist()
    assert list(req.candidates.columns) == ["rid", "ctr"]
    assert req.candidates["rid"].to_pylist() == [None if i % 10 == 0 else i for i in range(500)]
    assert req.candidates.found.sum() == 450
    table = req.candidates.to_arrow()
    assert table.num_rows == 500 and table.column_names[:4] == [
        "entity_key",
        "found",
        "event_ts",
        "created_ts",
    ]
    old = store.get_request(
        user_group="users",
        user_id="u1",
        candidate_group="ads",
        candidate_ids=ad_ids[:3],
        as_of_us=1 * S,
    )
    assert old.user.found.tolist() == [True] and not old.candidates.found.any()


def test_batched_read_validates_every_read_before_reading(store: FeatureStore) -> None:
    store.register_group(group())
    with pytest.raises(InputError) as ei:
        store.get_batch([FeatureRead("ads", ["x"]), FeatureRead("ads", [1.5])])  # type: ignore[arg-type]
    assert "2 problems" in str(ei.value)
    with pytest.raises(NotFoundError, match="no feature group 'nope'"):
        store.get_batch([FeatureRead("ads", [1]), FeatureRead("nope", [1])])


def test_unknown_group_and_feature_name_the_culprit_and_the_known_ones(store: FeatureStore) -> None:
    store.register_group(group())
    with pytest.raises(NotFoundError) as ei:
        store.get_latest("adz", [1])
    assert "'adz'" in str(ei.value) and "ads" in str(ei.value)
    with pytest.raises(NotFoundError) as ei:
        store.get_as_of("ads", [1], 0, features=["ctr", "cvr"])
    assert "cvr" in str(ei.value) and "rid, ctr, tags" in str(ei.value)


def test_wrong_input_is_an_input_error_naming_it(store: FeatureStore) -> None:
    store.register_group(group())
    with pytest.raises(InputError, match="integer entity ids"):
        store.get_latest("ads", ["a"])
    with pytest.raises(InputError, match="as_of_us"):
        store.get_as_of("ads", [1, 2], [1, 2, 3])
    c = cols(store.group("ads"), [1])
    with pytest.raises(InputError, match="event_us"):
        store.write("ads", [1], [1.5], c)  # type: ignore[list-item]
    del c["title"]
    with pytest.raises(InputError, match="title"):
        store.write("ads", [1], [1], c)
    assert store.stats()[0].versions == 0


def test_string_entity_groups_hash_ids_and_refuse_ints(store: FeatureStore) -> None:
    g = store.register_group(group("s", kind=EntityIdKind.STRING))
    store.write("s", ["a", "b"], [S, S], cols(g, [1, 2]))
    frame = store.get_latest("s", np.array(["b", "zz", "a"]))
    assert frame["rid"].to_pylist() == [2, None, 1]
    assert frame.entity_keys.tolist() == string_id_keys(["b", "zz", "a"]).tolist()
    with pytest.raises(InputError, match="string entity ids"):
        store.get_latest("s", [1])


def test_schema_evolution_survives_reopen_and_old_values_read_null(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with FeatureStore.open(path) as store:
        g = store.register_group(group(ttl_s=60))
        write(store, "ads", [(1, S, 0, 1)])
        with pytest.raises(InputError, match="fresh"):
            store.register_group(
                FeatureGroup(
                    "ads", "ad", EntityIdKind.INT, (*FEATURES, FeatureSpec("fresh", Dtype.BOOL)), 60
                )
            )
        g2 = store.register_group(
            FeatureGroup(
                "ads", "ad", EntityIdKind.INT, (*FEATURES, FeatureSpec("fresh", Dtype.BOOL)), 120
            ),
            allow_new_features=True,
        )
        assert g2.schema_version == 2 and g2.ttl_s == 120 and g.schema_version == 1
    with FeatureStore.open(path, read_only=True) as store:
        assert store.group("ads") == g2
        frame = store.get_latest("ads", [1])
        assert frame["fresh"].to_pylist() == [None] and frame["rid"].to_pylist() == [1]


def test_reopen_after_close_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "s"
    store = FeatureStore.open(path)
    store.register_group(group())
    write(store, "ads", [(1, S, 0, 7)])
    store.get_as_of("ads", [1], S)  # leaves no iterator behind
    with pytest.raises(StoreError):
        FeatureStore.open(path)  # the lock is held while open
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.get_latest("ads", [1])
    for _ in range(3):
        with FeatureStore.open(path) as again:
            assert again.get_latest("ads", [1])["rid"].to_pylist() == [7]


def test_read_only_store_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with pytest.raises(NotFoundError):
        FeatureStore.open(path, read_only=True)
    with pytest.raises(NotFoundError):
        FeatureStore.open(path, create=False)
    writer = FeatureStore.open(path)
    writer.register_group(group())
    write(writer, "ads", [(1, S, 0, 7)])
    with FeatureStore.open(path, read_only=True) as reader:  # beside the writer
        assert reader.read_only
        assert reader.get_latest("ads", [1])["rid"].to_pylist() == [7]
        with pytest.raises(InputError, match="read-only"):
            write(reader, "ads", [(2, S, 0, 8)])
        with pytest.raises(InputError, match="read-only"):
            reader.compact(0)
    writer.close()


def test_a_rocksdb_that_is_not_a_feature_store_is_refused(tmp_path: Path) -> None:
    from rocksdict import Options, Rdict

    db = Rdict(str(tmp_path / "other"), Options(raw_mode=True))
    db.put(b"k", b"v")
    db.close()
    del db
    with pytest.raises(InputError, match="not an adrank feature store"):
        FeatureStore.open(tmp_path / "other")


def test_a_corrupt_value_is_a_store_error(tmp_path: Path) -> None:
    from feature_service.keys import latest_keys

    path = str(tmp_path / "s")
    with FeatureStore.open(path) as store:
        store.register_group(group())
        write(store, "ads", [(1, S, 0, 7)])
        # Damage the latest row below the store's API (the family's table format needs the
        # store's own options, so go through its handle).
        store._handles("ads").latest.put(latest_keys([1])[0], b"\x01garbage")
    with FeatureStore.open(path) as store, pytest.raises(StoreError, match="corrupt"):
        store.get_latest("ads", [1])


def test_checkpoints_commit_with_the_rows(store: FeatureStore) -> None:
    g = store.register_group(group())
    cp = IngestCheckpoint("sha256:abc", "f.parquet", 100, batches_committed=1, rows_written=1)
    store.write("ads", [1], [S], cols(g, [1]), checkpoint=cp)
    assert store.checkpoint("ads", "sha256:abc") == cp
    assert store.checkpoint("ads", "sha256:other") is None
    assert store.checkpoints("ads") == (cp,)


def test_a_store_of_another_format_is_refused_by_name_before_rocksdb_opens_it(
    tmp_path: Path,
) -> None:
    import json

    from feature_service import keys as K
    from feature_service.store import STORE_FORMAT_VERSION

    path = str(tmp_path / "s")
    with FeatureStore.open(path) as store:
        store.register_group(group())
        write(store, "ads", [(1, S, 0, 7)])
        old = {"kind": "adrank.feature_store", "format_version": STORE_FORMAT_VERSION - 1}
        store._require_open().get_column_family("meta").put(
            K.store_marker_key(), json.dumps(old).encode()
        )
    for read_only in (True, False):
        with pytest.raises(InputError, match=f"version {STORE_FORMAT_VERSION - 1}") as info:
            FeatureStore.open(path, read_only=read_only)
        assert "re-ingest" in (info.value.hint or "")
