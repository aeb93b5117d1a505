"""RocksDB key layouts of the feature store: a leading format-version byte, then fixed-width fields.

Keys are built from numpy arrays in one vectorised pass, never from protobuf or pickle bytes
(neither is deterministic). All integers are big-endian so that RocksDB's bytewise order is
numeric order.

Version rows (column family ``versions:<group>``), 25 bytes::

    [ver u8][entity u64 BE][~event u64 BE][~created u64 BE]

* ``entity`` is the int64 id key with its sign bit flipped, so the unsigned byte order equals the
  signed numeric order (``-1 < 0 < 1``).
* ``~event`` is the bitwise NOT of the sign-flipped event time (microseconds), so for one entity the
  newest event comes first; ``~created`` likewise puts the newest correction first among versions
  with the same event time.

Hence "as of t" is one seek to ``[ver][entity][~t]`` (17 bytes): the first key at or after it with
the same 9-byte entity prefix is the newest version with ``event <= t``, ties broken by the latest
``created``. The ``latest:<group>`` column family holds one row per entity under the 9-byte key
``[ver][entity]`` with a copy of the entity's newest version, so "latest" reads are one multi_get.

Meta rows (column family ``meta``): ``[ver][tag u8][utf-8 text...]``, see :func:`group_def_key`,
:func:`checkpoint_key` and :func:`group_generation_key`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

__all__ = [
    "KEY_FORMAT_VERSION",
    "ENTITY_PREFIX_BYTES",
    "SEEK_KEY_BYTES",
    "VERSION_KEY_BYTES",
    "latest_keys",
    "version_keys",
    "seek_keys",
    "decode_version_keys",
    "decode_latest_keys",
    "entity_prefix",
    "split_fixed",
    "group_def_key",
    "group_def_prefix",
    "checkpoint_key",
    "checkpoint_prefix",
    "group_generation_key",
    "store_marker_key",
]

KEY_FORMAT_VERSION = 1
"""First byte of every key this module builds; a reader refuses keys of another version."""

ENTITY_PREFIX_BYTES = 9
"""Bytes of ``[ver][entity]``: the whole latest-row key, and the prefix of an entity's version
rows."""
SEEK_KEY_BYTES = 17
"""Bytes of ``[ver][entity][~event]``, the as-of seek target."""
VERSION_KEY_BYTES = 25
"""Bytes of a version-row key."""

_SIGN = np.uint64(1 << 63)
# NOT(x ^ SIGN) == x ^ (~SIGN): one xor both flips the sign bit and inverts the order.
_NOT_SIGN = np.uint64((1 << 63) - 1)

_VERSION_DTYPE = np.dtype([("ver", "u1"), ("entity", ">u8"), ("event", ">u8"), ("created", ">u8")])
_SEEK_DTYPE = np.dtype([("ver", "u1"), ("entity", ">u8"), ("event", ">u8")])
_LATEST_DTYPE = np.dtype([("ver", "u1"), ("entity", ">u8")])

_TAG_STORE = 0x00
_TAG_GROUP = 0x01
_TAG_CHECKPOINT = 0x02
_TAG_GENERATION = 0x03


def _as_i64(a: np.ndarray | Sequence[int] | int, n: int | None = None) -> np.ndarray:
    arr = np.asarray(a, dtype=np.int64)
    if arr.ndim == 0 and n is not None:
        arr = np.full(n, arr, dtype=np.int64)
    return np.ascontiguousarray(arr)


def split_fixed(buf: bytes | np.ndarray, width: int) -> list[bytes]:
    """Cut a buffer of n equal-width records into n ``bytes`` objects.

    numpy's void dtype turns each record into a full-width ``bytes`` (unlike the ``S`` dtype, which
    strips trailing zero bytes) at ~70 ns per record.
    """
    arr = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, bytes) else buf.view(np.uint8)
    return cast("list[bytes]", arr.reshape(-1).view(np.dtype((np.void, width))).tolist())


def latest_keys(id_keys: np.ndarray | Sequence[int]) -> list[bytes]:
    """Latest-row keys ``[ver][entity]`` for int64 id keys, in input order."""
    ids = _as_i64(id_keys)
    rec = np.empty(ids.shape[0], dtype=_LATEST_DTYPE)
    rec["ver"] = KEY_FORMAT_VERSION
    rec["entity"] = ids.view(np.uint64) ^ _SIGN
    return split_fixed(rec.view(np.uint8), _LATEST_DTYPE.itemsize)


def version_keys(
    id_keys: np.ndarray | Sequence[int],
    event_us: np.ndarray | Sequence[int],
    created_us: np.ndarray | Sequence[int] | int,
) -> list[bytes]:
    """Version-row keys for n rows.

    Args:
        id_keys: int64 entity id keys.
        event_us: int64 event times (microseconds).
        created_us: int64 created times (microseconds), or one value for all rows.

    Returns:
        n keys of :data:`VERSION_KEY_BYTES` bytes.
    """
    ids = _as_i64(id_keys)
    n = ids.shape[0]
    rec = np.empty(n, dtype=_VERSION_DTYPE)
    rec["ver"] = KEY_FORMAT_VERSION
    rec["entity"] = ids.view(np.uint64) ^ _SIGN
    rec["event"] = _as_i64(event_us, n).view(np.uint64) ^ _NOT_SIGN
    rec["created"] = _as_i64(created_us, n).view(np.uint64) ^ _NOT_SIGN
    return split_fixed(rec.view(np.uint8), _VERSION_DTYPE.itemsize)


def seek_keys(
    id_keys: np.ndarray | Sequence[int], as_of_us: np.ndarray | Sequence[int] | int
) -> list[bytes]:
    """As-of seek targets ``[ver][entity][~as_of]`` (17 bytes) for n entities.

    Args:
        id_keys: int64 entity id keys.
        as_of_us: One read time for all, or one per entity (microseconds).
    """
    ids = _as_i64(id_keys)
    rec = np.empty(ids.shape[0], dtype=_SEEK_DTYPE)
    rec["ver"] = KEY_FORMAT_VERSION
    rec["entity"] = ids.view(np.uint64) ^ _SIGN
    rec["event"] = _as_i64(as_of_us, ids.shape[0]).view(np.uint64) ^ _NOT_SIGN
    return split_fixed(rec.view(np.uint8), _SEEK_DTYPE.itemsize)


def entity_prefix(id_key: int) -> bytes:
    """The 9-byte ``[ver][entity]`` prefix of one entity's version rows (= its latest-row key)."""
    return latest_keys(np.array([id_key], dtype=np.int64))[0]


