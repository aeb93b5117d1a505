"""``adrank ingest`` end to end through main(): summary, resumability, exit codes and messages."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adrank.cli import main
from feature_service import FeatureStore

pytestmark = pytest.mark.integration


def snapshot(path: Path, n: int = 1000, **extra: pa.Array) -> Path:
    ids = np.arange(n, dtype=np.int64)
    table = pa.table(
        {
            "user_id": pa.array(ids, mask=ids % 500 == 7),  # 2 null ids per 1000 rows
            "event_ts": pa.array(ids * 1000, pa.timestamp("ms", tz="UTC")),
            "created_ts": pa.array(
                np.zeros(n, dtype=np.int64) * 1000, pa.timestamp("ms", tz="UTC")
            ),
            "ctr": pa.array(ids.astype(np.float32) / n),
            **extra,
        }
    )
    pq.write_table(table, path)
    return path


def args(store: Path, *files: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "ingest",
        "--store",
        str(store),
        "--group",
        "users",
        "--entity-column",
        "user_id",
        "--timestamp-column",
        "event_ts",
        "--created-column",
        "created_ts",
        *extra,
        *map(str, files),
    ]


def test_ingest_prints_counts_and_a_rerun_skips_committed_batches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = snapshot(tmp_path / "users.parquet")
    store = tmp_path / "store"
    assert main(args(store, f, extra=("--ttl", "30d", "--batch-rows", "300", "-q"))) == 0
    out = capsys.readouterr().out
    assert "998 rows written, 2 rejected" in out
    assert f"{f}: row 7: null entity id in column 'user_id'" in out
    assert "ttl 2592000 s" in out and "entity user" in out
    assert main(args(store, f, extra=("-q",))) == 0
    out = capsys.readouterr().out
    assert "0 rows written, 0 rejected" in out and "4 batches already committed, skipped" in out
    with FeatureStore.open(store, read_only=True) as s:
        assert s.group("users").ttl_s == 30 * 86_400  # kept when --ttl is not given again
        (stats,) = s.stats()
        assert stats.versions == 998
        assert s.get_latest("users", [1, 7])["ctr"].to_pylist() == [pytest.approx(0.001), None]


def test_missing_column_is_exit_2_naming_file_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = snapshot(tmp_path / "users.parquet")
    rc = main(
        [
            "ingest",
            "--store",
            str(tmp_path / "s"),
            "--group",
            "users",
            "--entity-column",
            "uid",
            "--timestamp-column",
            "event_ts",
            "--created-column",
            "created_ts",
            str(f),
        ]
    )
    assert rc == 2
    assert f"{f}:uid" in capsys.readouterr().err


def test_schema_mismatch_on_a_later_ingest_is_exit_2_naming_the_feature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s"
    assert main(args(store, snapshot(tmp_path / "a.parquet"), extra=("-q",))) == 0
    b = snapshot(tmp_path / "b.parquet", n=10, segment=pa.array(["x"] * 10))
    assert main(args(store, b, extra=("-q",))) == 2
    err = capsys.readouterr().err
    assert f"{b}:segment" in err and "--add-features" in err
    assert main(args(store, b, extra=("-q", "--add-features"))) == 0


def test_missing_file_and_bad_flags_are_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args(tmp_path / "s", tmp_path / "nope.parquet")) == 2
    assert "nope.parquet" in capsys.readouterr().err
    f = snapshot(tmp_path / "a.parquet")
    assert main(args(tmp_path / "s", f, extra=("--ttl", "soon"))) == 2
    assert "--ttl" in capsys.readouterr().err
    assert main(args(tmp_path / "s", f, extra=("--timestamp-unit", "h"))) == 2


def test_a_locked_store_is_a_runtime_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = snapshot(tmp_path / "a.parquet")
    with FeatureStore.open(tmp_path / "s"):
        assert main(args(tmp_path / "s", f)) == 1
    assert "lock" in capsys.readouterr().err.lower()
