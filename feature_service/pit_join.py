"""Point-in-time join of training examples with feature groups, to parquet or streamed as batches.

For each example row (entity ids and an example time ``t``) and each joined group, the join attaches
the group's newest version with ``t - ttl <= event_time <= t``; among versions with the same event
time the newest ``created_time`` wins (a correction replaces the value it corrects). Both bounds are
inclusive: a version stamped exactly at ``t`` is visible (it happened by then), and one exactly
``ttl`` old is still live; this is :meth:`FeatureStore.get_as_of`'s rule and Feast's
(``event_timestamp >= entity_timestamp - ttl``). Nothing from the future is ever used.

It is a left join that never drops or reorders an example: every input row comes out once, in input
order, with all its columns; a group's features are null where nothing qualifies, and each such row
is counted by reason (:class:`GroupJoinCounts`): ``null_key`` (the example's entity id or time is
null), ``no_entity`` (the store has no version of the entity), ``future_only`` (every version is
newer than ``t``) and ``expired`` (the newest version at ``t`` is older than the TTL). Feast's file
offline store instead drops examples whose entity has only future rows.

Output columns: the example's columns, then per group ``<prefix><separator><feature>`` (default
``<group>__<feature>``) for each joined feature, and optionally ``<prefix><separator>event_ts`` (the
event time of the version used, ``timestamp[us, UTC]``). Names that collide with an example column
are refused. Feature types: int64, float32, float64, bool, ``large_string``, ``large_list<T>`` for
LIST and ``fixed_size_list<T>[dim]`` for VECTOR features.

How it runs (bounded memory, two paths chosen per group):

* Examples are read in record batches of ``batch_rows`` rows and joined batch by batch; output
  batches are yielded (:func:`iter_joined_batches`, for training without a joined copy) or written
  with a ParquetWriter to a temporary file renamed into place (:func:`join_to_parquet`), so a
  failure leaves no output and an existing file untouched.
* Scan path (:mod:`feature_service.pit_versions`): the group's versions are read once with a
  sequential scan (~1 us per version: the rocksdict binding builds one ``bytes`` per key and per
  value, then the codec decodes them in bulk) and kept in a :class:`VersionCache` for every later
  batch, and for later joins (pass the same cache to the next epoch). An example is matched with a
  hash lookup and a binary search in a compiled kernel that also copies the version's fixed-width
  features (one row-major record), so nothing is sorted. Cached groups together stay within
  ``memory_budget_bytes`` (default 2 GiB); a group that does not fit uses the seek path.
* Seek path (:mod:`feature_service.pit_seek`): per batch, queries sorted by (entity, time) are read
  with one iterator and monotone seeks (~6-8 us each with the decode) and put back in input
  order.
* Snapshots (:mod:`feature_service.pit_snapshot`): ``.npy`` copies of a group's versions, valid
  while the group's generation (replaced by every write to it) is unchanged. The store's writers
  keep its own snapshots current (bulk ingest refreshes the groups it wrote), so a join in a new
  process reads files instead of scanning; with ``snapshot_dir``, the groups a join scans are also
  written there for later joins.
* ``JoinStrategy.AUTO`` scans a group when reading all of its versions is cheaper than seeking once
  per example still to join (the total row count is known for parquet files and tables; for a
  stream, it switches to the scan once the rows seen so far would have paid for it).

Memory: the cached groups (at most ``memory_budget_bytes``; a scan transiently needs up to twice a
group's decoded size), plus a few copies of one batch of examples and its joined columns.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from adrank.errors import AdrankError, InputError, NotFoundError
from adrank.formats import atomic_path
from adrank.hashing import id_keys_from_arrow
from feature_service.pit_seek import seek_as_of
from feature_service.pit_snapshot import load_snapshot, save_snapshot, store_snapshot_dir
from feature_service.pit_versions import (
    GroupVersions,
    MatchReason,
    estimate_decoded_bytes,
    estimate_versions,
    gather_versions,
    match_as_of,
    scan_group_versions,
    take_columns,
)
from feature_service.schema import RESERVED_NAMES
from feature_service.store import FeatureStore
from feature_service.types import Dtype, EntityIdKind, FeatureColumn, FeatureSpec, Shape

__all__ = [
    "DEFAULT_JOIN_BATCH_ROWS",
    "DEFAULT_JOIN_MEMORY_BYTES",
    "DEFAULT_SEPARATOR",
    "EVENT_TS_COLUMN",
    "JOIN_TIMESTAMP_UNITS",
    "JoinStrategy",
    "JoinSpec",
    "GroupJoinCounts",
    "JoinReport",
    "VersionCache",
    "Examples",
    "JoinedBatches",
    "iter_joined_batches",
    "join_to_parquet",
    "feature_arrow_type",
]

logger = logging.getLogger(__name__)

DEFAULT_JOIN_BATCH_ROWS = 65_536
"""Example rows joined per batch: large enough to amortise per-batch costs (a few hundred us per
group), small enough that a batch and its joined columns stay in the tens of MB."""
DEFAULT_JOIN_MEMORY_BYTES = 2 << 30
"""Budget for the decoded versions of scanned groups (2 GiB), shared by every group of a join."""
DEFAULT_SEPARATOR = "__"
"""Between a group's prefix and a feature name in output column names."""
EVENT_TS_COLUMN = "event_ts"
"""Suffix of the optional per-group column holding the event time of the version used."""
JOIN_TIMESTAMP_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}
"""Units an integer example-time column may be in, and their factor to microseconds (ns divides,
rounding down)."""

