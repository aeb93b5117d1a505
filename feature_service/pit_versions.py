"""Columnar copies of feature-group versions and the as-of match over them (the join's fast path).

A point-in-time join that touches most of a group's entities is cheaper as one sequential scan of
the group's ``versions:<group>`` column family than as one RocksDB seek per example row: the scan
costs ~0.5 us per stored version in the rocksdict binding (one ``(key, value)`` pair per version,
decoded in bulk by :class:`~feature_service.codec.ValueCodec`), a seek ~6 us per example. The scan
yields :class:`GroupVersions`: every version of the group as numpy columns, already in the store's
key order (entity ascending; per entity event time descending, then created time descending), so
matching an example is two binary searches (:func:`match_as_of`) and needs no sort.

Memory: a :class:`GroupVersions` holds 24 bytes of keys and times per version plus the decoded
features (their fixed width, or their bytes plus 8 bytes of offsets for lists and strings) and one
validity byte per feature. :func:`scan_group_versions` refuses to build one larger than its budget
(it stops the scan and returns None); the scan itself holds at most one chunk of
``SCAN_CHUNK_VERSIONS`` undecoded pairs, and concatenating the decoded chunks briefly needs twice
the final size.

This module reads the store's column families directly (:func:`_versions_cf`): it relies on the key
layout documented in :mod:`feature_service.keys`, which the store guarantees.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numba
import numpy as np

from adrank.errors import AdrankError, StoreError
from adrank.hashing import fmix64
from feature_service import keys as K
from feature_service.codec import ValueCodec, empty_column
from feature_service.store import FeatureStore
from feature_service.types import FeatureColumn, FeatureGroup, FeatureSpec

__all__ = [
    "SCAN_CHUNK_VERSIONS",
    "MatchReason",
    "GroupVersions",
    "scan_group_versions",
    "estimate_versions",
    "estimate_decoded_bytes",
    "match_as_of",
    "take_columns",
    "concat_columns",
    "store_errors",
]

logger = logging.getLogger(__name__)

SCAN_CHUNK_VERSIONS = 65_536
"""Versions pulled from RocksDB and decoded per step of a scan (bounds the scan's Python objects,
~200 bytes per undecoded pair)."""

_SAMPLE_VALUES = 256  # values read to estimate the mean encoded size of a group's versions
_SCAN_ATTEMPTS = 3  # rescans when a concurrent write misaligns the scan's two iterators


class MatchReason:
    """Why an example row got (or missed) a group's features: the int8 codes of :func:`match_as_of`.

    ``MATCHED``: a version with ``t - ttl <= event <= t`` was found. ``NULL_KEY``: the example's
    entity id or timestamp is null. ``NO_ENTITY``: the store has no version of the entity.
    ``FUTURE_ONLY``: every version of the entity has ``event > t``. ``EXPIRED``: the newest version
    with ``event <= t`` is older than ``t - ttl``.
    """

    MATCHED = 0
    NULL_KEY = 1
    NO_ENTITY = 2
    FUTURE_ONLY = 3
    EXPIRED = 4
    COUNT = 5
    NAMES = ("matched", "null_key", "no_entity", "future_only", "expired")


@contextlib.contextmanager
def store_errors(action: str, path: str) -> Iterator[None]:
    """Convert rocksdict's exceptions (bare ``Exception`` subclasses) into StoreError."""
    try:
        yield
    except AdrankError:
        raise
    except Exception as exc:  # rocksdict raises bare Exception for every RocksDB status
        raise StoreError(f"RocksDB could not {action}: {exc}", source=path) from exc


def _versions_cf(store: FeatureStore, group: str) -> Any:
    """The group's versions column family (rocksdict ``Rdict`` in raw mode).

    The store exposes no scan API; the join is part of the same package and reads the column family
    under the layout :mod:`feature_service.keys` documents.
    """
    return store._handles(group).versions


def _latest_cf(store: FeatureStore, group: str) -> Any:
    """The group's latest-row column family (one row per entity with any version)."""
    return store._handles(group).latest


