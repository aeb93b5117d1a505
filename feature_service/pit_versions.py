"""In-memory copies of feature-group versions and the as-of match over them (the join's bulk path).

A point-in-time join that touches most of a group's entities is cheaper as one sequential scan of
the group's ``versions:<group>`` column family than as one RocksDB seek per example row: the scan
costs ~1 us per stored version in the rocksdict binding (one ``bytes`` per key and per value,
decoded in bulk by :class:`~feature_service.codec.ValueCodec`), a seek ~6-8 us per example. The
scan yields :class:`GroupVersions`: every version of the group, already in the store's key order
(entity ascending; per entity event time descending, then created time descending), so matching
an example is one hash lookup and a binary search, and needs no sort.

Layout, chosen for the match's memory accesses (each example costs a few cache misses, which
dominate): a hash table from entity key to its version rows; the event times of all versions in
one array (an entity's are contiguous for the binary search); and the fixed-width features of a
version in one row-major record (value and validity of each, plus the event time), so attaching a
version's features is one copy of a few dozen contiguous bytes instead of one random read per
feature. Variable-width features (lists, strings) stay columnar (values plus offsets).

Memory: a :class:`GroupVersions` holds 24 bytes of entity, event and created time per version,
the records (the features' fixed widths, one validity byte each and 8 bytes of event time), the
variable-width features (their bytes, 8 bytes of offsets and one validity byte per version) and the
hash table (24 bytes per slot, 2-4 slots per entity). :func:`scan_group_versions` stops and
returns None as soon as that exceeds its budget; it holds at most one chunk of
``SCAN_CHUNK_VERSIONS`` undecoded keys and values, and concatenating the decoded chunks briefly
needs twice the final size.

The RocksDB reads are the store's (:meth:`FeatureStore.scan_versions`,
:meth:`FeatureStore.estimate_versions`, :meth:`FeatureStore.sample_value_bytes`); this module only
decides how much to read and lays the versions out for the match.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from adrank.hashing import fmix64
from feature_service.codec import empty_column
from feature_service.store import DEFAULT_SCAN_CHUNK_VERSIONS, FeatureStore
from feature_service.types import FeatureColumn, FeatureGroup, FeatureSpec, Shape

__all__ = [
    "SCAN_CHUNK_VERSIONS",
    "MatchReason",
    "GroupVersions",
    "record_dtype",
    "build_versions",
    "scan_group_versions",
    "estimate_versions",
    "estimate_decoded_bytes",
    "match_as_of",
    "gather_versions",
    "take_columns",
    "concat_columns",
]

logger = logging.getLogger(__name__)

SCAN_CHUNK_VERSIONS = DEFAULT_SCAN_CHUNK_VERSIONS
"""Versions pulled from RocksDB and decoded per step of a scan (bounds the scan's Python objects,
~150 bytes per undecoded key and value)."""

_SAMPLE_VALUES = 256  # values read to estimate the mean encoded size of a group's versions
_TABLE_SLOT_BYTES = 24


class MatchReason:
    """Why an example row got (or missed) a group's features: the int8 codes of
    :func:`match_as_of`.

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


def record_dtype(specs: Sequence[FeatureSpec]) -> tuple[np.dtype[Any], dict[str, int]]:
    """Record of the fixed-width features: ``event`` then per feature i a value ``v<i>`` and a
    validity byte ``m<i>``, packed and padded to whole 8-byte words; also the index i of each
    fixed-width feature by name."""
    fields: list[tuple[Any, ...]] = [("event", "<i8")]
    index: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if not spec.fixed_width:
            continue
        if spec.shape is Shape.VECTOR:
            fields.append((f"v{i}", spec.dtype.numpy.str, (spec.dim,)))
        else:
            fields.append((f"v{i}", spec.dtype.numpy.str))
        fields.append((f"m{i}", "?"))
        index[spec.name] = i
    # Whole 8-byte words per record: the match kernel copies records word by word.
    pad = -np.dtype(fields).itemsize % 8
    if pad:
        fields.append(("_pad", f"V{pad}"))
    padded = np.dtype(fields)
    return padded, index