# Cost model of JoinStrategy.AUTO, in microseconds, measured on a 2-core machine (rocksdict 0.3):
# a sequential scan reads and decodes a version in ~1 us, a seek and its decode take ~6-8 us.
_SCAN_US_PER_VERSION = 1.0
_SNAPSHOT_US_PER_VERSION = 0.1  # loading .npy files (page cache or a fast disk)
_SEEK_US_PER_ROW = 7.0

_TS_US = pa.timestamp("us", tz="UTC")
_MAX_ABS_US = np.iinfo(np.int64).max

_ARROW_SCALAR = {
    Dtype.INT64: pa.int64(),
    Dtype.FLOAT32: pa.float32(),
    Dtype.FLOAT64: pa.float64(),
    Dtype.BOOL: pa.bool_(),
}


class JoinStrategy(enum.Enum):
    """How a group's versions are read (see the module docstring)."""

    AUTO = "auto"
    """Scan when cheaper than seeking for the rows to join and within the memory budget."""
    SCAN = "scan"
    """Scan every group (a group over the memory budget falls back to seeking, with a warning)."""
    SEEK = "seek"
    """Seek per example; never cache a group."""


@dataclass(frozen=True, slots=True)
class JoinSpec:
    """One feature group to join.

    Args:
        group: Registered group name.
        entity_column: Example column holding the group's entity ids (ints for an int group,
            strings for a string group).
        features: Features to attach (default: all, in schema order).
        prefix: Output column prefix (default: the group name).
    """

    group: str
    entity_column: str
    features: tuple[str, ...] | None = None
    prefix: str | None = None

    @property
    def output_prefix(self) -> str:
        """The prefix output columns get."""
        return self.group if self.prefix is None else self.prefix


@dataclass(frozen=True, slots=True)
class GroupJoinCounts:
    """What the join did for one :class:`JoinSpec`.

    Args:
        group: Group name.
        prefix: Output prefix.
        entity_column: Example column joined on.
        rows: Example rows joined.
        matched: Rows that got a version.
        null_key: Rows with a null entity id or example time (features null).
        no_entity: Rows whose entity has no version in the store.
        future_only: Rows whose entity has only versions newer than the example.
        expired: Rows whose newest version at the example time is older than the TTL.
        strategy: How the group was read: ``scan`` (from RocksDB), ``memory`` (versions cached by
            an earlier join), ``snapshot`` (loaded from a snapshot), ``seek``; two joined by ``+``
            when it switched (``seek+scan``).
        seeks: RocksDB seeks made (seek path).
        versions_scanned: Versions read by the scan (0 when reused from a cache or not scanned).
    """

    group: str
    prefix: str
    entity_column: str
    rows: int
    matched: int
    null_key: int
    no_entity: int
    future_only: int
    expired: int
    strategy: str
    seeks: int
    versions_scanned: int

    @property
    def missing(self) -> int:
        """Rows left null (every reason)."""
        return self.rows - self.matched


@dataclass(frozen=True, slots=True)
class JoinReport:
    """Counts and timings of a join.

    Args:
        rows: Example rows read and written (every one of them).
        batches: Record batches joined.
        groups: One entry per :class:`JoinSpec`, in spec order.
        elapsed_s: Wall time from the first batch read to the last one joined (seconds).
        timings_s: Where the time went: ``read`` (examples), ``scan`` (group scans, snapshot
            loads and writes, cache checks), ``match``
            (as-of matching and seeks), ``gather`` (feature columns to Arrow), ``write`` (parquet
            output, :func:`join_to_parquet` only).
    """

    rows: int
    batches: int
    groups: tuple[GroupJoinCounts, ...]
    elapsed_s: float
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        """Example rows joined per second of ``elapsed_s``."""
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0