@dataclass(frozen=True, slots=True, eq=False)
class GroupVersions:
    """Every stored version of one group, as columns in the store's key order.

    Example, entity 7 with versions at t=30 and t=10 (two rows at t=10: a correction created
    later comes first) and entity 9 with one at t=20::

        entity_keys = [7, 9]            # distinct entities, ascending
        starts      = [0, 3, 4]         # entity i's versions are rows starts[i]:starts[i + 1]
        event_us    = [30, 10, 10, 20]  # per entity descending
        created_us  = [31, 15, 11, 21]  # per (entity, event) descending

    Args:
        group: The group as registered when scanned.
        features: Names of the decoded features (the columns).
        entity_keys: Distinct int64 id keys, ascending.
        starts: int64 row offsets, ``len(entity_keys) + 1`` of them.
        event_us: Event time per version (microseconds).
        created_us: Created time per version (microseconds).
        columns: Decoded features, one row per version.
        sequence: RocksDB sequence number of the store when the scan began; a cache reuses the
            copy only while the store's sequence number is unchanged.
        table: Open-addressing hash table from entity key to its version rows, shape
            ``(capacity, 3)`` of ``(key, start, end)`` with ``start == -1`` for an empty slot;
            capacity is a power of two at least twice the entities, so a lookup costs about one
            cache miss where a binary search over a million entities costs about twenty.
        all_valid: Features without nulls among the versions (their validity needs no gather).
    """

    group: FeatureGroup
    features: tuple[str, ...]
    entity_keys: np.ndarray
    starts: np.ndarray
    event_us: np.ndarray
    created_us: np.ndarray
    columns: Mapping[str, FeatureColumn]
    sequence: int
    table: np.ndarray
    all_valid: frozenset[str]

    @property
    def num_versions(self) -> int:
        """Stored versions."""
        return int(self.event_us.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        total = self.entity_keys.nbytes + self.starts.nbytes + self.table.nbytes
        total += self.event_us.nbytes + self.created_us.nbytes
        for col in self.columns.values():
            total += col.values.nbytes + col.valid.nbytes
            total += 0 if col.offsets is None else col.offsets.nbytes
        return int(total)


def estimate_versions(store: FeatureStore, group: str) -> int:
    """RocksDB's estimate of the versions stored in ``group`` (cheap; may be off by a few %).

    Raises:
        NotFoundError: Unknown group.
        StoreError: RocksDB failed.
    """
    cf = _versions_cf(store, group)
    with store_errors(f"estimate the size of group {group!r}", store.path):
        return int(cf.property_int_value("rocksdb.estimate-num-keys") or 0)


def estimate_decoded_bytes(
    store: FeatureStore, group: str, features: Sequence[str], num_versions: int
) -> int:
    """Rough decoded size of ``num_versions`` versions: 24 bytes of keys and times per version, plus
    the mean encoded value size of a sample (the encoding is about as wide as the decoded columns).

    Raises:
        StoreError: RocksDB failed.
    """
    g = store.group(group)
    cf = _versions_cf(store, group)
    with store_errors(f"sample group {group!r}", store.path):
        sample = [cast(bytes, v) for v in itertools.islice(cf.values(), _SAMPLE_VALUES)]
    if not sample:
        return 0
    mean_value = sum(map(len, sample)) / len(sample)
    share = len(features) / max(1, len(g.features))
    return int(num_versions * (24 + mean_value * share + len(features)))


def scan_group_versions(
    store: FeatureStore,
    group: str,
    features: Sequence[str],
    *,
    budget_bytes: int | None = None,
) -> GroupVersions | None:
    """Read every version of ``group`` in one sequential scan into columns.

    Args:
        store: An open store.
        group: Group name.
        features: Features to decode (a subset saves memory and decode time).
        budget_bytes: Give up (return None) as soon as the decoded columns exceed this many bytes;
            None: no limit.

    Returns:
        The columns, or None when over budget.

    Raises:
        NotFoundError: Unknown group or feature.
        StoreError: RocksDB failed or a stored key or value is corrupt.
    """
    start = time.perf_counter()
    h = store._handles(group)
    g = h.group
    codec = h.codec
    specs = tuple(g.feature(f) for f in features)
    for attempt in range(_SCAN_ATTEMPTS):
        try:
            parts = _scan_chunks(store, h.versions, group, codec, specs, budget_bytes)
        except _ScanRaced:
            logger.info("group %s changed during the scan (attempt %d); rescanning", group, attempt)
            continue
        break
    else:
        raise StoreError(
            f"group {group!r} kept changing while it was scanned ({_SCAN_ATTEMPTS} attempts)",
            source=store.path,
            hint="join against a read-only open of the store (it sees the data as of the open), "
            "or pause writers",
        )
    if parts is None:
        return None
    sequence, ent_parts, ev_parts, cr_parts, col_parts = parts
    out = build_versions(
        g,
        tuple(features),
        _concat(ent_parts, np.int64),
        _concat(ev_parts, np.int64),
        _concat(cr_parts, np.int64),
        {s.name: concat_columns(s, col_parts[s.name]) for s in specs},
        sequence,
    )
    logger.info(
        "scanned group %s: %d versions of %d entities, %.1f MB decoded, in %.2f s",
        group,
        out.num_versions,
        out.entity_keys.shape[0],
        out.nbytes / 1e6,
        time.perf_counter() - start,
    )
    return out


class _ScanRaced(Exception):
    """The keys and values iterators saw different data (a write landed during the scan)."""


_Chunks = tuple[
    int, list[np.ndarray], list[np.ndarray], list[np.ndarray], dict[str, list[FeatureColumn]]
]


def _scan_chunks(
    store: FeatureStore,
    cf: Any,
    group: str,
    codec: ValueCodec,
    specs: tuple[FeatureSpec, ...],
    budget_bytes: int | None,
) -> _Chunks | None:
    """Decode the column family chunk by chunk; None when over budget.

    Keys and values come from two iterators advanced in lockstep: rocksdict builds one ``bytes``
    per key or value, but a ``(key, value)`` tuple per item costs ~30% more (tuples are tracked by
    the garbage collector). Each iterator reads its own implicit snapshot, so a write between their
    creation could misalign them; every chunk checks that the times in the keys equal those in the
    values (a write shifts them), and the lengths must end together.
    """
    path = store.path
    names = [s.name for s in specs]
    ent_parts: list[np.ndarray] = []
    ev_parts: list[np.ndarray] = []
    cr_parts: list[np.ndarray] = []
    col_parts: dict[str, list[FeatureColumn]] = {n: [] for n in names}
    held = 0
    with store_errors(f"scan group {group!r}", path):
        sequence = int(store._require_open().latest_sequence_number())
        key_iter = iter(cf.keys())
        value_iter = iter(cf.values())
        while True:
            keys = cast("list[bytes]", list(itertools.islice(key_iter, SCAN_CHUNK_VERSIONS)))
            values = cast("list[bytes]", list(itertools.islice(value_iter, SCAN_CHUNK_VERSIONS)))
            if len(keys) != len(values):
                raise _ScanRaced
            if not keys:
                break
            try:
                ids, key_ev, key_cr = K.decode_version_keys(keys)
                dec = codec.decode(values, names)
            except ValueError as exc:
                raise StoreError(f"corrupt version in group {group!r}: {exc}", source=path) from exc
            if not (
                np.array_equal(key_ev, dec.event_us) and np.array_equal(key_cr, dec.created_us)
            ):
                raise _ScanRaced
            del keys, values
            ent_parts.append(ids)
            ev_parts.append(dec.event_us)
            cr_parts.append(dec.created_us)
            held += 24 * ids.shape[0]
            for name in names:
                col = dec.columns[name]
                col_parts[name].append(col)
                held += _column_nbytes(col)
            if budget_bytes is not None and held > budget_bytes:
                logger.info(
                    "group %s: decoded versions exceed the join's memory budget (%d bytes); "
                    "stopping the scan",
                    group,
                    budget_bytes,
                )
                return None
    return sequence, ent_parts, ev_parts, cr_parts, col_parts


def build_versions(
    group: FeatureGroup,
    features: tuple[str, ...],
    entity_per_version: np.ndarray,
    event_us: np.ndarray,
    created_us: np.ndarray,
    columns: Mapping[str, FeatureColumn],
    sequence: int,
) -> GroupVersions:
    """Assemble :class:`GroupVersions` from per-version arrays already in the store's key order
    (entity ascending, then event and created descending), building the entity lookup table."""
    ents = np.ascontiguousarray(entity_per_version, dtype=np.int64)
    first = np.ones(ents.shape[0], dtype=bool)
    first[1:] = ents[1:] != ents[:-1]
    starts = np.append(np.flatnonzero(first), ents.shape[0]).astype(np.int64)
    uniq = ents[first]
    return GroupVersions(
        group=group,
        features=features,
        entity_keys=uniq,
        starts=starts,
        event_us=np.ascontiguousarray(event_us, dtype=np.int64),
        created_us=np.ascontiguousarray(created_us, dtype=np.int64),
        columns=dict(columns),
        sequence=sequence,
        table=_build_table(uniq, starts),
        all_valid=frozenset(n for n, c in columns.items() if bool(c.valid.all())),
    )


def _concat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _column_nbytes(col: FeatureColumn) -> int:
    off = 0 if col.offsets is None else col.offsets.nbytes
    return int(col.values.nbytes + col.valid.nbytes + off)


def concat_columns(spec: FeatureSpec, parts: Sequence[FeatureColumn]) -> FeatureColumn:
    """Concatenate row-wise parts of one feature's column (lists and strings: offsets rebased)."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return empty_column(spec, 0)
    valid = np.concatenate([p.valid for p in parts])
    if spec.fixed_width:
        return FeatureColumn(spec, np.concatenate([p.values for p in parts]), valid)
    offsets = [np.zeros(1, dtype=np.int64)]
    chunks = []
    base = 0
    for p in parts:
        assert p.offsets is not None
        lo, hi = int(p.offsets[0]), int(p.offsets[-1])
        offsets.append(p.offsets[1:] - lo + base)
        chunks.append(p.values[lo:hi])
        base += hi - lo
    values = np.concatenate(chunks)
    return FeatureColumn(spec, values, valid, np.concatenate(offsets))


def _table_capacity(num_entities: int) -> int:
    cap = 8
    while cap < 2 * num_entities:
        cap <<= 1
    return cap


@numba.njit(cache=True)
def _fill_table(
    table: np.ndarray, keys: np.ndarray, starts: np.ndarray
) -> None:  # pragma: no cover
    mask = np.uint64(table.shape[0] - 1)
    for i in range(keys.shape[0]):
        slot = fmix64(np.uint64(keys[i])) & mask
        while table[slot, 1] >= 0:
            slot = (slot + np.uint64(1)) & mask
        table[slot, 0] = keys[i]
        table[slot, 1] = starts[i]
        table[slot, 2] = starts[i + 1]


def _build_table(entity_keys: np.ndarray, starts: np.ndarray) -> np.ndarray:
    table = np.full((_table_capacity(entity_keys.shape[0]), 3), -1, dtype=np.int64)
    if entity_keys.shape[0]:
        _fill_table(table, entity_keys, starts)
    return table


@numba.njit(parallel=True, cache=True)
def _match_kernel(
    table: np.ndarray,
    event_us: np.ndarray,
    keys: np.ndarray,
    times: np.ndarray,
    ok: np.ndarray,
    ttl_us: np.int64,
    out_row: np.ndarray,
    out_reason: np.ndarray,
) -> None:  # pragma: no cover - compiled
    mask = np.uint64(table.shape[0] - 1)
    int64_min = np.iinfo(np.int64).min
    for i in numba.prange(keys.shape[0]):
        out_row[i] = -1
        if not ok[i]:
            out_reason[i] = 1  # NULL_KEY
            continue
        k = keys[i]
        slot = fmix64(np.uint64(k)) & mask
        a = np.int64(-1)
        b = np.int64(-1)
        while True:
            a = table[slot, 1]
            if a < 0 or table[slot, 0] == k:
                b = table[slot, 2]
                break
            slot = (slot + np.uint64(1)) & mask
        if a < 0:
            out_reason[i] = 2  # NO_ENTITY
            continue
        t = times[i]
        # Events descend within the entity: find the first with event <= t. Among equal events the
        # newest created comes first, so it wins the tie.
        lo = a
        hi = b
        while lo < hi:
            mid = (lo + hi) >> 1
            if event_us[mid] > t:
                lo = mid + 1
            else:
                hi = mid
        if lo == b:
            out_reason[i] = 3  # FUTURE_ONLY
            continue
        if ttl_us >= 0:
            cutoff = int64_min if t < int64_min + ttl_us else t - ttl_us
            if event_us[lo] < cutoff:
                out_reason[i] = 4  # EXPIRED
                continue
        out_reason[i] = 0  # MATCHED
        out_row[i] = lo


def match_as_of(
    versions: GroupVersions, keys: np.ndarray, times_us: np.ndarray, ok: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per example, the version a point-in-time join attaches, and why.

    The version is the entity's newest with ``t - ttl <= event_us <= t`` (ties on ``event_us``: the
    newest ``created_us``); both bounds are inclusive, as for :meth:`FeatureStore.get_as_of`.

    Args:
        versions: The group's versions.
        keys: int64 entity id keys of the examples.
        times_us: int64 example times (microseconds).
        ok: False where the example's key or time is null.

    Returns:
        ``(row, reason)``: int64 row into ``versions`` (-1 where none) and the int8
        :class:`MatchReason` code per example.
    """
    n = keys.shape[0]
    row = np.empty(n, dtype=np.int64)
    reason = np.empty(n, dtype=np.int8)
    ttl = versions.group.ttl_us
    if n:
        _match_kernel(
            versions.table,
            versions.event_us,
            np.ascontiguousarray(keys, dtype=np.int64),
            np.ascontiguousarray(times_us, dtype=np.int64),
            np.ascontiguousarray(ok, dtype=np.bool_),
            np.int64(-1 if ttl is None else ttl),
            row,
            reason,
        )
    return row, reason


def _range_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[i], starts[i] + lengths[i])`` over i, without a loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    excl = np.cumsum(lengths) - lengths
    return np.repeat(starts - excl, lengths) + np.arange(total, dtype=np.int64)


