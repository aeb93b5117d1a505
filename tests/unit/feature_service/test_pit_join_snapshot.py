"""Snapshots of scanned groups: a later join (new cache, reopened store) loads them instead of
scanning, gets the same result, and never uses a stale or damaged one."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from adrank.errors import InputError
from feature_service import (
    Dtype,
    EntityIdKind,
    FeatureGroup,
    FeatureSpec,
    FeatureStore,
    JoinSpec,
    Shape,
    VersionCache,
    iter_joined_batches,
)
from feature_service.ingest import columns_from_arrow

S = 1_000_000

GROUP = FeatureGroup(
    "g",
    "thing",
    EntityIdKind.STRING,
    (
        FeatureSpec("x", Dtype.FLOAT64),
        FeatureSpec("tags", Dtype.INT64, Shape.LIST),
        FeatureSpec("name", Dtype.STRING),
    ),
    ttl_s=50,
)


def write(store: FeatureStore, ids: list[str], times_s: list[int], start: int) -> None:
    n = len(ids)
    rid = list(range(start, start + n))
    table = pa.table(
        {
            "x": pa.array([r / 2 for r in rid]),
            "tags": pa.array([[r] * (r % 3) for r in rid], pa.list_(pa.int64())),
            "name": pa.array([None if r % 4 == 0 else f"n{r}" for r in rid]),
        }
    )
    store.write("g", ids, np.array(times_s) * S, columns_from_arrow(table, GROUP, "t"))


def join(store: FeatureStore, cache: VersionCache) -> tuple[pa.Table, object]:
    ex = pa.table(
        {"id": ["a", "b", "c", "a", None], "t": pa.array([100, 100, 100, 30, 5], pa.int64())}
    )
    batches = iter_joined_batches(
        store, ex, [JoinSpec("g", "id")], timestamp_column="t", cache=cache
    )
    return pa.Table.from_batches(list(batches)), batches.report


def test_snapshot_is_reused_by_a_new_cache_and_invalidated_by_a_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    snaps = tmp_path / "snaps"
    with FeatureStore.open(tmp_path / "s") as store:
        store.register_group(GROUP)
        write(store, ["a", "a", "b", "c"], [10, 60, 90, 20], 0)
        first, report = join(store, VersionCache(directory=snaps))
        assert report.groups[0].versions_scanned == 4
        assert len(list(snaps.glob("*/g/meta.json"))) == 1  # <dir>/<store identity>/<group>/
    with FeatureStore.open(tmp_path / "s", read_only=True) as store:
        again, report = join(store, VersionCache(directory=snaps))
        assert report.groups[0].versions_scanned == 0  # loaded, not scanned
        assert report.groups[0].strategy == "snapshot" and again.equals(first)
        assert first.column("g__x").to_pylist() == [0.5, 1.0, None, 0.0, None]  # c expired
    with FeatureStore.open(tmp_path / "s") as store:
        write(store, ["c"], [95], 10)  # any write invalidates the store's snapshots
        after, report = join(store, VersionCache(directory=snaps))
        assert report.groups[0].versions_scanned == 5 and report.groups[0].strategy == "scan"
        assert after.column("g__x").to_pylist() == [0.5, 1.0, 5.0, 0.0, None]
        assert after.column("g__name").to_pylist() == ["n1", "n2", "n10", None, None]
        # A damaged snapshot is ignored with a warning and replaced; the result is unchanged.
        (snaps.glob("*/g/records.npy").__next__()).write_bytes(b"garbage")
        with caplog.at_level(logging.WARNING, logger="feature_service.pit_snapshot"):
            damaged, report = join(store, VersionCache(directory=snaps))
        assert "ignoring unreadable snapshot of group g" in caplog.text
        assert report.groups[0].versions_scanned == 5 and damaged.equals(after)
        again, report = join(store, VersionCache(directory=snaps))
        assert report.groups[0].versions_scanned == 0 and again.equals(after)


def test_snapshot_directory_and_cache_arguments_are_checked(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError) as err:
        VersionCache(directory=tmp_path / "file")
    assert err.value.source == str(tmp_path / "file")
    with FeatureStore.open(tmp_path / "s") as store:
        store.register_group(GROUP)
        with pytest.raises(InputError, match="either a cache"):
            iter_joined_batches(
                store,
                pa.table({"id": ["a"], "t": [1]}),
                [JoinSpec("g", "id")],
                timestamp_column="t",
                cache=VersionCache(),
                snapshot_dir=tmp_path / "snaps",
            )