class VersionCache:
    """Decoded group versions kept across batches and across joins, within a byte budget.

    Pass one cache to several joins (e.g. one per training epoch) to scan each group once. An entry
    is reused only while its group's generation is unchanged (any write to the group invalidates
    it) and its group schema is the same. A cache that misses loads a valid snapshot instead of
    scanning: first from ``directory``, then from the store's own snapshots (kept current by its
    writers, see :mod:`feature_service.pit_snapshot`). With a ``directory``, every group scanned is
    also written there. Thread-safe: entries are immutable and the index is guarded by a lock.

    Args:
        budget_bytes: Most bytes of decoded versions held at once (all groups together).
        directory: Snapshot directory (created on first write), or None for memory only.
        store_snapshots: Load the store's own snapshots when current (False: scan RocksDB instead,
            e.g. to measure the scan).
    """

    def __init__(
        self,
        budget_bytes: int = DEFAULT_JOIN_MEMORY_BYTES,
        directory: str | os.PathLike[str] | None = None,
        *,
        store_snapshots: bool = True,
    ) -> None:
        if budget_bytes < 0:
            raise InputError(
                f"memory budget must be >= 0 bytes, found {budget_bytes}", source="budget_bytes"
            )
        if directory is not None and Path(directory).exists() and not Path(directory).is_dir():
            raise InputError(
                "snapshot directory exists and is not a directory",
                source=str(directory),
                hint="pass a directory path (created if missing)",
            )
        self.budget_bytes = int(budget_bytes)
        self.directory = None if directory is None else Path(directory)
        self.store_snapshots = store_snapshots
        self._entries: dict[tuple[str, str], GroupVersions] = {}
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        """Bytes held by the cached versions."""
        with self._lock:
            return self._used()

    def _used(self) -> int:
        return sum(v.nbytes for v in self._entries.values())

    def clear(self) -> None:
        """Drop every entry held in memory (snapshots on disk stay)."""
        with self._lock:
            self._entries.clear()

    def get(self, store: FeatureStore, group: str, features: Sequence[str]) -> GroupVersions | None:
        """A valid copy holding at least ``features``, from memory or (loaded into memory) from a
        snapshot, or None. A stale entry is dropped."""
        return self.lookup(store, group, features)[0]

    def lookup(
        self,
        store: FeatureStore,
        group: str,
        features: Sequence[str],
        *,
        snapshots: bool = True,
    ) -> tuple[GroupVersions | None, str]:
        """:meth:`get`, also saying where the copy came from: ``memory``, ``snapshot`` or ``""``
        (none). ``snapshots=False`` looks in memory only."""
        key = (store.path, group)
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None:
            if (
                entry.generation == store.generation(group)
                and entry.group == store.group(group)
                and set(features) <= set(entry.features)
            ):
                return entry, "memory"
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
        own = store_snapshot_dir(store) if self.store_snapshots else None
        for directory in (self.directory, own):
            if directory is None or not snapshots:
                continue
            loaded = load_snapshot(directory, store, group, tuple(features))
            if loaded is not None:
                return (loaded, "snapshot") if self._keep(key, loaded) else (None, "")
        return None, ""

    def put(self, store: FeatureStore, versions: GroupVersions) -> bool:
        """Keep ``versions`` if they fit the remaining budget (and write their snapshot when the
        cache has a directory); return whether they were kept in memory."""
        key = (store.path, versions.group.name)
        if not self._keep(key, versions):
            return False
        if self.directory is not None:
            save_snapshot(self.directory, store, versions)
        return True

    def _keep(self, key: tuple[str, str], versions: GroupVersions) -> bool:
        with self._lock:
            self._entries.pop(key, None)
            if self._used() + versions.nbytes > self.budget_bytes:
                return False
            self._entries[key] = versions
            return True

    def remaining_bytes(self) -> int:
        """Budget left."""
        return max(0, self.budget_bytes - self.used_bytes)


# ---------------------------------------------------------------------- output schema


def feature_arrow_type(spec: FeatureSpec) -> pa.DataType:
    """Arrow type of a feature in joined output (see the module docstring)."""
    if spec.dtype is Dtype.STRING:
        return pa.large_string()
    inner = _ARROW_SCALAR[spec.dtype]
    if spec.shape is Shape.VECTOR:
        return pa.list_(inner, spec.dim)
    if spec.shape is Shape.LIST:
        return pa.large_list(inner)
    return inner


@dataclass(frozen=True, slots=True)
class _Resolved:
    """A validated spec: its group's features and output column names."""

    spec: JoinSpec
    kind: EntityIdKind
    features: tuple[FeatureSpec, ...]
    names: tuple[str, ...]
    event_name: str | None


# ---------------------------------------------------------------------- examples sources

Examples: TypeAlias = str | os.PathLike[str] | pa.Table | pa.RecordBatchReader
"""What the join reads examples from: a parquet file path, an Arrow table, or a record batch
reader (read once)."""


@dataclass(frozen=True, slots=True, eq=False)
class _Source:
    schema: pa.Schema
    num_rows: int | None
    batches: Callable[[], Iterator[pa.RecordBatch]]
    name: str