@dataclass(frozen=True, slots=True, eq=False)
class GroupVersions:
    """Every stored version of one group, in the store's key order.

    Example, entity 7 with versions at t=30 and t=10 (two rows at t=10: a correction created
    later comes first) and entity 9 with one at t=20::

        entity_keys = [7, 9]            # distinct entities, ascending
        starts      = [0, 3, 4]         # entity i's versions are rows starts[i]:starts[i + 1]
        event_us    = [30, 10, 10, 20]  # per entity descending
        created_us  = [31, 15, 11, 21]  # per (entity, event) descending
        records     = [(30, v0, m0...), (10, ...), (10, ...), (20, ...)]  # one per version

    Args:
        group: The group as registered when scanned.
        features: Names of the features held, in request order.
        entity_keys: Distinct int64 id keys, ascending.
        starts: int64 row offsets, ``len(entity_keys) + 1`` of them.
        event_us: Event time per version (microseconds).
        created_us: Created time per version (microseconds).
        records: Structured array, one record per version: ``event`` and, per fixed-width feature
            i (its position in ``features``), its value ``v<i>`` and validity ``m<i>``.
        var_columns: Variable-width features (lists, strings), one row per version.
        generation: The group's generation (:meth:`FeatureStore.generation`) when the scan began; a
            cache or snapshot reuses the copy only while the group's generation is unchanged.
        table: Open-addressing hash table from entity key to its version rows, shape
            ``(capacity, 3)`` of ``(key, start, end)`` with ``start == -1`` for an empty slot;
            capacity is a power of two at least twice the entities, so a lookup costs about one
            cache miss where a binary search over a million entities costs about twenty.
    """

    group: FeatureGroup
    features: tuple[str, ...]
    entity_keys: np.ndarray
    starts: np.ndarray
    event_us: np.ndarray
    created_us: np.ndarray
    records: np.ndarray
    var_columns: Mapping[str, FeatureColumn]
    generation: str
    table: np.ndarray

    @property
    def num_versions(self) -> int:
        """Stored versions."""
        return int(self.event_us.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        total = self.entity_keys.nbytes + self.starts.nbytes + self.table.nbytes
        total += self.event_us.nbytes + self.created_us.nbytes + self.records.nbytes
        return int(total + sum(_column_nbytes(c) for c in self.var_columns.values()))

    def specs(self) -> tuple[FeatureSpec, ...]:
        """Schemas of :attr:`features`."""
        return tuple(self.group.feature(f) for f in self.features)


def estimate_versions(store: FeatureStore, group: str) -> int:
    """RocksDB's estimate of the versions stored in ``group`` (cheap; may be off by a few %).

    Raises:
        NotFoundError: Unknown group.
        StoreError: RocksDB failed.
    """
    return store.estimate_versions(group)


def estimate_decoded_bytes(
    store: FeatureStore, group: str, features: Sequence[str], num_versions: int
) -> int:
    """Rough in-memory size of ``num_versions`` versions: 32 bytes of keys and times and ~50 of
    hash table per version, plus the mean encoded value size of a sample (the encoding is about as
    wide as the decoded features) and a validity byte per feature.

    Raises:
        NotFoundError: Unknown group.
        StoreError: RocksDB failed.
    """
    g = store.group(group)
    mean_value = store.sample_value_bytes(group, _SAMPLE_VALUES)
    if not mean_value:
        return 0  # no versions
    share = len(features) / max(1, len(g.features))
    return int(num_versions * (32 + 2 * _TABLE_SLOT_BYTES + mean_value * share + len(features)))


def scan_group_versions(
    store: FeatureStore,
    group: str,
    features: Sequence[str],
    *,
    budget_bytes: int | None = None,
) -> GroupVersions | None:
    """Read every version of ``group`` in one sequential scan (:meth:`FeatureStore.scan_versions`).

    Args:
        store: An open store.
        group: Group name.
        features: Features to keep (a subset saves memory and time).
        budget_bytes: Give up (return None) as soon as the decoded versions exceed this many bytes;
            None: no limit.

    Returns:
        The versions, or None when over budget.

    Raises:
        NotFoundError: Unknown group or feature.
        StoreError: RocksDB failed, a stored key or value is corrupt, or the group kept changing
            during the scan.
    """
    start = time.perf_counter()
    g = store.group(group)
    specs = tuple(g.feature(f) for f in features)
    names = [s.name for s in specs]
    # Read before the scan: a write during it changes the generation, so the copy is never reused
    # as current for data it may not hold.
    generation = store.generation(group)
    entity: list[np.ndarray] = []
    event: list[np.ndarray] = []
    created: list[np.ndarray] = []
    columns: dict[str, list[FeatureColumn]] = {n: [] for n in names}
    held = 0
    # closing: stopping over budget releases the scan's RocksDB iterators at once.
    with contextlib.closing(
        store.scan_versions(group, names, chunk_versions=SCAN_CHUNK_VERSIONS)
    ) as chunks:
        for chunk in chunks:
            entity.append(chunk.entity_keys)
            event.append(chunk.event_us)
            created.append(chunk.created_us)
            held += 32 * chunk.num_versions
            for name in names:
                col = chunk.columns[name]
                columns[name].append(col)
                held += _column_nbytes(col)
            if budget_bytes is not None and held > budget_bytes:
                logger.info(
                    "group %s: decoded versions exceed the join's memory budget (%d bytes); "
                    "stopping the scan",
                    group,
                    budget_bytes,
                )
                return None
    out = build_versions(
        g,
        tuple(features),
        _concat(entity, np.int64),
        _concat(event, np.int64),
        _concat(created, np.int64),
        {s.name: concat_columns(s, columns[s.name]) for s in specs},
        generation,
    )
    logger.info(
        "scanned group %s: %d versions of %d entities, %.1f MB in memory, in %.2f s",
        group,
        out.num_versions,
        out.entity_keys.shape[0],
        out.nbytes / 1e6,
        time.perf_counter() - start,
    )
    return out


def build_versions(
    group: FeatureGroup,
    features: tuple[str, ...],
    entity_per_version: np.ndarray,
    event_us: np.ndarray,
    created_us: np.ndarray,
    columns: Mapping[str, FeatureColumn],
    generation: str,
) -> GroupVersions:
    """Assemble :class:`GroupVersions` from per-version arrays in the store's key order (entity
    ascending, then event and created descending): pack the records, build the hash table."""
    ents = np.ascontiguousarray(entity_per_version, dtype=np.int64)
    first = np.ones(ents.shape[0], dtype=bool)
    first[1:] = ents[1:] != ents[:-1]
    starts = np.append(np.flatnonzero(first), ents.shape[0]).astype(np.int64)
    uniq = ents[first]
    specs = tuple(group.feature(f) for f in features)
    dtype, index = record_dtype(specs)
    records = np.zeros(ents.shape[0], dtype=dtype)
    records["event"] = event_us
    for name, i in index.items():
        records[f"v{i}"] = columns[name].values
        records[f"m{i}"] = columns[name].valid
    var = {s.name: columns[s.name] for s in specs if not s.fixed_width}
    return GroupVersions(
        group=group,
        features=features,
        entity_keys=uniq,
        starts=starts,
        event_us=np.ascontiguousarray(event_us, dtype=np.int64),
        created_us=np.ascontiguousarray(created_us, dtype=np.int64),
        records=records,
        var_columns=var,
        generation=generation,
        table=_build_table(uniq, starts),
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


# ---------------------------------------------------------------------- compiled kernels


def _table_capacity(num_entities: int) -> int:
    cap = 8
    while cap < 2 * num_entities:
        cap <<= 1
    return cap


@numba.njit(cache=True)
def _fill_table(
    table: np.ndarray, keys: np.ndarray, starts: np.ndarray
) -> None:  # pragma: no cover - compiled
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


_BLOCK = 128  # examples per block of the match kernel's software pipelining


@numba.njit(parallel=True, cache=True)
def _match_kernel(
    table: np.ndarray,
    event_us: np.ndarray,
    records: np.ndarray,
    keys: np.ndarray,
    times: np.ndarray,
    ok: np.ndarray,
    ttl_us: np.int64,
    out_row: np.ndarray,
    out_reason: np.ndarray,
    out_records: np.ndarray,
) -> None:  # pragma: no cover - compiled
    # records and out_records are uint64 words (whole records). Each example costs a few cache
    # misses (hash slot, event times, record). Blocks of
    # examples go through the stages one stage at a time, so that the misses of a block's
    # examples are independent loads the CPU overlaps, instead of one example's chain at a time.
    mask = np.uint64(table.shape[0] - 1)
    width = records.shape[1]
    int64_min = np.iinfo(np.int64).min
    n = keys.shape[0]
    for blk in numba.prange((n + _BLOCK - 1) // _BLOCK):
        first = blk * _BLOCK
        last = min(n, first + _BLOCK)
        slots = np.empty(_BLOCK, dtype=np.uint64)
        begin = np.empty(_BLOCK, dtype=np.int64)
        end = np.empty(_BLOCK, dtype=np.int64)
        touch = np.uint64(0)  # loads made only to start the cache misses early
        for i in range(first, last):
            slot = fmix64(np.uint64(keys[i])) & mask
            slots[i - first] = slot
            touch += np.uint64(table[slot, 0])
        for i in range(first, last):
            k = keys[i]
            slot = slots[i - first]
            while True:
                a = table[slot, 1]
                if a < 0 or table[slot, 0] == k:
                    break
                slot = (slot + np.uint64(1)) & mask
            begin[i - first] = a
            end[i - first] = table[slot, 2]
            if a >= 0:
                touch += np.uint64(event_us[a])
        for i in range(first, last):
            out_row[i] = -1
            a = begin[i - first]
            b = end[i - first]
            if not ok[i]:
                out_reason[i] = 1  # NULL_KEY
                continue
            if a < 0:
                out_reason[i] = 2  # NO_ENTITY
                continue
            t = times[i]
            # Events descend within the entity: find the first with event <= t. Among equal
            # events the newest created comes first, so it wins the tie.
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
            if width:
                touch += records[lo, 0] + records[lo, width - 1]
        for i in range(first, last):
            r = out_row[i]
            if r >= 0:
                for j in range(width):
                    out_records[i, j] = records[r, j]
            else:
                for j in range(width):
                    out_records[i, j] = 0
        if touch == np.uint64(0x7FFF_FFFF_FFFF_FFF1):  # never true in practice; keeps the loads
            out_row[first] = out_row[first]


@numba.njit(cache=True)
def _var_counts(
    offsets: np.ndarray, valid: np.ndarray, rows: np.ndarray, out_valid: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    n = rows.shape[0]
    out_offsets = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        r = rows[i]
        count = 0
        if r >= 0 and valid[r]:
            out_valid[i] = True
            count = offsets[r + 1] - offsets[r]
        out_offsets[i + 1] = out_offsets[i] + count
    return out_offsets


@numba.njit(cache=True)
def _var_copy(
    offsets: np.ndarray,
    values: np.ndarray,
    rows: np.ndarray,
    out_offsets: np.ndarray,
    out_values: np.ndarray,
) -> None:  # pragma: no cover - compiled
    for i in range(rows.shape[0]):
        a = out_offsets[i]
        b = out_offsets[i + 1]
        src = offsets[rows[i]] if b > a else 0
        for j in range(b - a):
            out_values[a + j] = values[src + j]


def match_as_of(
    versions: GroupVersions,
    keys: np.ndarray,
    times_us: np.ndarray,
    ok: np.ndarray,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per example, the version a point-in-time join attaches, why, and its record.

    The version is the entity's newest with ``t - ttl <= event_us <= t`` (ties on ``event_us``: the
    newest ``created_us``); both bounds are inclusive, as for :meth:`FeatureStore.get_as_of`.

    Args:
        versions: The group's versions.
        keys: int64 entity id keys of the examples.
        times_us: int64 example times (microseconds).
        ok: False where the example's key or time is null.
        out: Optional buffer for the records, at least ``len(keys)`` records of
            ``versions.records.dtype`` (reused across batches to avoid fresh pages); overwritten.

    Returns:
        ``(row, reason, records)``: int64 row into ``versions`` (-1 where none), the int8
        :class:`MatchReason` code, and a copy of the matched version's record (zeros where none,
        so every feature reads as null there) per example; ``records`` is a view of ``out`` when
        given.
    """
    n = keys.shape[0]
    row = np.empty(n, dtype=np.int64)
    reason = np.empty(n, dtype=np.int8)
    dtype = versions.records.dtype
    if out is None or out.dtype != dtype or out.shape[0] < n:
        out = np.empty(n, dtype=dtype)
    out = out[:n]
    words = dtype.itemsize // 8
    ttl = versions.group.ttl_us
    if n:
        _match_kernel(
            versions.table,
            versions.event_us,
            versions.records.view(np.uint64).reshape(versions.num_versions, words),
            np.ascontiguousarray(keys, dtype=np.int64),
            np.ascontiguousarray(times_us, dtype=np.int64),
            np.ascontiguousarray(ok, dtype=np.bool_),
            np.int64(-1 if ttl is None else ttl),
            row,
            reason,
            out.view(np.uint64).reshape(n, words),
        )
    return row, reason, out


def gather_versions(
    versions: GroupVersions, rows: np.ndarray, records: np.ndarray
) -> tuple[dict[str, FeatureColumn], np.ndarray]:
    """The features and event times of matched versions, from :func:`match_as_of`'s output.

    Args:
        versions: The group's versions.
        rows: Per example, the matched row (-1: none).
        records: Per example, the matched record (zeros: none).

    Returns:
        ``(columns, event_us)``: one column per feature of ``versions`` (null where no match) and
        the event time per example (0 where no match).
    """
    n = rows.shape[0]
    out: dict[str, FeatureColumn] = {}
    for i, spec in enumerate(versions.specs()):
        if spec.fixed_width:
            # Copies (never views): the records may be a buffer the caller reuses.
            values = records[f"v{i}"].copy()
            out[spec.name] = FeatureColumn(spec, values, records[f"m{i}"].copy())
            continue
        col = versions.var_columns[spec.name]
        assert col.offsets is not None
        valid = np.zeros(n, dtype=bool)
        offsets = _var_counts(col.offsets, col.valid, rows, valid)
        values = np.empty(int(offsets[-1]), dtype=col.values.dtype)
        _var_copy(col.offsets, col.values, rows, offsets, values)
        out[spec.name] = FeatureColumn(spec, values, valid, offsets)
    return out, records["event"].copy()


def _range_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[i], starts[i] + lengths[i])`` over i, without a loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    excl = np.cumsum(lengths) - lengths
    return np.repeat(starts - excl, lengths) + np.arange(total, dtype=np.int64)


def take_columns(
    columns: Mapping[str, FeatureColumn], features: Sequence[str], rows: np.ndarray
) -> dict[str, FeatureColumn]:
    """Gather rows of decoded columns: output row i is ``rows[i]`` of the input, or null where
    ``rows[i] < 0`` (the seek path's gather; the scan path uses :func:`gather_versions`).

    Args:
        columns: Decoded columns (all of one length m).
        features: Names to gather, in output order.
        rows: int64 indices into the columns, -1 for null.

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
        valid = hit & col.valid[safe]
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
