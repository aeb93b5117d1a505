"""On-disk snapshots of scanned group versions, so a new process joins an unchanged store without
scanning it again.

Scanning a group from RocksDB costs ~0.7-1 us per version (the binding builds a Python object per
key and per value); loading the same :class:`~feature_service.pit_versions.GroupVersions` from
``.npy`` files costs the file read (~65 MB per million versions of four scalar features). Training
re-joins the same store many times (epochs, sweeps, each often a new process), so a join given a
snapshot directory writes each group it scans there and later joins load it instead.

Validity: a snapshot records the store's RocksDB identity (the ``IDENTITY`` file, unique per
database), its sequence number at the scan and the group's definition. It is used only when all
three still match: any write to the store (ingest, compaction deletes) raises the sequence number
and invalidates every snapshot of that store. A snapshot that cannot be read or does not match is
ignored (and replaced after the rescan); a failed write is logged and the join goes on: snapshots
only save time and never change results.

Layout: ``<directory>/<store identity>/<group>/`` holding ``meta.json`` (``kind``
``adrank.pit_versions``, format version, identity, sequence, group, features, record dtype) and one
``.npy`` per array (never pickle), written to a temporary directory and renamed into place.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from adrank.errors import AdrankError
from adrank.formats import atomic_dir, read_json_document, write_json_document
from feature_service.pit_versions import GroupVersions, record_dtype, store_errors
from feature_service.schema import group_from_json, group_to_json
from feature_service.store import FeatureStore
from feature_service.types import FeatureColumn

__all__ = [
    "SNAPSHOT_KIND",
    "SNAPSHOT_FORMAT_VERSION",
    "store_identity",
    "store_sequence",
    "load_snapshot",
    "save_snapshot",
]

logger = logging.getLogger(__name__)

SNAPSHOT_KIND = "adrank.pit_versions"
SNAPSHOT_FORMAT_VERSION = 1
_ARRAYS = ("entity_keys", "starts", "event_us", "created_us", "records", "table")


def store_identity(store: FeatureStore) -> str | None:
    """RocksDB's identity of the store's database (a UUID written once when it is created), or
    None when it cannot be read (then no snapshot is used)."""
    try:
        text = (Path(store.path) / "IDENTITY").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text and all(c.isalnum() or c == "-" for c in text) else None


def store_sequence(store: FeatureStore) -> int:
    """The store's RocksDB sequence number (raised by every write)."""
    with store_errors("read the store's sequence number", store.path):
        return int(store._require_open().latest_sequence_number())


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
            or int(doc["sequence"]) != store_sequence(store)
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
            sequence=int(doc["sequence"]),
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
                    "sequence": versions.sequence,
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
