"""Bulk parquet ingest into a real store in tmp_path: type mapping, rejected rows, validation
before work, schema checks across ingests, and resuming after an interrupted run without double
counting."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adrank.errors import InputError, NotFoundError
from feature_service import Dtype, FeatureStore, Shape, ingest_parquet
from feature_service.ingest import MAX_REJECTED_EXAMPLES

S = 1_000_000
TS = pa.timestamp("ms", tz="UTC")


def snapshot(n: int, seed: int = 0, start: int = 0) -> pa.Table:
    """n rows, one per entity (ids start..start+n-1), every value derived from the row."""
    rng = np.random.default_rng(seed)
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.table(
        {
            "ad_id": ids,
            "event_ts": pa.array((1_700_000_000 + ids) * 1000, TS),
            "ctr": pa.array(rng.random(n).astype(np.float32)),
            "clicks": pa.array(ids % 7, pa.int32()),
            "live": pa.array(ids % 2 == 0),
            "title": pa.array([f"ad {i}" for i in ids]).dictionary_encode(),
            "tags": pa.array([[int(i), int(i) + 1][: i % 3] for i in ids], pa.list_(pa.int32())),
            "emb": pa.FixedSizeListArray.from_arrays(
                pa.array(np.repeat(ids, 3).astype(np.float64)), 3
            ),
        }
    )


def write_parquet(path: Path, table: pa.Table, row_group_size: int | None = None) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.fixture
def store(tmp_path: Path):
    s = FeatureStore.open(tmp_path / "store")
    yield s
    s.close()


def ingest(store: FeatureStore, files, **kw):
    args = {"group": "ads", "entity_column": "ad_id", "timestamp_column": "event_ts"}
    return ingest_parquet(store, files, **{**args, **kw})


def test_ingest_infers_the_schema_and_reads_back_every_value(
    store: FeatureStore, tmp_path: Path
) -> None:
    table = snapshot(50)
    report = ingest(store, [write_parquet(tmp_path / "a.parquet", table)], ttl_s=3600)
    g = report.group
    assert (g.entity_type, g.ttl_s, g.schema_version) == ("ad", 3600, 1)
    specs = {f.name: (f.dtype, f.shape, f.dim) for f in g.features}
    assert specs == {
        "ctr": (Dtype.FLOAT32, Shape.SCALAR, 0),
        "clicks": (Dtype.INT64, Shape.SCALAR, 0),
        "live": (Dtype.BOOL, Shape.SCALAR, 0),
        "title": (Dtype.STRING, Shape.SCALAR, 0),
        "tags": (Dtype.INT64, Shape.LIST, 0),
        "emb": (Dtype.FLOAT64, Shape.VECTOR, 3),
    }
    assert (report.rows_written, report.rows_rejected) == (50, 0)
    frame = store.get_latest("ads", table["ad_id"].to_numpy())
    assert frame.found.all()
    assert frame.event_us.tolist() == [(1_700_000_000 + i) * S for i in range(50)]
    for name in specs:
        assert frame[name].to_pylist() == table[name].to_pylist(), name


def test_rerunning_an_ingest_skips_it_and_counts_nothing_twice(
    store: FeatureStore, tmp_path: Path
) -> None:
    f = write_parquet(tmp_path / "a.parquet", snapshot(1000))
    first = ingest(store, [f], batch_rows=300)
    assert first.files[0].batches_total == 4 and first.rows_written == 1000
    second = ingest(store, [f], batch_rows=300)
    (r,) = second.files
    assert (r.rows_written, r.rows_rejected, r.batches_skipped) == (0, 0, 4)
    assert (r.total_rows_written, r.total_rows_rejected) == (1000, 0)
    # The same bytes under another name are the same ingest.
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(f.read_bytes())
    assert ingest(store, [copy]).rows_written == 0
    (s,) = store.stats()
    assert (s.entities, s.versions) == (1000, 1000)
    # The first run wrote the group's scan snapshot; the re-runs wrote nothing and left it current.
    assert (first.snapshot, second.snapshot) == ("written", "current")
    assert ingest(store, [copy], scan_snapshot=False).snapshot == "skipped"


class _Crash(Exception):
    pass


@pytest.mark.parametrize(("batch_rows", "resume_batch_rows"), [(250, 250), (250, 400), (130, 70)])
def test_an_interrupted_ingest_resumes_exactly_after_its_last_committed_batch(
    store: FeatureStore, tmp_path: Path, batch_rows: int, resume_batch_rows: int
) -> None:
    table = snapshot(1000)
    nulls = table.column("ad_id").to_pylist()
    for i in (5, 420, 777):  # rejected rows, before and after the interruption
        nulls[i] = None
    table = table.set_column(0, "ad_id", pa.array(nulls, pa.int64()))
    f = write_parquet(tmp_path / "a.parquet", table, row_group_size=300)
    seen = []

    def crash_after_two(n: int) -> None:
        seen.append(n)
        if len(seen) == 2:
            raise _Crash

    with pytest.raises(_Crash):
        ingest(store, [f], batch_rows=batch_rows, progress=crash_after_two)
    (cp,) = store.checkpoints("ads")
    assert cp.batches_committed == 2 and not cp.done
    assert cp.rows_written + cp.rows_rejected == sum(seen)  # batches end at row groups too
    assert store.stats()[0].versions == cp.rows_written
    resumed = ingest(store, [f], batch_rows=resume_batch_rows)
    assert resumed.snapshot == "written"  # the interrupted run never wrote it
    (r,) = resumed.files
    assert r.rows_written + cp.rows_written == 997
    assert (r.total_rows_written, r.total_rows_rejected) == (997, 3)
    assert r.batches_skipped == 2
    (s,) = store.stats()
    assert (s.entities, s.versions) == (997, 997)
    assert store.get_latest("ads", np.arange(1000)).found.sum() == 997


def test_rejected_rows_are_counted_with_reasons_naming_file_row_and_column(
    store: FeatureStore, tmp_path: Path
) -> None:
    n = 40
    table = pa.table(
        {
            "ad_id": pa.array([None if i in (1, 2) else i for i in range(n)], pa.int64()),
            "ts": pa.array([None if i == 3 else 100 + i for i in range(n)], pa.int64()),
            "created": pa.array([None if i in (2, 4) else 0 for i in range(n)], pa.int64()),
            "hist": pa.array(
                [[1, None] if i >= 30 else [i] for i in range(n)], pa.list_(pa.int64())
            ),
            "ctr": pa.array(
                [None] * n, pa.float32()
            ),  # null features are kept as nulls, not rejected
        }
    )
    f = write_parquet(tmp_path / "r.parquet", table)
    report = ingest(store, [f], timestamp_column="ts", created_column="created", batch_rows=16)
    (r,) = report.files
    assert (r.rows_written, r.rows_rejected) == (n - 14, 14)
    assert len(r.rejected_examples) == MAX_REJECTED_EXAMPLES
    assert r.rejected_examples[0] == f"{f}: row 1: null entity id in column 'ad_id'"
    joined = "\n".join(r.rejected_examples)
    assert (
        "row 3: null time in column 'ts'" in joined
        and "row 4: null time in column 'created'" in joined
    )
    assert "row 30: null element inside a list in column 'hist'" in joined
    frame = store.get_latest("ads", [0, 1, 30])
    assert frame.found.tolist() == [True, False, False]
    assert frame.event_us.tolist() == [100 * S, 0, 0] and frame["ctr"].to_pylist() == [None] * 3


@pytest.mark.parametrize(
    ("unit", "raw", "expected_us"),
    [
        ("s", 1_700_000_000, 1_700_000_000 * S),
        ("ms", 1_700_000_000_123, 1_700_000_000_123_000),
        ("us", 5, 5),
        ("ns", 1_999, 1),
    ],
)
def test_integer_timestamps_take_a_unit(
    store: FeatureStore, tmp_path: Path, unit: str, raw: int, expected_us: int
) -> None:
    f = write_parquet(
        tmp_path / "t.parquet", pa.table({"ad_id": [1], "event_ts": [raw], "x": [1.0]})
    )
    ingest(store, [f], timestamp_unit=unit)
    assert store.get_latest("ads", [1]).event_us.tolist() == [expected_us]


def test_seconds_beyond_the_microsecond_range_are_rejected(
    store: FeatureStore, tmp_path: Path
) -> None:
    f = write_parquet(
        tmp_path / "t.parquet", pa.table({"ad_id": [1, 2], "event_ts": [2**62, 7], "x": [1.0, 2.0]})
    )
    (r,) = ingest(store, [f]).files
    assert (r.rows_written, r.rows_rejected) == (1, 1)
    assert "out of range" in r.rejected_examples[0]


def test_string_entity_ids_are_hashed(store: FeatureStore, tmp_path: Path) -> None:
    t = pa.table(
        {"user_id": ["u1", "u2", None], "event_ts": pa.array([1, 2, 3], TS), "age": [30, 40, 50]}
    )
    (r,) = ingest_parquet(
        store,
        [write_parquet(tmp_path / "u.parquet", t)],
        group="users",
        entity_column="user_id",
        timestamp_column="event_ts",
    ).files
    assert (r.rows_written, r.rows_rejected) == (2, 1)
    assert store.group("users").entity_type == "user"
    assert store.get_latest("users", ["u2", "u1", "u3"])["age"].to_pylist() == [40, 30, None]


def test_every_file_is_validated_before_anything_is_written(
    store: FeatureStore, tmp_path: Path
) -> None:
    good = write_parquet(tmp_path / "good.parquet", snapshot(10))
    bad = write_parquet(
        tmp_path / "bad.parquet",
        snapshot(10).drop_columns(["ctr"]).append_column("ctr", pa.array(["x"] * 10)),
    )
    with pytest.raises(InputError) as ei:
        ingest(store, [good, bad])
    assert (
        f"{bad}:ctr" in str(ei.value) and "float32" in str(ei.value) and "string" in str(ei.value)
    )
    assert store.groups() == ()  # not even registered


def test_later_ingests_must_match_the_stored_schema(store: FeatureStore, tmp_path: Path) -> None:
    ingest(store, [write_parquet(tmp_path / "a.parquet", snapshot(10))])
    missing = write_parquet(tmp_path / "m.parquet", snapshot(10, start=10).drop_columns(["tags"]))
    with pytest.raises(InputError) as ei:
        ingest(store, [missing])
    assert f"{missing}:tags" in str(ei.value) and "missing" in str(ei.value)
    extra = write_parquet(
        tmp_path / "e.parquet", snapshot(10, start=10).append_column("cvr", pa.array([0.5] * 10))
    )
    with pytest.raises(InputError) as ei:
        ingest(store, [extra])
    assert f"{extra}:cvr" in str(ei.value) and "--add-features" in (ei.value.hint or str(ei.value))
    assert store.stats()[0].versions == 10
    report = ingest(store, [extra], add_features=True)
    assert report.group.schema_version == 2 and report.group.feature("cvr").since_version == 2
    assert store.get_latest("ads", [0, 10])["cvr"].to_pylist() == [None, 0.5]


def test_bad_files_and_columns_are_named(store: FeatureStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        ingest(store, [tmp_path / "nope.parquet"])
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet at all")
    with pytest.raises(InputError, match="PAR1"):
        ingest(store, [junk])
    f = write_parquet(tmp_path / "a.parquet", snapshot(5))
    with pytest.raises(InputError) as ei:
        ingest(store, [f], entity_column="user_id", timestamp_column="when")
    msg = str(ei.value)
    assert f"{f}:user_id" in msg and f"{f}:when" in msg
    with pytest.raises(InputError) as ei:
        ingest(store, [f], timestamp_column="ctr")
    assert f"{f}:ctr" in str(ei.value)
    corrections = write_parquet(
        tmp_path / "c.parquet", snapshot(5).append_column("created_ts", pa.array([0] * 5))
    )
    with pytest.raises(InputError) as ei:
        ingest(store, [corrections])
    assert "created_ts" in str(ei.value) and "reserved" in str(ei.value)
    with pytest.raises(InputError, match="timestamp unit"):
        ingest(store, [f], timestamp_unit="h")
    assert store.groups() == ()


def test_vectors_with_a_null_element_are_rejected_and_null_vectors_kept(
    store: FeatureStore, tmp_path: Path
) -> None:
    emb = pa.FixedSizeListArray.from_arrays(
        pa.array([1.0, 2.0, None, 4.0, 5.0, 6.0], pa.float32()),
        2,
        mask=pa.array([False, False, True]),
    )
    t = pa.table({"ad_id": [1, 2, 3], "event_ts": [10, 10, 10], "emb": emb})
    (r,) = ingest(store, [write_parquet(tmp_path / "v.parquet", t)]).files
    assert (r.rows_written, r.rows_rejected) == (2, 1)
    assert "row 1: null element inside a list in column 'emb'" in r.rejected_examples[0]
    frame = store.get_latest("ads", [1, 2, 3])
    assert frame.found.tolist() == [True, False, True]
    assert frame["emb"].to_pylist() == [[1.0, 2.0], None, None]


def test_uint64_ids_beyond_int64_are_an_input_error_naming_the_column(
    store: FeatureStore, tmp_path: Path
) -> None:
    t = pa.table({"ad_id": pa.array([1, 2**63 + 5], pa.uint64()), "event_ts": [1, 2], "x": [1, 2]})
    f = write_parquet(tmp_path / "u.parquet", t)
    with pytest.raises(InputError) as ei:
        ingest(store, [f])
    assert ei.value.source == f"{f}:ad_id"
