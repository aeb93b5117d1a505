"""Input validation of compute_stats: every problem found before reading data, named by file and
column, all reported in one InputError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adrank.data.schema import with_roles
from adrank.errors import EXIT_USAGE, InputError
from adrank.types import ColumnRole
from sharding_planner import StatsConfig, compute_stats
from sharding_planner.stats.inputs import classify_id_type, plan_inputs
from sharding_planner.types import IdKind


def write(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    return write(
        tmp_path / "good.parquet",
        pa.table({"ts": pa.array([1, 2], pa.int64()), "ad_id": pa.array([1, 2], pa.int64())}),
    )


def problems_of(paths: list[Path], config: StatsConfig | None = None) -> str:
    with pytest.raises(InputError) as exc:
        compute_stats(paths, config)
    assert exc.value.exit_code == EXIT_USAGE
    return str(exc.value)


def test_missing_path_is_named(tmp_path: Path, good: Path) -> None:
    msg = problems_of([good, tmp_path / "nope.parquet"])
    assert "nope.parquet" in msg and "does not exist" in msg


def test_directory_without_parquet_is_named(tmp_path: Path) -> None:
    d = tmp_path / "empty_dir"
    d.mkdir()
    (d / "notes.txt").write_text("x")
    msg = problems_of([d])
    assert "empty_dir" in msg and "no *.parquet" in msg


@pytest.mark.parametrize(
    "content",
    [b"", b"PAR1 this is not really parquet", np.random.default_rng(0).bytes(5_000)],
    ids=["empty", "garbage", "random"],
)
def test_non_parquet_file_is_named(tmp_path: Path, good: Path, content: bytes) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(content)
    msg = problems_of([good, bad])
    assert str(bad) in msg and "parquet" in msg


def test_truncated_parquet_is_named(tmp_path: Path, good: Path) -> None:
    data = (good).read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    assert str(cut) in problems_of([cut])


def test_corrupt_data_pages_fail_while_reading_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "pages.parquet", pa.table({"ad_id": pa.array(np.arange(50_000))}))
    data = bytearray(path.read_bytes())
    data[200:20_000] = np.random.default_rng(1).bytes(19_800)  # footer intact, pages garbage
    path.write_bytes(bytes(data))
    msg = problems_of([path])
    assert str(path) in msg


def test_missing_feature_column_names_file_and_column(good: Path) -> None:
    msg = problems_of([good], StatsConfig(features=("ad_id", "no_such_col")))
    assert "no_such_col" in msg and str(good) in msg


def test_mistyped_feature_column_names_file_column_and_type(tmp_path: Path) -> None:
    path = write(
        tmp_path / "f.parquet", pa.table({"price": pa.array([1.5, 2.5]), "ad_id": pa.array([1, 2])})
    )
    msg = problems_of([path], StatsConfig(features=("ad_id", "price")))
    assert f"{path}:price" in msg and "double" in msg


def test_incompatible_types_across_files_name_both_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.parquet", pa.table({"ad_id": pa.array([1, 2])}))
    b = write(tmp_path / "b.parquet", pa.table({"ad_id": pa.array(["x", "y"])}))
    c = write(tmp_path / "c.parquet", pa.table({"ad_id": pa.array([[1], [2]])}))
    msg = problems_of([a, b, c])
    assert "ad_id" in msg and str(a) in msg and str(b) in msg and str(c) in msg


def test_every_problem_is_reported_at_once(tmp_path: Path, good: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"")
    mistyped = write(tmp_path / "m.parquet", pa.table({"ad_id": pa.array([0.5])}))
    msg = problems_of([good, bad, tmp_path / "missing", mistyped], StatsConfig(features=("ad_id",)))
    assert msg.startswith("3 problems found")
    assert str(bad) in msg and "missing" in msg and f"{mistyped}:ad_id" in msg


def test_ambiguous_or_bad_timestamp_columns(tmp_path: Path) -> None:
    two = write(
        tmp_path / "two.parquet",
        pa.table({"ts": pa.array([1]), "event_time": pa.array([2]), "ad_id": pa.array([3])}),
    )
    msg = problems_of([two])
    assert "--timestamp-column" in msg and "event_time" in msg
    # Naming one resolves it; naming a missing one or a float one is an error.
    assert (
        compute_stats([two], StatsConfig(timestamp_column="event_time")).features["ad_id"].log_end_s
        == 2
    )
    assert f"{two}:when" in problems_of([two], StatsConfig(timestamp_column="when"))
    fl = write(tmp_path / "fl.parquet", pa.table({"time": pa.array([1.5]), "ad_id": pa.array([3])}))
    assert f"{fl}:time" in problems_of([fl])


def test_same_file_twice_is_refused(tmp_path: Path, good: Path) -> None:
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(good.read_bytes())
    assert "given twice" in problems_of([good, tmp_path])  # the directory holds good.parquet
    assert "same content" in problems_of([good, copy])


def test_no_sparse_columns_asks_for_features(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dense.parquet", pa.table({"x": pa.array([0.5]), "label": pa.array([1])})
    )
    assert "--features" in problems_of([path])


def test_declared_roles_decide_which_columns_are_features(tmp_path: Path) -> None:
    table = pa.table({"ad_id": pa.array([1]), "bucket": pa.array([2]), "ts": pa.array([3])})
    schema = with_roles(
        table.schema,
        {"ad_id": ColumnRole.SPARSE, "bucket": ColumnRole.DENSE, "ts": ColumnRole.TIMESTAMP},
    )
    path = write(tmp_path / "roles.parquet", table.cast(schema))
    (planned,) = plan_inputs([path], StatsConfig())
    assert [c.name for c in planned.features] == ["ad_id"] and planned.timestamp_column == "ts"


def test_directories_are_searched_recursively_skipping_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "day=1").mkdir()
    write(tmp_path / "day=1" / "part-0.parquet", pa.table({"ad_id": pa.array([1])}))
    write(tmp_path / "part-1.parquet", pa.table({"ad_id": pa.array([2])}))
    (tmp_path / ".part-2.parquet").write_bytes(b"in progress")
    planned = plan_inputs([tmp_path], StatsConfig())
    assert [p.path.name for p in planned] == ["part-0.parquet", "part-1.parquet"]


@pytest.mark.parametrize(
    ("arrow_type", "expected"),
    [
        (pa.int32(), (IdKind.INT, False)),
        (pa.uint64(), (IdKind.INT, False)),
        (pa.large_string(), (IdKind.STRING, False)),
        (pa.dictionary(pa.int32(), pa.string()), (IdKind.STRING, False)),
        (pa.list_(pa.int64()), (IdKind.INT, True)),
        (pa.large_list(pa.string()), (IdKind.STRING, True)),
        (pa.list_(pa.int16(), 3), (IdKind.INT, True)),
        (pa.float64(), None),
        (pa.list_(pa.float32()), None),
        (pa.bool_(), None),
    ],
)
def test_classify_id_type(arrow_type: pa.DataType, expected: tuple[IdKind, bool] | None) -> None:
    assert classify_id_type(arrow_type) == expected


def test_bad_settings_are_reported_together(good: Path) -> None:
    msg = problems_of([good], StatsConfig(hll_precision=3, exact_distinct_limit=0, heavy_hitters=0))
    assert "hll_precision" in msg and "exact_distinct_limit" in msg and "heavy_hitters" in msg