def _open_examples(examples: Examples, batch_rows: int) -> _Source:
    if isinstance(examples, pa.Table):
        table = examples
        return _Source(
            table.schema,
            table.num_rows,
            lambda: iter(table.to_batches(max_chunksize=batch_rows)),
            "<table>",
        )
    if isinstance(examples, pa.RecordBatchReader):
        reader = examples

        def from_reader() -> Iterator[pa.RecordBatch]:
            for batch in reader:
                for start in range(0, batch.num_rows, batch_rows):
                    yield batch.slice(start, batch_rows)

        return _Source(reader.schema, None, from_reader, "<reader>")
    path = str(examples)
    if not Path(path).exists():
        raise NotFoundError("examples file does not exist", source=path)
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        num_rows = pf.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"cannot read the examples as parquet: {exc}",
            source=path,
            hint="pass a parquet file of training examples",
        ) from exc

    def from_file() -> Iterator[pa.RecordBatch]:
        try:
            yield from pf.iter_batches(batch_size=batch_rows)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"cannot read parquet data: {exc}", source=path, hint="the file may be corrupt"
            ) from exc

    return _Source(schema, num_rows, from_file, path)


# ---------------------------------------------------------------------- validation


def _entity_problem(t: pa.DataType, kind: EntityIdKind) -> str | None:
    if pa.types.is_dictionary(t):
        t = t.value_type
    is_int = pa.types.is_integer(t)
    is_str = pa.types.is_string(t) or pa.types.is_large_string(t)
    if kind is EntityIdKind.INT and not is_int:
        return f"has type {t}, but the group's entity ids are integers"
    if kind is EntityIdKind.STRING and not is_str:
        return f"has type {t}, but the group's entity ids are strings"
    return None


def _resolve(
    store: FeatureStore,
    source: _Source,
    specs: Sequence[JoinSpec],
    timestamp_column: str,
    separator: str,
    include_event_ts: bool,
) -> tuple[_Resolved, ...]:
    """Check everything before any work; raise one error naming every problem."""
    problems: list[AdrankError] = []
    schema = source.schema
    names = set(schema.names)
    where = source.name

    def col_src(col: str) -> str:
        return f"{where}:{col}"

    if not specs:
        problems.append(
            InputError("no feature groups to join", source="groups", hint="pass --groups NAME")
        )
    if timestamp_column not in names:
        problems.append(
            InputError(
                f"timestamp column {timestamp_column!r} not found; columns are: "
                f"{', '.join(schema.names)}",
                source=col_src(timestamp_column),
                hint="pass the examples' time column as --timestamp-column",
            )
        )
    else:
        t = schema.field(timestamp_column).type
        if not (pa.types.is_timestamp(t) or pa.types.is_integer(t)):
            problems.append(
                InputError(
                    f"timestamp column {timestamp_column!r} has type {t}; expected a timestamp or "
                    "an integer",
                    source=col_src(timestamp_column),
                    hint="cast it to a timestamp, or pass integers with --timestamp-unit",
                )
            )
    resolved: list[_Resolved] = []
    taken: dict[str, str] = {}  # output column -> what produced it
    registered = {g.name: g for g in store.groups()}
    for spec in specs:
        g = registered.get(spec.group)
        if g is None:
            problems.append(
                NotFoundError(
                    f"no feature group {spec.group!r} in the store; registered groups: "
                    f"{', '.join(sorted(registered)) or '(none)'}",
                    source=spec.group,
                    hint="ingest it first (adrank ingest --group NAME ...)",
                )
            )
            continue
        if spec.entity_column not in names:
            problems.append(
                InputError(
                    f"entity column {spec.entity_column!r} of group {spec.group!r} not found; "
                    f"columns are: {', '.join(schema.names)}",
                    source=col_src(spec.entity_column),
                    hint="name the column with --groups GROUP=COLUMN or --entity-column",
                )
            )
        else:
            p = _entity_problem(schema.field(spec.entity_column).type, g.entity_id_kind)
            if p:
                problems.append(
                    InputError(
                        f"entity column {spec.entity_column!r} of group {spec.group!r} {p}",
                        source=col_src(spec.entity_column),
                        hint="join on a column of the group's id type, or cast it",
                    )
                )
        wanted = g.feature_names if spec.features is None else spec.features
        unknown = [f for f in wanted if f not in g.feature_names]
        if unknown:
            problems.append(
                NotFoundError(
                    f"feature group {g.name!r} has no feature(s) {unknown}; it has: "
                    f"{', '.join(g.feature_names)}",
                    source=f"{g.name}.{unknown[0]}",
                )
            )
            continue
        if spec.features is not None and len(set(spec.features)) != len(spec.features):
            problems.append(
                InputError(f"features of group {g.name!r} repeat a name", source=g.name)
            )
            continue
        feats = tuple(g.feature(f) for f in wanted)
        prefix = spec.output_prefix
        out_names = tuple(f"{prefix}{separator}{f.name}" for f in feats)
        event_name = f"{prefix}{separator}{EVENT_TS_COLUMN}" if include_event_ts else None
        for out in out_names + ((event_name,) if event_name else ()):
            clash = "an example column" if out in names else taken.get(out)
            if clash:
                problems.append(
                    InputError(
                        f"output column {out!r} of group {g.name!r} collides with {clash}",
                        source=out,
                        hint="give the group another prefix (--prefix GROUP=PREFIX) or separator",
                    )
                )
            taken[out] = f"a column of group {g.name!r}"
        resolved.append(_Resolved(spec, g.entity_id_kind, feats, out_names, event_name))
    if problems:
        if len(problems) == 1:
            raise problems[0]
        raise InputError.from_problems(
            [
                p
                if isinstance(p, InputError)
                else InputError(p.message, source=p.source, hint=p.hint)
                for p in problems
            ]
        )
    assert not (RESERVED_NAMES & {f.name for r in resolved for f in r.features})
    return tuple(resolved)