def take_columns(
    columns: Mapping[str, FeatureColumn],
    features: Sequence[str],
    rows: np.ndarray,
    all_valid: frozenset[str] = frozenset(),
) -> dict[str, FeatureColumn]:
    """Gather rows of decoded columns: output row i is ``rows[i]`` of the input, or null where
    ``rows[i] < 0``.

    Args:
        columns: Decoded columns (all of one length m).
        features: Names to gather, in output order.
        rows: int64 indices into the columns, -1 for null.
        all_valid: Features known to hold no nulls (their validity is ``rows >= 0``, no gather).

    Returns:
        Columns of ``len(rows)`` rows.
    """
    hit = rows >= 0
    safe = np.where(hit, rows, 0)
    out: dict[str, FeatureColumn] = {}
    for name in features:
        col = columns[name]
        spec = col.spec
        if len(col) == 0:
            out[name] = empty_column(spec, rows.shape[0])
            continue
        valid = hit if name in all_valid else hit & col.valid[safe]
        if spec.fixed_width:
            out[name] = FeatureColumn(spec, col.values[safe], valid)
            continue
        assert col.offsets is not None
        begin = col.offsets[safe]
        counts = np.where(valid, col.offsets[safe + 1] - begin, 0)
        offsets = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        values = col.values[_range_index(begin, counts)]
        out[name] = FeatureColumn(spec, values, valid, offsets)
    return out
