"""On-disk snapshots of scanned group versions, so a join reads files instead of scanning RocksDB.

Scanning a group from RocksDB costs ~0.7-1 us per version (the binding builds a Python object per
key and per value); loading the same :class:`~feature_service.pit_versions.GroupVersions` from
``.npy`` files costs the file read (~65 MB per million versions of four scalar features).

Two places hold snapshots:

* The store's own ``scan-snapshots/`` directory, which writers keep current: bulk ingest refreshes
  the snapshot of every group it wrote (:func:`refresh_store_snapshot`, one scan after the last
  batch), so the first join after an ingest, in any process, reads it. Readers never write there.
* A directory a join is given (:class:`~feature_service.pit_join.VersionCache`): each group the
  join scans is written there, for later joins (epochs, sweeps) of a store whose writers do not
  refresh snapshots.

Validity: a snapshot records the store's RocksDB identity (the ``IDENTITY`` file, unique per
database), the group's generation at the scan (:meth:`FeatureStore.generation`, replaced by every
write to that group in the same atomic batch) and the group's definition. It is used only when all
three still match, so a write to the group (ingest, compaction deletes) invalidates it and writes
to other groups do not. A snapshot that cannot be read or does not match is ignored (the join
scans); a failed write is logged and the caller goes on: snapshots only save time and never change
results.

Layout: ``<directory>/<store identity>/<group>/`` holding ``meta.json`` (``kind``
``adrank.pit_versions``, format version, identity, generation, group, features) and one ``.npy``
per array (never pickle), written to a temporary directory and renamed into place.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from adrank.errors import AdrankError
from adrank.formats import atomic_dir, read_json_document, write_json_document
from feature_service.pit_versions import (
    GroupVersions,
    record_dtype,
    scan_group_versions,
)
from feature_service.schema import group_from_json, group_to_json
from feature_service.store import FeatureStore
from feature_service.types import FeatureColumn

__all__ = [
    "SNAPSHOT_KIND",
    "SNAPSHOT_FORMAT_VERSION",
    "DEFAULT_REFRESH_BUDGET_BYTES",
    "STORE_SNAPSHOT_DIR",
    "store_identity",
    "store_snapshot_dir",
    "load_snapshot",
    "save_snapshot",
    "refresh_store_snapshot",
    "store_snapshot_state",
]

logger = logging.getLogger(__name__)

SNAPSHOT_KIND = "adrank.pit_versions"
SNAPSHOT_FORMAT_VERSION = 2
"""2: validity by the group's generation (1 used the store-wide RocksDB sequence number)."""
DEFAULT_REFRESH_BUDGET_BYTES = 2 << 30
"""Largest group (decoded bytes) :func:`refresh_store_snapshot` snapshots by default (2 GiB)."""
STORE_SNAPSHOT_DIR = "scan-snapshots"
"""Name of the store's own snapshot directory, inside the store directory (RocksDB ignores it)."""
_ARRAYS = ("entity_keys", "starts", "event_us", "created_us", "records", "table")


def store_identity(store: FeatureStore) -> str | None:
    """RocksDB's identity of the store's database (:meth:`FeatureStore.identity`, a UUID written
    once when it is created), or None when it cannot be read (then no snapshot is used)."""
    return store.identity()


def store_snapshot_dir(store: FeatureStore) -> Path:
    """The store's own snapshot directory (kept current by its writers)."""
    return Path(store.path) / STORE_SNAPSHOT_DIR


def _snapshot_dir(directory: Path, identity: str, group: str) -> Path:
    # Group names are validated (letters, digits, _ . -, starting with a letter or _), so they are
    # safe path components.
    return directory / identity / group