def _output_schema(schema: pa.Schema, resolved: Sequence[_Resolved]) -> pa.Schema:
    fields = list(schema)
    for r in resolved:
        fields += [
            pa.field(n, feature_arrow_type(f)) for n, f in zip(r.names, r.features, strict=True)
        ]
        if r.event_name:
            fields.append(pa.field(r.event_name, _TS_US))
    return pa.schema(fields, metadata=schema.metadata)


# ---------------------------------------------------------------------- the join


def _times_us(
    arr: pa.Array, unit: str, source: str, column: str, row_base: int
) -> tuple[np.ndarray, np.ndarray]:
    """Example times as int64 microseconds (rounded down) and a validity mask."""
    valid = (
        np.ones(len(arr), dtype=bool)
        if arr.null_count == 0
        else pc.is_valid(arr).to_numpy(zero_copy_only=False)
    )
    if pa.types.is_timestamp(arr.type):
        unit = arr.type.unit
    try:
        raw = np.asarray(pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False))
    except pa.ArrowException as exc:  # e.g. uint64 times beyond int64
        raise InputError(
            f"cannot read example times in column {column!r} as int64: {exc}", source=source
        ) from exc
    factor = JOIN_TIMESTAMP_UNITS[unit]
    if factor is None:
        return raw // 1000, valid  # floor: a version at floor(t) is <= t, one after is not
    if factor != 1:
        limit = _MAX_ABS_US // factor
        bad = np.abs(raw) > limit
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"example time {int(raw[row])} ({unit}) in column {column!r}, row "
                f"{row_base + row}, does not fit int64 microseconds",
                source=source,
                hint="check --timestamp-unit",
            )
        raw = raw * factor
    return np.ascontiguousarray(raw, dtype=np.int64), valid