def decode_version_keys(keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`version_keys`.

    Returns:
        ``(id_keys, event_us, created_us)``, int64 arrays.

    Raises:
        ValueError: A key has the wrong length or format version (a corrupt or foreign row).
    """
    rec = _records(keys, _VERSION_DTYPE)
    return (
        (rec["entity"].astype(np.uint64) ^ _SIGN).view(np.int64),
        (rec["event"].astype(np.uint64) ^ _NOT_SIGN).view(np.int64),
        (rec["created"].astype(np.uint64) ^ _NOT_SIGN).view(np.int64),
    )


def decode_latest_keys(keys: Sequence[bytes]) -> np.ndarray:
    """Inverse of :func:`latest_keys`: int64 id keys."""
    rec = _records(keys, _LATEST_DTYPE)
    return (rec["entity"].astype(np.uint64) ^ _SIGN).view(np.int64)


def _records(keys: Sequence[bytes], dtype: np.dtype) -> np.ndarray:
    joined = b"".join(keys)
    if len(joined) != len(keys) * dtype.itemsize:
        raise ValueError(f"expected {dtype.itemsize}-byte keys, found other lengths")
    rec = np.frombuffer(joined, dtype=dtype)
    if rec.shape[0] and not np.all(rec["ver"] == KEY_FORMAT_VERSION):
        bad = int(rec["ver"][rec["ver"] != KEY_FORMAT_VERSION][0])
        raise ValueError(f"key format version {bad} is not {KEY_FORMAT_VERSION}")
    return rec


def store_marker_key() -> bytes:
    """Meta key of the store's own format document."""
    return bytes([KEY_FORMAT_VERSION, _TAG_STORE])


def group_def_prefix() -> bytes:
    """Prefix shared by every group-definition meta key."""
    return bytes([KEY_FORMAT_VERSION, _TAG_GROUP])


def group_def_key(group: str) -> bytes:
    """Meta key of a group's definition (versioned JSON)."""
    return group_def_prefix() + group.encode("utf-8")


def checkpoint_prefix(group: str) -> bytes:
    """Prefix of every ingest checkpoint of ``group`` (the group name is 0-terminated)."""
    return bytes([KEY_FORMAT_VERSION, _TAG_CHECKPOINT]) + group.encode("utf-8") + b"\x00"


def checkpoint_key(group: str, ingest_id: str) -> bytes:
    """Meta key of one ingest's checkpoint."""
    return checkpoint_prefix(group) + ingest_id.encode("utf-8")


def group_generation_key(group: str) -> bytes:
    """Meta key of a group's generation: a random token rewritten by every write to the group."""
    return bytes([KEY_FORMAT_VERSION, _TAG_GENERATION]) + group.encode("utf-8")
