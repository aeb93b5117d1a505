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
        write(store, ["c"], [95], 10)  # a write to the group invalidates its snapshots
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


OTHER = FeatureGroup("h", "thing", EntityIdKind.STRING, (FeatureSpec("y", Dtype.FLOAT64),))


def test_the_generation_changes_with_writes_to_its_group_only(tmp_path: Path) -> None:
    with FeatureStore.open(tmp_path / "s") as store:
        store.register_group(GROUP)
        store.register_group(OTHER)
        assert store.generation("g") == ""  # never written
        write(store, ["a", "a"], [10, 60], 0)
        g1 = store.generation("g")
        assert len(g1) == 32
        y = columns_from_arrow(pa.table({"y": [1.0]}), OTHER, "t")
        store.write("h", ["a"], np.array([10 * S]), y)
        assert store.generation("g") == g1  # another group's write leaves it
        write(store, ["b"], [20], 2)
        g2 = store.generation("g")
        assert g2 not in ("", g1)
        store.compact(now_us=1_000 * S)  # deletes a@10: expired (TTL 50 s) and not a's newest
        assert store.generation("g") not in (g1, g2)
        g3 = store.generation("g")
        store.compact(now_us=1_000 * S)  # nothing left to delete: unchanged
        assert store.generation("g") == g3


def test_refresh_writes_the_stores_own_snapshot_that_a_new_process_loads(
    tmp_path: Path,
) -> None:
    from feature_service.pit_snapshot import refresh_store_snapshot, store_snapshot_dir

    with FeatureStore.open(tmp_path / "s") as store:
        store.register_group(GROUP)
        store.register_group(OTHER)
        assert refresh_store_snapshot(store, "g") == "skipped"  # nothing written yet
        write(store, ["a", "a", "b", "c"], [10, 60, 90, 20], 0)
        scanned, _r = join(store, VersionCache())
        assert refresh_store_snapshot(store, "g") == "written"
        assert refresh_store_snapshot(store, "g") == "current"
        assert list(store_snapshot_dir(store).glob("*/g/meta.json"))
    with FeatureStore.open(tmp_path / "s", read_only=True) as store:
        loaded, report = join(store, VersionCache())  # no directory: the store's own snapshot
        assert report.groups[0].strategy == "snapshot" and report.groups[0].versions_scanned == 0
        assert loaded.equals(scanned)
    with FeatureStore.open(tmp_path / "s") as store:
        y = columns_from_arrow(pa.table({"y": [1.0]}), OTHER, "t")
        store.write("h", ["a"], np.array([10 * S]), y)
        _t, report = join(store, VersionCache())
        assert report.groups[0].strategy == "snapshot"  # still current: another group changed
        write(store, ["c"], [95], 10)
        after, report = join(store, VersionCache())
        assert report.groups[0].strategy == "scan"  # stale: the group changed since
        assert after.column("g__x").to_pylist() == [0.5, 1.0, 5.0, 0.0, None]
        assert refresh_store_snapshot(store, "g") == "written"
        again, report = join(store, VersionCache())
        assert report.groups[0].strategy == "snapshot" and again.equals(after)