class _Joiner:
    """Joins batches for a fixed set of resolved specs; holds counters and per-group state."""

    def __init__(
        self,
        store: FeatureStore,
        resolved: tuple[_Resolved, ...],
        *,
        timestamp_column: str,
        timestamp_unit: str,
        strategy: JoinStrategy,
        cache: VersionCache,
        expected_rows: int | None,
        source_name: str,
    ) -> None:
        self.store = store
        self.resolved = resolved
        self.timestamp_column = timestamp_column
        self.timestamp_unit = timestamp_unit
        self.strategy = strategy
        self.cache = cache
        self.expected_rows = expected_rows
        self.source_name = source_name
        self.rows = 0
        self.batches = 0
        self.timings = {"read": 0.0, "scan": 0.0, "match": 0.0, "gather": 0.0}
        self.counts = [np.zeros(MatchReason.COUNT, dtype=np.int64) for _ in resolved]
        self.seeks = [0] * len(resolved)
        self.paths: list[set[str]] = [set() for _ in resolved]
        self.scanned: dict[str, int] = {}
        # group -> versions in memory, or None to seek (decided per group, once scanned for good).
        self.versions: dict[str, GroupVersions | None] = {}
        self.features_by_group: dict[str, tuple[str, ...]] = {}
        for r in resolved:
            have = self.features_by_group.get(r.spec.group, ())
            extra = tuple(f.name for f in r.features if f.name not in have)
            self.features_by_group[r.spec.group] = have + extra
        self.num_versions: dict[str, int] = {}
        self.buffers: dict[int, np.ndarray] = {}
        self.sources: dict[str, str] = {}  # group -> scan, memory or snapshot

    # -- strategy

    def _want_scan(self, group: str, rows_ahead: int) -> bool:
        return self._worth_reading_all(group, rows_ahead, _SCAN_US_PER_VERSION)

    def _worth_reading_all(self, group: str, rows_ahead: int, us_per_version: float) -> bool:
        """Reading every version of ``group`` at ``us_per_version`` beats seeking per example."""
        if self.strategy is JoinStrategy.SEEK:
            return False
        if self.strategy is JoinStrategy.SCAN:
            return True
        v = self.num_versions.get(group)
        if v is None:
            v = self.num_versions[group] = estimate_versions(self.store, group)
        return v * us_per_version <= rows_ahead * _SEEK_US_PER_ROW

    def _plan(self, rows_ahead: int) -> None:
        """Load (scan, or reuse from the cache or a snapshot) every undecided group worth it."""
        start = time.perf_counter()
        todo = []
        for group, feats in self.features_by_group.items():
            if group in self.versions:
                continue
            load = self._worth_reading_all(group, rows_ahead, _SNAPSHOT_US_PER_VERSION)
            cached, source = self.cache.lookup(self.store, group, feats, snapshots=load)
            if cached is not None:
                self.versions[group] = cached
                self.sources[group] = source
                continue
            if self._want_scan(group, rows_ahead):
                todo.append(group)
        if not todo:
            self.timings["scan"] += time.perf_counter() - start
            return
        budget = self.cache.remaining_bytes()
        fits = []
        for group in todo:
            feats = self.features_by_group[group]
            num = self.num_versions.get(group)
            if num is None:
                num = self.num_versions[group] = estimate_versions(self.store, group)
            est = estimate_decoded_bytes(self.store, group, feats, num)
            if est > budget:
                self._over_budget(group, est)
                continue
            budget -= est
            fits.append(group)

        # One group after another: two scans in threads were no faster on 2 cores (the binding
        # holds the GIL while it builds each key and value).
        results = [
            scan_group_versions(
                self.store,
                group,
                self.features_by_group[group],
                budget_bytes=self.cache.remaining_bytes(),
            )
            for group in fits
        ]
        for group, versions in zip(fits, results, strict=True):
            if versions is None or not self.cache.put(self.store, versions):
                self._over_budget(group, None if versions is None else versions.nbytes)
                continue
            self.versions[group] = versions
            self.sources[group] = "scan"
            self.scanned[group] = versions.num_versions
        self.timings["scan"] += time.perf_counter() - start

    def _over_budget(self, group: str, nbytes: int | None) -> None:
        size = "more than the budget" if nbytes is None else f"~{nbytes / 1e6:.0f} MB"
        log = logger.warning if self.strategy is JoinStrategy.SCAN else logger.info
        log(
            "group %s: decoded versions need %s, over the join's memory budget (%.0f MB left); "
            "seeking per example instead",
            group,
            size,
            self.cache.remaining_bytes() / 1e6,
        )
        self.versions[group] = None

    # -- one batch

    def join(self, batch: pa.RecordBatch, out_schema: pa.Schema) -> pa.RecordBatch:
        n = batch.num_rows
        if self.strategy is not JoinStrategy.SEEK:
            if self.expected_rows is not None:
                ahead = max(self.expected_rows - self.rows, n)
            else:
                ahead = self.rows + n  # a stream of unknown length: scan once seeking paid for it
            self._plan(ahead)
        times, t_ok = _times_us(
            batch.column(self.timestamp_column),
            self.timestamp_unit,
            f"{self.source_name}:{self.timestamp_column}",
            self.timestamp_column,
            self.rows,
        )
        arrays: list[pa.Array] = list(batch.columns)
        for i, r in enumerate(self.resolved):
            spec = r.spec
            ids = batch.column(spec.entity_column)
            if pa.types.is_dictionary(ids.type) and pa.types.is_integer(ids.type.value_type):
                ids = ids.dictionary_decode()
            try:
                keys, k_ok = id_keys_from_arrow(ids)
            except (TypeError, pa.ArrowException) as exc:
                raise InputError(
                    f"cannot read entity ids: {exc}",
                    source=f"{self.source_name}:{spec.entity_column}",
                ) from exc
            ok = k_ok & t_ok
            names = [f.name for f in r.features]
            versions = self.versions.get(spec.group)
            tm = time.perf_counter()
            if versions is not None:
                # One records buffer per spec, reused by every batch: fresh pages per batch cost
                # more than the copy into them.
                buf = self.buffers.get(i)
                if buf is None or buf.dtype != versions.records.dtype or buf.shape[0] < n:
                    buf = self.buffers[i] = np.empty(n, dtype=versions.records.dtype)
                row, reason, records = match_as_of(versions, keys, times, ok, out=buf)
                tg = time.perf_counter()
                gathered, event_us = gather_versions(versions, row, records)
                self.paths[i].add(self.sources.get(spec.group, "scan"))
            else:
                res = seek_as_of(self.store, spec.group, names, keys, times, ok)
                row, reason = res.row, res.reason
                tg = time.perf_counter()
                gathered = take_columns(res.columns, names, row)
                event_us = np.zeros(n, dtype=np.int64)
                if res.event_us.shape[0]:
                    event_us = res.event_us[np.where(row >= 0, row, 0)]
                self.seeks[i] += res.seeks
                self.paths[i].add("seek")
            self.timings["match"] += tg - tm
            self.counts[i] += np.bincount(reason, minlength=MatchReason.COUNT)
            for name, f in zip(r.names, r.features, strict=True):
                arrays.append(_to_arrow(gathered[f.name], out_schema.field(name).type))
            if r.event_name:
                arrays.append(pa.array(event_us, pa.int64(), mask=row < 0).cast(_TS_US))
            self.timings["gather"] += time.perf_counter() - tg
        self.rows += n
        self.batches += 1
        return pa.RecordBatch.from_arrays(arrays, schema=out_schema)

    def report(self, elapsed_s: float, extra: dict[str, float] | None = None) -> JoinReport:
        groups = []
        for i, r in enumerate(self.resolved):
            c = self.counts[i].tolist()
            path = self.paths[i]
            order = ("seek", "scan", "memory", "snapshot")
            strategy = "+".join(p for p in order if p in path) or "none"
            groups.append(
                GroupJoinCounts(
                    group=r.spec.group,
                    prefix=r.spec.output_prefix,
                    entity_column=r.spec.entity_column,
                    rows=self.rows,
                    matched=c[MatchReason.MATCHED],
                    null_key=c[MatchReason.NULL_KEY],
                    no_entity=c[MatchReason.NO_ENTITY],
                    future_only=c[MatchReason.FUTURE_ONLY],
                    expired=c[MatchReason.EXPIRED],
                    strategy=strategy,
                    seeks=self.seeks[i],
                    versions_scanned=self.scanned.get(r.spec.group, 0),
                )
            )
        timings = dict(self.timings)
        if extra:
            timings.update(extra)
        return JoinReport(self.rows, self.batches, tuple(groups), elapsed_s, timings)