def load_snapshot(
    directory: str | Path, store: FeatureStore, group: str, features: tuple[str, ...]
) -> GroupVersions | None:
    """The snapshot of ``group`` if it is valid for the store as it is now and holds ``features``.

    Args:
        directory: Snapshot directory.
        store: The open store.
        group: Group name.
        features: Features the join needs.

    Returns:
        The versions (in memory), or None: no snapshot, a stale one, or one that cannot be read
        (logged).
    """
    identity = store_identity(store)
    if identity is None:
        return None
    d = _snapshot_dir(Path(directory), identity, group)
    meta = d / "meta.json"
    if not meta.exists():
        return None
    start = time.perf_counter()
    try:
        doc = read_json_document(meta, SNAPSHOT_KIND, (SNAPSHOT_FORMAT_VERSION,))
        stored_group = group_from_json(doc["group"])
        if (
            doc["identity"] != identity
            or str(doc["generation"]) != store.generation(group)
            or stored_group != store.group(group)
            or not set(features) <= set(doc["features"])
        ):
            logger.info("snapshot of group %s in %s is stale; rescanning", group, d)
            return None
        feats = tuple(str(f) for f in doc["features"])
        specs = tuple(stored_group.feature(f) for f in feats)
        dtype, _index = record_dtype(specs)
        arrays = {name: _load(d / f"{name}.npy") for name in _ARRAYS}
        if arrays["records"].dtype != dtype:
            raise ValueError(f"records have dtype {arrays['records'].dtype}, expected {dtype}")
        var: dict[str, FeatureColumn] = {}
        for i, spec in enumerate(specs):
            if spec.fixed_width:
                continue
            var[spec.name] = FeatureColumn(
                spec,
                _load(d / f"var{i}-values.npy"),
                _load(d / f"var{i}-valid.npy"),
                _load(d / f"var{i}-offsets.npy"),
            )
        versions = GroupVersions(
            group=stored_group,
            features=feats,
            entity_keys=arrays["entity_keys"],
            starts=arrays["starts"],
            event_us=arrays["event_us"],
            created_us=arrays["created_us"],
            records=arrays["records"],
            var_columns=var,
            generation=str(doc["generation"]),
            table=arrays["table"],
        )
        _check(versions)
    except (AdrankError, OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable snapshot of group %s in %s: %s", group, d, exc)
        return None
    logger.info(
        "loaded snapshot of group %s: %d versions, %.1f MB, in %.2f s",
        group,
        versions.num_versions,
        versions.nbytes / 1e6,
        time.perf_counter() - start,
    )
    return versions


def _load(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path} is not an array file")
    return arr


def _check(v: GroupVersions) -> None:
    """Shapes consistent with each other (a truncated or mixed-up snapshot is refused)."""
    n = v.num_versions
    u = v.entity_keys.shape[0]
    ok = (
        v.starts.shape == (u + 1,)
        and v.created_us.shape == (n,)
        and v.records.shape == (n,)
        and v.table.ndim == 2
        and v.table.shape[1] == 3
        and (u == 0 or int(v.starts[-1]) == n)
        and all(
            c.valid.shape == (n,) and c.offsets is not None and c.offsets.shape == (n + 1,)
            for c in v.var_columns.values()
        )
    )
    if not ok:
        raise ValueError("snapshot arrays have inconsistent shapes")


def save_snapshot(directory: str | Path, store: FeatureStore, versions: GroupVersions) -> bool:
    """Write ``versions`` as the snapshot of its group (replacing an older one), atomically.

    Returns:
        Whether it was written; a failure is logged as a warning, never raised (snapshots only save
        time).
    """
    identity = store_identity(store)
    if identity is None:
        logger.warning("store %s has no readable RocksDB IDENTITY; not snapshotting", store.path)
        return False
    d = _snapshot_dir(Path(directory), identity, versions.group.name)
    start = time.perf_counter()
    try:
        with atomic_dir(d) as tmp:
            arrays: dict[str, Any] = {
                "entity_keys": versions.entity_keys,
                "starts": versions.starts,
                "event_us": versions.event_us,
                "created_us": versions.created_us,
                "records": versions.records,
                "table": versions.table,
            }
            for i, spec in enumerate(versions.specs()):
                if spec.fixed_width:
                    continue
                col = versions.var_columns[spec.name]
                arrays[f"var{i}-values"] = col.values
                arrays[f"var{i}-valid"] = col.valid
                arrays[f"var{i}-offsets"] = col.offsets
            for name, arr in arrays.items():
                np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
            write_json_document(
                tmp / "meta.json",
                SNAPSHOT_KIND,
                SNAPSHOT_FORMAT_VERSION,
                {
                    "identity": identity,
                    "generation": versions.generation,
                    "group": group_to_json(versions.group),
                    "features": list(versions.features),
                    "num_versions": versions.num_versions,
                },
            )
    except (AdrankError, OSError, ValueError) as exc:
        logger.warning(
            "could not write the snapshot of group %s to %s: %s", versions.group.name, d, exc
        )
        return False
    logger.info(
        "wrote snapshot of group %s (%.1f MB) to %s in %.2f s",
        versions.group.name,
        versions.nbytes / 1e6,
        d,
        time.perf_counter() - start,
    )
    return True


def store_snapshot_state(store: FeatureStore, group: str) -> str:
    """Whether the store's own snapshot of ``group`` holds the group as it is now: ``"current"``,
    ``"stale"`` (the group was written since, or its schema changed) or ``"absent"`` (none, or
    unreadable).

    Raises:
        NotFoundError: Unknown group.
        StoreError: RocksDB failed.
    """
    g = store.group(group)
    generation = store.generation(group)
    identity = store_identity(store)
    if identity is None:
        return "absent"
    meta = _snapshot_dir(store_snapshot_dir(store), identity, group) / "meta.json"
    if not meta.exists():
        return "absent"
    try:
        doc = read_json_document(meta, SNAPSHOT_KIND, (SNAPSHOT_FORMAT_VERSION,))
        current = (
            doc["generation"] == generation
            and group_from_json(doc["group"]) == g
            and set(doc["features"]) >= set(g.feature_names)
        )
    except (AdrankError, OSError, ValueError, KeyError, TypeError):
        return "absent"
    return "current" if current else "stale"


def refresh_store_snapshot(
    store: FeatureStore, group: str, *, budget_bytes: int = DEFAULT_REFRESH_BUDGET_BYTES
) -> str:
    """Make the store's own snapshot of ``group`` (:func:`store_snapshot_dir`) current: writers call
    this after they change the group.

    A current snapshot is left as it is. Otherwise every feature of the group is scanned (~1 us per
    version, the decoded size in memory for the duration) and written; a group larger than
    ``budget_bytes`` decoded is not snapshotted (logged), and its joins scan RocksDB.

    Returns:
        ``"current"``, ``"written"``, ``"skipped"`` (never written, or over budget) or ``"failed"``
        (the write failed; logged).

    Raises:
        NotFoundError: Unknown group.
        StoreError: RocksDB failed or a stored version is corrupt.
    """
    if not store.generation(group):
        return "skipped"  # never written: nothing to snapshot
    if store_snapshot_state(store, group) == "current":
        return "current"
    g = store.group(group)
    versions = scan_group_versions(store, group, g.feature_names, budget_bytes=budget_bytes)
    if versions is None:
        logger.info(
            "group %s exceeds %d bytes decoded; no scan snapshot (joins will scan RocksDB)",
            group,
            budget_bytes,
        )
        return "skipped"
    return "written" if save_snapshot(store_snapshot_dir(store), store, versions) else "failed"