def _to_arrow(col: FeatureColumn, want: pa.DataType) -> pa.Array:
    arr = col.to_arrow()
    return arr if arr.type == want else arr.cast(want)


class JoinedBatches(Iterator[pa.RecordBatch]):
    """Iterator over joined record batches (see :func:`iter_joined_batches`).

    Every batch has :attr:`schema`; :attr:`report` counts what was joined so far (complete once the
    iterator is exhausted).
    """

    def __init__(self, joiner: _Joiner, source: _Source, schema: pa.Schema) -> None:
        self._joiner = joiner
        self._source = source
        self._schema = schema
        self._batches: Iterator[pa.RecordBatch] | None = None
        self._elapsed = 0.0

    @property
    def schema(self) -> pa.Schema:
        """Output schema: the example columns, then the joined feature columns."""
        return self._schema

    @property
    def report(self) -> JoinReport:
        """Counts and timings so far."""
        return self._joiner.report(self._elapsed)

    def __iter__(self) -> JoinedBatches:
        return self

    def __next__(self) -> pa.RecordBatch:
        start = time.perf_counter()
        try:
            if self._batches is None:
                self._batches = self._source.batches()
            t0 = time.perf_counter()
            batch = next(self._batches)
            self._joiner.timings["read"] += time.perf_counter() - t0
            if batch.schema != self._source.schema:
                batch = pa.RecordBatch.from_arrays(batch.columns, schema=self._source.schema)
            return self._joiner.join(batch, self._schema)
        finally:
            self._elapsed += time.perf_counter() - start


def iter_joined_batches(
    store: FeatureStore,
    examples: Examples,
    specs: Sequence[JoinSpec],
    *,
    timestamp_column: str,
    timestamp_unit: str = "s",
    batch_rows: int = DEFAULT_JOIN_BATCH_ROWS,
    separator: str = DEFAULT_SEPARATOR,
    include_event_ts: bool = False,
    strategy: JoinStrategy = JoinStrategy.AUTO,
    cache: VersionCache | None = None,
    memory_budget_bytes: int = DEFAULT_JOIN_MEMORY_BYTES,
    snapshot_dir: str | os.PathLike[str] | None = None,
) -> JoinedBatches:
    """Join examples with feature groups point-in-time, yielding Arrow record batches.

    Nothing is written: a training loop can consume the batches directly. Validation happens here,
    before the first batch is read; joining happens as the iterator is advanced. See the module
    docstring for the rule, the output columns and the memory bound.

    Args:
        store: An open store (read-only is enough).
        examples: A parquet file path, an Arrow table or a record batch reader.
        specs: Groups to join, each on its entity column.
        timestamp_column: Example time column (a timestamp of any unit, or an integer).
        timestamp_unit: Unit of an integer time column: ``s``, ``ms``, ``us`` or ``ns``.
        batch_rows: Example rows per output batch (a file's row groups may cut batches shorter).
        separator: Between a spec's prefix and a feature name in output names.
        include_event_ts: Add ``<prefix><separator>event_ts`` per spec.
        strategy: How groups are read.
        cache: Decoded versions to reuse and fill (pass the same one to later joins); default: a
            new cache with ``memory_budget_bytes`` and ``snapshot_dir``.
        memory_budget_bytes: Budget of the default cache (not allowed with ``cache``).
        snapshot_dir: Snapshot directory of the default cache (not allowed with ``cache``): groups
            scanned are written there, and later joins of the unchanged store load them instead
            of scanning (see :mod:`feature_service.pit_snapshot`).

    Returns:
        The iterator of joined batches, with ``schema`` and ``report``.

    Raises:
        NotFoundError: The examples file, a group or a feature does not exist.
        InputError: A missing or mistyped column, a name collision, a bad argument (every problem
            at once, naming file and column). Reading a corrupt file may raise it while iterating.
        StoreError: RocksDB failed (while iterating).
    """
    if batch_rows <= 0:
        raise InputError(f"batch_rows must be positive, found {batch_rows}", source="batch_rows")
    if timestamp_unit not in JOIN_TIMESTAMP_UNITS:
        raise InputError(
            f"timestamp unit must be one of {', '.join(JOIN_TIMESTAMP_UNITS)}, found "
            f"{timestamp_unit!r}",
            source="timestamp_unit",
        )
    if cache is not None and (
        snapshot_dir is not None or memory_budget_bytes != DEFAULT_JOIN_MEMORY_BYTES
    ):
        raise InputError(
            "pass either a cache or memory_budget_bytes / snapshot_dir, not both",
            source="cache",
            hint="give the VersionCache its budget and directory",
        )
    if cache is None:
        cache = VersionCache(memory_budget_bytes, snapshot_dir)
    source = _open_examples(examples, batch_rows)
    resolved = _resolve(store, source, specs, timestamp_column, separator, include_event_ts)
    schema = _output_schema(source.schema, resolved)
    joiner = _Joiner(
        store,
        resolved,
        timestamp_column=timestamp_column,
        timestamp_unit=timestamp_unit,
        strategy=strategy,
        cache=cache,
        expected_rows=source.num_rows,
        source_name=source.name,
    )
    return JoinedBatches(joiner, source, schema)


def join_to_parquet(
    store: FeatureStore,
    examples: Examples,
    output: str | os.PathLike[str],
    specs: Sequence[JoinSpec],
    *,
    timestamp_column: str,
    timestamp_unit: str = "s",
    batch_rows: int = DEFAULT_JOIN_BATCH_ROWS,
    separator: str = DEFAULT_SEPARATOR,
    include_event_ts: bool = False,
    strategy: JoinStrategy = JoinStrategy.AUTO,
    cache: VersionCache | None = None,
    memory_budget_bytes: int = DEFAULT_JOIN_MEMORY_BYTES,
    snapshot_dir: str | os.PathLike[str] | None = None,
    compression: str = "snappy",
    progress: Callable[[int], None] | None = None,
) -> JoinReport:
    """Join examples with feature groups point-in-time into a parquet file, atomically.

    Streams: one batch of examples at a time is read, joined and written. The file is written to a
    temporary path beside ``output`` and renamed into place at the end, so a failure leaves no
    output and an existing ``output`` unchanged.

    Args:
        store: An open store.
        examples: Parquet path, Arrow table or record batch reader.
        output: Output parquet path (must not be the examples file).
        specs, timestamp_column, timestamp_unit, batch_rows, separator, include_event_ts, strategy,
            cache, memory_budget_bytes, snapshot_dir: As for :func:`iter_joined_batches`.
        compression: Parquet compression codec.
        progress: Called with the number of example rows after each batch is written.

    Returns:
        Counts per group and timings (``write`` included).

    Raises:
        NotFoundError, InputError, StoreError: As for :func:`iter_joined_batches`.
        AdrankError: The output could not be written (nothing is left behind).
    """
    out = Path(output)
    if not isinstance(examples, (pa.Table, pa.RecordBatchReader)):
        src = Path(examples)
        if src.exists() and out.exists() and src.resolve() == out.resolve():
            raise InputError(
                "the output path is the examples file; it would be replaced",
                source=str(out),
                hint="write the joined examples to another file",
            )
    batches = iter_joined_batches(
        store,
        examples,
        specs,
        timestamp_column=timestamp_column,
        timestamp_unit=timestamp_unit,
        batch_rows=batch_rows,
        separator=separator,
        include_event_ts=include_event_ts,
        strategy=strategy,
        cache=cache,
        memory_budget_bytes=memory_budget_bytes,
        snapshot_dir=snapshot_dir,
    )
    start = time.perf_counter()
    write_s = 0.0
    with atomic_path(out, suffix=".parquet") as tmp:
        try:
            writer = pq.ParquetWriter(str(tmp), batches.schema, compression=compression)
        except (pa.ArrowException, OSError) as exc:
            raise AdrankError(f"cannot write the joined parquet: {exc}", source=str(out)) from exc
        try:
            for batch in batches:
                t0 = time.perf_counter()
                writer.write_batch(batch)
                write_s += time.perf_counter() - t0
                if progress is not None:
                    progress(batch.num_rows)
            t0 = time.perf_counter()
            writer.close()
            write_s += time.perf_counter() - t0
        except (pa.ArrowException, OSError) as exc:
            raise AdrankError(f"cannot write the joined parquet: {exc}", source=str(out)) from exc
        finally:
            writer.close()
    elapsed = time.perf_counter() - start
    report = batches._joiner.report(elapsed, {"write": write_s})
    logger.info(
        "joined %d example rows with %d group(s) into %s in %.2f s (%.0f rows/s): %s",
        report.rows,
        len(report.groups),
        out,
        elapsed,
        report.rows_per_s,
        "; ".join(
            f"{g.prefix}: {g.matched} matched, {g.missing} null ({g.strategy})"
            for g in report.groups
        ),
    )
    return report
