"""FeatureStore: the versioned feature store over RocksDB (rocksdict), usable without gRPC.

On-disk layout (one RocksDB database, raw byte keys and values, see :mod:`feature_service.keys` and
:mod:`feature_service.codec`):

* column family ``meta``: the store's format marker, each group's definition (versioned JSON) and
  the ingest checkpoints;
* per group ``versions:<group>``: every version, keyed ``[ver][entity][~event][~created]`` so that
  an as-of read is one seek;
* per group ``latest:<group>``: one row per entity holding a copy of its newest version, so that a
  latest read for hundreds of entities is one multi_get.

Every write is one RocksDB WriteBatch covering version rows, latest rows and (for ingest) the
checkpoint, so it is all or nothing across column families; the WAL makes a committed batch
survive a killed process. The latest row is updated only when the incoming
``(event_us, created_us)`` is at least the stored one, under a lock, so it always equals the first
version row of its entity.

Thread safety: reads may run from many threads; writes, registration and compaction serialise on an
internal lock. One process opens a store read-write at a time (RocksDB's lock); any number may open
it read-only (each sees the data as of its open).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    PlainTableFactoryOptions,
    Rdict,
    SliceTransform,
    WriteBatch,
)

from adrank.errors import AdrankError, InputError, NotFoundError, StoreError
from feature_service import keys as K
from feature_service.codec import DecodedValues, ValueCodec, check_columns, read_headers
from feature_service.schema import group_from_json, group_to_json, merge_group, validate_group
from feature_service.types import (
    CompactionReport,
    EntityIdKind,
    FeatureColumn,
    FeatureFrame,
    FeatureGroup,
    FeatureRead,
    FeatureSpec,
    GroupCompaction,
    GroupStats,
    IngestCheckpoint,
    RequestFeatures,
)

__all__ = [
    "FeatureStore",
    "VersionChunk",
    "VersionSeek",
    "DEFAULT_BLOCK_CACHE_BYTES",
    "DEFAULT_SCAN_CHUNK_VERSIONS",
    "DEFAULT_SAMPLE_VALUES",
    "STORE_FORMAT_VERSION",
    "entity_id_keys",
]

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_CACHE_BYTES = 256 << 20
"""Block cache shared by all column families (256 MiB): hot latest rows stay in memory."""
DEFAULT_SCAN_CHUNK_VERSIONS = 65_536
"""Versions pulled from RocksDB and decoded per chunk of :meth:`FeatureStore.scan_versions` (bounds
the scan's Python objects, ~150 bytes per undecoded key and value)."""
DEFAULT_SAMPLE_VALUES = 256
"""Values :meth:`FeatureStore.sample_value_bytes` reads by default."""
STORE_FORMAT_VERSION = 2
"""Version of the store as a whole (column-family naming, meta layout, table formats). 2: the
``latest:<group>`` families are PlainTable files (version 1 stores used block-based tables)."""

_STORE_KIND = "adrank.feature_store"
_META_CF = "meta"
_LATEST_CF_PREFIX = "latest:"
_BLOOM_BITS_PER_KEY = 10  # ~1% false positives: a missing entity rarely costs a disk read
_SCAN_CHUNK_KEYS = 65_536  # keys per vectorised decode / delete batch in scans


def _versions_cf(group: str) -> str:
    return f"versions:{group}"


def _latest_cf(group: str) -> str:
    return f"{_LATEST_CF_PREFIX}{group}"


def _is_latest_cf(name: str) -> bool:
    return name.startswith(_LATEST_CF_PREFIX)


@contextlib.contextmanager
def _rocks(action: str, path: str) -> Iterator[None]:
    """Convert rocksdict's exceptions (plain Exception subclasses) into StoreError."""
    try:
        yield
    except AdrankError:
        raise
    except Exception as exc:  # rocksdict raises bare Exception for every RocksDB status
        raise StoreError(f"RocksDB could not {action}: {exc}", source=path) from exc


class _GroupHandles:
    """Column families, WriteBatch handles and the codec of one group."""

    __slots__ = ("group", "codec", "versions", "latest", "versions_h", "latest_h")

    def __init__(
        self, group: FeatureGroup, versions: Rdict, latest: Rdict, versions_h: Any, latest_h: Any
    ) -> None:
        self.group = group
        self.codec = ValueCodec(group)
        self.versions = versions
        self.latest = latest
        self.versions_h = versions_h
        self.latest_h = latest_h


@dataclass(frozen=True, slots=True, eq=False)
class VersionChunk:
    """Consecutive stored versions of one group, in the store's key order, decoded: one step of
    :meth:`FeatureStore.scan_versions`.

    Example, entity 7 with versions at t=30 and t=10 (two at t=10: a correction created later comes
    first) and entity 9 with one at t=20::

        entity_keys = [7, 7, 7, 9]      # one per version, ascending
        event_us    = [30, 10, 10, 20]  # per entity descending
        created_us  = [31, 15, 11, 21]  # per (entity, event) descending
        columns     = {"ctr": FeatureColumn(values=[...4 rows...], valid=[...])}

    An entity's versions may continue in the next chunk.

    Args:
        entity_keys: int64 entity id key per version (hashed for string ids).
        event_us: int64 event time per version, microseconds.
        created_us: int64 created time per version, microseconds.
        columns: The requested features, one row per version, in request order (as
            :meth:`~feature_service.codec.ValueCodec.decode` returns them).
    """

    entity_keys: np.ndarray
    event_us: np.ndarray
    created_us: np.ndarray
    columns: dict[str, FeatureColumn]

    @property
    def num_versions(self) -> int:
        """Versions in the chunk."""
        return int(self.entity_keys.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class VersionSeek:
    """Point-in-time matches of n queries ``(entity key, as_of_us)``: the result of
    :meth:`FeatureStore.seek_versions`.

    A query gets its entity's newest version with ``as_of_us - ttl <= event_us <= as_of_us`` (ties
    on ``event_us``: the newest ``created_us``). Only the matched versions are decoded; ``row`` maps
    each query to one. Example, queries ``(7, t=25)``, ``(7, t=5)``, ``(8, t=9)``, ``(7, t=25)``
    against entity 7 with versions at t=10 and t=30 (no TTL) and no entity 8::

        row        = [0, -1, -1, 0]     # duplicates share a row (and a seek)
        has_past   = [T, F, F, T]       # a version with event_us <= as_of_us exists
        has_entity = [T, T, F, T]       # the entity has any version
        event_us   = [10]               # per matched version
        seeks      = 3

    A query without a row is expired where ``has_past`` (its version is older than
    ``as_of_us - ttl``), has only future versions where ``has_entity``, and has no entity otherwise.

    Args:
        row: int64 per query: its matched version's row in ``event_us``, ``created_us`` and
            ``columns``; -1 where no version qualifies.
        has_past: bool per query: the entity has a version with ``event_us <= as_of_us``, within
            the TTL or not.
        has_entity: bool per query: the entity has any stored version.
        event_us: int64 event time per matched version, microseconds.
        created_us: int64 created time per matched version, microseconds.
        columns: The requested features of the matched versions, in request order.
        seeks: RocksDB seeks made (distinct queries).
    """

    row: np.ndarray
    has_past: np.ndarray
    has_entity: np.ndarray
    event_us: np.ndarray
    created_us: np.ndarray
    columns: dict[str, FeatureColumn]
    seeks: int


class FeatureStore:
    """A RocksDB-backed store of feature groups versioned by event time.

    Open with :meth:`open`; close with :meth:`close` or a ``with`` block. Example::

        with FeatureStore.open("features.db") as store:
            store.register_group(group)
            store.write("ad_stats", ad_ids, event_us, columns)
            frame = store.get_latest("ad_stats", [7, 8, 9])
            frame["ctr_7d"].values, frame.found

    Reads return :class:`~feature_service.types.FeatureFrame` (columnar numpy, ``to_arrow()``).
    Times are int64 microseconds since the epoch.
    """

    def __init__(
        self,
        db: Rdict,
        path: str,
        read_only: bool,
        cf_options: Options,
        latest_options: Options,
    ) -> None:
        """Use :meth:`open`."""
        self._db: Rdict | None = db
        self._path = path
        self._read_only = read_only
        self._cf_options = cf_options
        self._latest_options = latest_options
        self._lock = threading.RLock()
        self._groups: dict[str, _GroupHandles] = {}
        self._meta: Rdict | None = None
        self._meta_h: Any = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        read_only: bool = False,
        create: bool = True,
        block_cache_bytes: int = DEFAULT_BLOCK_CACHE_BYTES,
    ) -> FeatureStore:
        """Open (or create) a store.

        Args:
            path: Store directory.
            read_only: Open without the write lock (servers, readers beside a running ingest); the
                view is the data as of the open.
            create: Create the store when ``path`` holds none (ignored with ``read_only``).
            block_cache_bytes: LRU block cache shared by all column families, in bytes.

        Returns:
            The open store.

        Raises:
            NotFoundError: No store at ``path`` (read-only, or ``create=False``).
            InputError: ``path`` holds a RocksDB database that is not a feature store, or one of
                another format version.
            StoreError: RocksDB failed (e.g. another process holds the write lock).
        """
        p = Path(path)
        spath = str(p)
        exists = (p / "CURRENT").exists()
        if not exists and (read_only or not create):
            raise NotFoundError(
                "no feature store at this path",
                source=spath,
                hint="create it with `adrank ingest --store PATH ...` or FeatureStore.open(path)",
            )
        if block_cache_bytes < 0:
            raise InputError(
                f"block_cache_bytes must be >= 0, found {block_cache_bytes}",
                source="block_cache_bytes",
            )
        if exists:
            _check_format(spath)
        with _rocks("open the store", spath):
            cache = Cache(max(block_cache_bytes, 1 << 20))
            cf_options = _cf_options(cache)
            latest_options = _latest_cf_options()
            db_options = _cf_options(cache)
            # PlainTable (the latest-row families) reads its files through mmap only.
            db_options.set_allow_mmap_reads(True)
            db_options.create_if_missing(True)
            db_options.create_missing_column_families(True)
            db_options.increase_parallelism(os.cpu_count() or 2)
            db_options.set_keep_log_file_num(5)
            names = Rdict.list_cf(spath) if exists else ["default", _META_CF]
            access = AccessType.read_only(False) if read_only else AccessType.read_write()
            db = Rdict(
                spath,
                db_options,
                column_families={
                    n: latest_options if _is_latest_cf(n) else cf_options for n in names
                },
                access_type=access,
            )
        store = cls(db, spath, read_only, cf_options, latest_options)
        try:
            store._load(names)
        except BaseException:
            store.close()
            raise
        logger.info(
            "opened feature store %s (%s, %d groups)",
            spath,
            "read-only" if read_only else "read-write",
            len(store._groups),
        )
        return store

    def _load(self, cf_names: Sequence[str]) -> None:
        db = self._require_open()
        with _rocks("read the store's metadata", self._path):
            self._meta = db.get_column_family(_META_CF)
            if not self._read_only:
                self._meta_h = db.get_column_family_handle(_META_CF)
            marker = self._meta.get(K.store_marker_key())
            if marker is None and not self._read_only:
                doc = {"kind": _STORE_KIND, "format_version": STORE_FORMAT_VERSION}
                self._meta.put(K.store_marker_key(), json.dumps(doc).encode())
            group_rows = list(_prefix_items(self._meta, K.group_def_prefix()))
        for key, value in group_rows:
            try:
                group = group_from_json(_json(value, f"{self._path} (group {key!r})"))
            except ValueError as exc:
                raise StoreError(
                    f"stored group definition is corrupt: {exc}", source=self._path
                ) from exc
            if _versions_cf(group.name) not in cf_names or _latest_cf(group.name) not in cf_names:
                raise StoreError(
                    f"group {group.name!r} is registered but its column families are missing",
                    source=self._path,
                    hint="the store is damaged; restore it from a backup or re-ingest",
                )
            self._attach(group)

    def _attach(self, group: FeatureGroup) -> None:
        db = self._require_open()
        with _rocks(f"open the column families of group {group.name!r}", self._path):
            versions = db.get_column_family(_versions_cf(group.name))
            latest = db.get_column_family(_latest_cf(group.name))
            vh = lh = None
            if not self._read_only:
                vh = db.get_column_family_handle(_versions_cf(group.name))
                lh = db.get_column_family_handle(_latest_cf(group.name))
        self._groups[group.name] = _GroupHandles(group, versions, latest, vh, lh)

    def close(self) -> None:
        """Close the store and release its lock; later calls raise StoreError. Idempotent."""
        with self._lock:
            db = self._db
            if db is None:
                return
            # Live column-family and handle objects keep the RocksDB lock past close(): drop them
            # before closing, so the path can be reopened at once. They are in no reference cycle,
            # so refcounting frees them here (gc.collect would cost ~60 ms with a large heap).
            self._groups.clear()
            self._meta = None
            self._meta_h = None
            self._db = None
            with _rocks("close the store", self._path):
                db.close()
            del db

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        """Store directory."""
        return self._path

    @property
    def read_only(self) -> bool:
        """Opened read-only."""
        return self._read_only

    def identity(self) -> str | None:
        """RocksDB's identity of the store's database: a UUID written once when the database is
        created, so a copy made under it (a scan snapshot) is never taken for another store's.

        Returns:
            The identity, or None when it cannot be read (then nothing should be cached by it).
        """
        try:
            text = (Path(self._path) / "IDENTITY").read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if text and all(c.isalnum() or c == "-" for c in text) else None

    def flush(self) -> None:
        """Write the memtables of every column family to table files, and wait.

        Committed writes are already durable (the WAL); flushing makes RocksDB's size estimates
        (:meth:`estimate_versions`) count every version, and spares the next open a WAL replay.

        Raises:
            InputError: The store is read-only.
            StoreError: RocksDB failed.
        """
        self._require_writable("flush")
        with self._lock, _rocks("flush the store", self._path):
            assert self._meta is not None
            self._meta.flush(True)
            for h in self._groups.values():
                h.versions.flush(True)
                h.latest.flush(True)

    def _require_open(self) -> Rdict:
        if self._db is None:
            raise StoreError("the feature store is closed", source=self._path, hint="open it again")
        return self._db

    def _require_writable(self, action: str) -> Rdict:
        db = self._require_open()
        if self._read_only:
            raise InputError(
                f"cannot {action}: the store is open read-only",
                source=self._path,
                hint="open it with read_only=False (one writer process at a time)",
            )
        return db

    # ------------------------------------------------------------------ registry

    def groups(self) -> tuple[FeatureGroup, ...]:
        """Registered groups, sorted by name."""
        self._require_open()
        return tuple(self._groups[n].group for n in sorted(self._groups))

    def group(self, name: str) -> FeatureGroup:
        """The registered group ``name``.

        Raises:
            NotFoundError: No such group; the message lists the registered ones.
        """
        return self._handles(name).group

    def _handles(self, name: str) -> _GroupHandles:
        self._require_open()
        h = self._groups.get(name)
        if h is None:
            raise NotFoundError(
                f"no feature group {name!r}; registered groups: "
                f"{', '.join(sorted(self._groups)) or '(none)'}",
                source=name,
                hint="ingest it first (adrank ingest --group NAME ...)",
            )
        return h

    def register_group(
        self, group: FeatureGroup, *, allow_new_features: bool = False
    ) -> FeatureGroup:
        """Register a group, or re-register it (same schema, a new TTL, or appended features).

        Args:
            group: The declaration; ``schema_version`` and ``since_version`` are assigned here.
            allow_new_features: Append features the stored group lacks (a new schema version).

        Returns:
            The group as stored.

        Raises:
            InputError: Invalid declaration, or incompatible with the stored group (the message
                names every offending feature), or the store is read-only.
        """
        validate_group(group)
        db = self._require_writable("register a group")
        with self._lock:
            current = self._groups.get(group.name)
            if current is None:
                new = FeatureGroup(
                    group.name,
                    group.entity_type,
                    group.entity_id_kind,
                    tuple(FeatureSpec(f.name, f.dtype, f.shape, f.dim, 1) for f in group.features),
                    group.ttl_s,
                    1,
                )
                changed = True
            else:
                new, changed = merge_group(
                    current.group, group, allow_new_features=allow_new_features
                )
            if not changed:
                return current.group if current is not None else new
            with _rocks(f"register group {group.name!r}", self._path):
                if current is None:
                    existing = set(Rdict.list_cf(self._path))
                    for cf in (_versions_cf(group.name), _latest_cf(group.name)):
                        # A crash between creating the families and writing the definition leaves
                        # empty families behind; they are reused.
                        if cf not in existing:
                            opts = self._latest_options if _is_latest_cf(cf) else self._cf_options
                            db.create_column_family(cf, opts)
                doc = json.dumps(group_to_json(new), sort_keys=True).encode()
                assert self._meta is not None
                self._meta.put(K.group_def_key(new.name), doc)
            if current is None:
                self._attach(new)
                logger.info(
                    "registered feature group %s (%d features)", new.name, len(new.features)
                )
            else:
                current.group = new
                current.codec = ValueCodec(new)
                logger.info(
                    "updated feature group %s to schema version %d (ttl_s=%s)",
                    new.name,
                    new.schema_version,
                    new.ttl_s,
                )
            return new

    # ------------------------------------------------------------------ writes

    def write(
        self,
        group: str,
        entity_ids: Sequence[int] | Sequence[str] | np.ndarray | pa.Array,
        event_us: np.ndarray | Sequence[int],
        columns: Mapping[str, FeatureColumn],
        *,
        created_us: np.ndarray | Sequence[int] | int = 0,
        checkpoint: IngestCheckpoint | None = None,
    ) -> int:
        """Write n entity versions atomically (one WriteBatch), updating the latest rows.

        A version with the same ``(entity, event_us, created_us)`` as a stored one replaces it (and,
        within one call, the last such row wins).

        Args:
            group: Group name.
            entity_ids: n raw entity ids (ints or strings, per the group's id kind).
            event_us: n event times, microseconds.
            columns: Every feature of the group, n rows each.
            created_us: n created times, or one for all (microseconds; default 0).
            checkpoint: Ingest progress to commit in the same batch (see
                :mod:`feature_service.ingest`).

        Returns:
            Rows written (n).

        Raises:
            NotFoundError: Unknown group.
            InputError: Ids, times or columns do not match the group (every problem named), or the
                store is read-only.
            StoreError: RocksDB failed; nothing of this call is stored.
        """
        self._require_writable("write features")
        ids = entity_id_keys(self._handles(group).group, entity_ids)
        return self.write_keys(
            group, ids, event_us, columns, created_us=created_us, checkpoint=checkpoint
        )

    def write_keys(
        self,
        group: str,
        entity_keys: np.ndarray,
        event_us: np.ndarray | Sequence[int],
        columns: Mapping[str, FeatureColumn],
        *,
        created_us: np.ndarray | Sequence[int] | int = 0,
        checkpoint: IngestCheckpoint | None = None,
    ) -> int:
        """:meth:`write` for entities given as int64 id keys (string ids already hashed with
        :func:`adrank.hashing.string_id_keys`), as bulk ingest has them.

        Raises:
            As :meth:`write`.
        """
        db = self._require_writable("write features")
        h = self._handles(group)
        g = h.group
        ids = np.asarray(entity_keys)
        if ids.ndim != 1 or (ids.shape[0] and ids.dtype != np.int64):
            raise InputError(
                f"entity_keys must be a 1-D int64 array, found {ids.dtype} {ids.shape}",
                source=f"{group} entity keys",
            )
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        n = ids.shape[0]
        ev = _times(event_us, n, "event_us")
        cr = _times(created_us, n, "created_us")
        check_columns(g, columns, n)
        values = h.codec.encode(ev, cr, columns) if n else []
        vkeys = K.version_keys(ids, ev, cr) if n else []
        # Put rows in key order: memtable inserts of sorted keys are ~4x faster than random ones.
        # lexsort is stable, so among identical keys the later row is still put last and wins.
        order = np.lexsort((~cr, ~ev, ids)).tolist() if n else []
        with self._lock, _rocks(f"write {n} rows to group {group!r}", self._path):
            wb = WriteBatch(raw_mode=True)
            put = wb.put
            vh = h.versions_h
            for i in order:
                put(vkeys[i], values[i], vh)
            if n:
                winners = self._latest_winners(h, ids, ev, cr)  # in entity order
                lkeys = K.latest_keys(ids[winners])
                lh = h.latest_h
                for i, k in zip(winners.tolist(), lkeys, strict=True):
                    put(k, values[i], lh)
            if checkpoint is not None:
                cp_key = K.checkpoint_key(group, checkpoint.ingest_id)
                put(cp_key, _checkpoint_bytes(checkpoint), self._meta_h)
            if n:
                put(K.group_generation_key(group), _new_generation(), self._meta_h)
            db.write(wb)
            del wb, put
        return n

    def _latest_winners(
        self, h: _GroupHandles, ids: np.ndarray, ev: np.ndarray, cr: np.ndarray
    ) -> np.ndarray:
        """Rows whose value becomes their entity's latest row: the newest row per entity in the
        batch (last one on exact ties), if at least as new as the stored latest row."""
        n = ids.shape[0]
        order = np.lexsort((np.arange(n), cr, ev, ids))
        sorted_ids = ids[order]
        last = np.ones(n, dtype=bool)
        last[:-1] = sorted_ids[1:] != sorted_ids[:-1]
        cand = order[last]
        stored = _multi_get(h.latest, K.latest_keys(ids[cand]))
        have = np.array([v is not None for v in stored], dtype=bool)
        if not have.any():
            return cand
        try:
            old_ev, old_cr = read_headers([v for v in stored if v is not None])
        except ValueError as exc:
            raise StoreError(
                f"corrupt latest row in group {h.group.name!r}: {exc}", source=self._path
            ) from exc
        c = cand[have]
        newer = (ev[c] > old_ev) | ((ev[c] == old_ev) & (cr[c] >= old_cr))
        keep = np.ones(cand.shape[0], dtype=bool)
        keep[np.flatnonzero(have)[~newer]] = False
        return cand[keep]

    def generation(self, group: str) -> str:
        """The group's generation: a token that every write to the group (rows, compaction
        deletes) replaces in the same atomic batch, and that nothing else changes.

        A copy of the group's versions made under one generation (a join's cache, a scan snapshot)
        is current exactly while the generation is unchanged; writes to other groups do not
        invalidate it. ``""`` for a group never written.

        Raises:
            NotFoundError: Unknown group.
            StoreError: RocksDB failed.
        """
        self._handles(group)
        assert self._meta is not None
        with _rocks(f"read the generation of group {group!r}", self._path):
            raw = self._meta.get(K.group_generation_key(group))
        return "" if raw is None else cast(bytes, raw).hex()

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, group: str, ingest_id: str) -> IngestCheckpoint | None:
        """The committed checkpoint of one ingest, or None if it never committed a batch."""
        self._require_open()
        assert self._meta is not None
        with _rocks("read an ingest checkpoint", self._path):
            raw = self._meta.get(K.checkpoint_key(group, ingest_id))
        return None if raw is None else _checkpoint_from_bytes(raw, self._path)

    def checkpoints(self, group: str) -> tuple[IngestCheckpoint, ...]:
        """Every committed ingest checkpoint of ``group``."""
        self._require_open()
        assert self._meta is not None
        with _rocks("list ingest checkpoints", self._path):
            rows = list(_prefix_items(self._meta, K.checkpoint_prefix(group)))
        return tuple(_checkpoint_from_bytes(v, self._path) for _k, v in rows)

    # ------------------------------------------------------------------ reads

    def get_latest(
        self,
        group: str,
        entity_ids: Sequence[int] | Sequence[str] | np.ndarray | pa.Array,
        features: Sequence[str] | None = None,
        *,
        now_us: int | None = None,
    ) -> FeatureFrame:
        """The newest version of each entity, with one multi_get.

        Args:
            group: Group name.
            entity_ids: Raw entity ids (duplicates allowed); results keep this order.
            features: Features to return (default: all).
            now_us: If given and the group has a TTL, versions older than ``now_us - ttl`` count as
                not found. Without it no TTL is applied (the newest stored version is returned).

        Returns:
            A frame with ``found`` False (and nulls) for entities without a (live) version.

        Raises:
            NotFoundError: Unknown group or feature (the message lists the known ones).
            InputError: Ids of the wrong type.
            StoreError: RocksDB failed or a stored value is corrupt.
        """
        h = self._handles(group)
        feats = _check_features(h.group, features)
        return self._read_latest(h, entity_id_keys(h.group, entity_ids), feats, now_us)

    def _read_latest(
        self, h: _GroupHandles, ids: np.ndarray, feats: list[str] | None, now_us: int | None
    ) -> FeatureFrame:
        with _rocks(f"read latest rows of group {h.group.name!r}", self._path):
            values = _multi_get(h.latest, K.latest_keys(ids)) if ids.shape[0] else []
        ttl = h.group.ttl_us
        if now_us is not None and ttl is not None:
            values = self._drop_expired(
                h, values, np.full(ids.shape[0], int(now_us), dtype=np.int64) - ttl
            )
        return self._frame(h, ids, values, feats)

    def get_as_of(
        self,
        group: str,
        entity_ids: Sequence[int] | Sequence[str] | np.ndarray | pa.Array,
        as_of_us: int | np.ndarray | Sequence[int],
        features: Sequence[str] | None = None,
    ) -> FeatureFrame:
        """Point-in-time read: per entity, the newest version with ``event_us <= as_of_us`` (ties:
        latest ``created_us``), ignored when older than ``as_of_us - ttl``.

        One iterator serves the whole batch: requests are sorted by key and each is one seek.

        Args:
            group: Group name.
            entity_ids: Raw entity ids; results keep this order.
            as_of_us: One read time for all entities, or one per entity (microseconds).
            features: Features to return (default: all).

        Returns:
            A frame with ``found`` False (and nulls) where no version qualifies.

        Raises:
            NotFoundError: Unknown group or feature.
            InputError: Ids of the wrong type, or ``as_of_us`` of the wrong length.
            StoreError: RocksDB failed or a stored value is corrupt.
        """
        h = self._handles(group)
        feats = _check_features(h.group, features)
        ids = entity_id_keys(h.group, entity_ids)
        n = ids.shape[0]
        t = _times(as_of_us, n, "as_of_us")
        values: list[bytes | None] = [None] * n
        if n:
            seeks = K.seek_keys(ids, t)
            order = np.lexsort((~t, ids)).tolist()  # ascending key order: entity asc, as_of desc
            pl = K.ENTITY_PREFIX_BYTES
            with _rocks(f"read versions of group {group!r}", self._path):
                it = h.versions.iter()
                try:
                    for i in order:
                        sk = seeks[i]
                        it.seek(sk)
                        if it.valid():
                            key = it.key()
                            if key[:pl] == sk[:pl]:
                                values[i] = it.value()
                    it.status()
                finally:
                    del it
            ttl = h.group.ttl_us
            if ttl is not None:
                values = self._drop_expired(h, values, t - ttl)
        return self._frame(h, ids, values, feats)

    def get_batch(
        self,
        reads: Sequence[FeatureRead],
        *,
        as_of_us: int | None = None,
        now_us: int | None = None,
    ) -> tuple[FeatureFrame, ...]:
        """Several reads in one call (e.g. a request's user and its candidate ads).

        Every read is validated before any is made. Latest reads use one multi_get per read; each
        is consistent, but two reads are not one snapshot (a write may land between them).

        Args:
            reads: What to read.
            as_of_us: Read every group as of this time instead of its latest version.
            now_us: For latest reads, apply TTL relative to this time (see :meth:`get_latest`).

        Returns:
            One frame per read, in order.

        Raises:
            NotFoundError, InputError, StoreError: As for :meth:`get_latest`; validation problems of
                all reads are reported together.
        """
        problems: list[InputError] = []
        missing: list[AdrankError] = []
        checked = []
        for r in reads:
            try:
                h = self._handles(r.group)
                feats = _check_features(h.group, r.features)
                checked.append((h, feats, entity_id_keys(h.group, r.entity_ids)))
            except NotFoundError as exc:
                missing.append(exc)
            except InputError as exc:
                problems.append(exc)
        if missing:
            raise missing[0]
        if problems:
            raise InputError.from_problems(problems)
        if as_of_us is not None:
            return tuple(self.get_as_of(r.group, r.entity_ids, as_of_us, r.features) for r in reads)
        return tuple(self._read_latest(h, ids, feats, now_us) for h, feats, ids in checked)

    def get_request(
        self,
        *,
        user_group: str,
        user_id: int | str,
        candidate_group: str,
        candidate_ids: Sequence[int] | Sequence[str] | np.ndarray,
        user_features: Sequence[str] | None = None,
        candidate_features: Sequence[str] | None = None,
        as_of_us: int | None = None,
        now_us: int | None = None,
    ) -> RequestFeatures:
        """Features of one ranking request: one user and its candidate ads, in one call.

        Args:
            user_group: Group of the request's user entity.
            user_id: The user's raw id.
            candidate_group: Group of the candidates (e.g. ads).
            candidate_ids: Raw candidate ids, in ranking order.
            user_features: User features to return (default: all).
            candidate_features: Candidate features to return (default: all).
            as_of_us: Read as of this time (default: latest).
            now_us: For latest reads, apply TTL relative to this time.

        Returns:
            The user's frame (one row) and the candidates' frame (one row per candidate).

        Raises:
            NotFoundError, InputError, StoreError: As for :meth:`get_batch`.
        """
        user_ids: list[int] | list[str] = [user_id]  # type: ignore[assignment]
        user, cands = self.get_batch(
            [
                FeatureRead(user_group, user_ids, user_features),
                FeatureRead(candidate_group, candidate_ids, candidate_features),
            ],
            as_of_us=as_of_us,
            now_us=now_us,
        )
        return RequestFeatures(user, cands)

    def _drop_expired(
        self, h: _GroupHandles, values: list[bytes | None], cutoff_us: np.ndarray
    ) -> list[bytes | None]:
        idx = [i for i, v in enumerate(values) if v is not None]
        if not idx:
            return values
        try:
            ev, _cr = read_headers([v for v in values if v is not None])
        except ValueError as exc:
            raise StoreError(
                f"corrupt value in group {h.group.name!r}: {exc}", source=self._path
            ) from exc
        expired = ev < cutoff_us[idx]
        if not expired.any():
            return values
        out = list(values)
        for i in np.asarray(idx)[expired].tolist():
            out[i] = None
        return out

    def _frame(
        self,
        h: _GroupHandles,
        ids: np.ndarray,
        values: Sequence[bytes | None],
        feats: Sequence[str] | None,
    ) -> FeatureFrame:
        dec = self._decode(h, values, feats)
        return FeatureFrame(h.group.name, ids, dec.found, dec.event_us, dec.created_us, dec.columns)

    # ------------------------------------------------------------------ bulk reads

    def scan_versions(
        self,
        group: str,
        features: Sequence[str] | None = None,
        *,
        chunk_versions: int = DEFAULT_SCAN_CHUNK_VERSIONS,
    ) -> Generator[VersionChunk, None, None]:
        """Every stored version of ``group`` in key order (entity key ascending, then event time
        descending, then created time descending), decoded in chunks.

        One sequential pass over the group's versions, ~1 us per version: the keys and the values
        come from two RocksDB iterators advanced in lockstep over one explicit snapshot taken when
        the scan starts (rocksdict builds one ``bytes`` per key or value; a ``(key, value)`` tuple
        per item costs ~30% more, and one iterator read key by key ~12% more). The scan sees the
        group as of that moment whatever is written meanwhile; read :meth:`generation` before it
        to know which writes a copy holds. Every chunk checks that the times in its keys equal
        those in its values.

        Validation (group, features, ``chunk_versions``) happens at the call; RocksDB is read as the
        generator is consumed. Close it (``close()``, :func:`contextlib.closing`) or drop it to stop
        early: that releases its RocksDB iterators. It holds at most one chunk of undecoded keys and
        values.

        Args:
            group: Group name.
            features: Features to decode, in this order (default: all; ``[]``: none, only the keys
                and times).
            chunk_versions: Versions per chunk (the last may hold fewer).

        Returns:
            A generator of chunks; none for a group without versions.

        Raises:
            NotFoundError: Unknown group or feature (at the call).
            InputError: ``chunk_versions`` < 1 (at the call).
            StoreError: While iterating: RocksDB failed, or a stored key or value is corrupt.
        """
        h = self._handles(group)
        feats = _check_features(h.group, features)
        if chunk_versions < 1:
            raise InputError(
                f"chunk_versions must be >= 1, found {chunk_versions}", source="chunk_versions"
            )
        return self._scan(h, feats, int(chunk_versions))

    def _scan(
        self, h: _GroupHandles, feats: list[str] | None, chunk_versions: int
    ) -> Generator[VersionChunk, None, None]:
        name = h.group.name
        codec = h.codec  # a schema update during the scan replaces h.codec; keep one
        action = f"scan group {name!r}"
        with _rocks(action, self._path):
            # Both iterators read one explicit snapshot: they stay aligned, and the whole scan
            # sees the group as of this moment whatever writers do meanwhile.
            snapshot = h.versions.snapshot()
            key_iter, value_iter = iter(snapshot.keys()), iter(snapshot.values())
        try:
            while True:
                with _rocks(action, self._path):
                    keys = cast("list[bytes]", list(itertools.islice(key_iter, chunk_versions)))
                    values = cast("list[bytes]", list(itertools.islice(value_iter, chunk_versions)))
                if not keys and not values:
                    return
                try:
                    if len(keys) != len(values):
                        raise ValueError(f"{len(keys)} keys but {len(values)} values")
                    ids, key_ev, key_cr = K.decode_version_keys(keys)
                    dec = codec.decode(values, feats)
                    if not (
                        np.array_equal(key_ev, dec.event_us)
                        and np.array_equal(key_cr, dec.created_us)
                    ):
                        raise ValueError("the times in the keys differ from those in the values")
                except ValueError as exc:
                    raise StoreError(
                        f"corrupt version in group {name!r}: {exc}", source=self._path
                    ) from exc
                del keys, values
                yield VersionChunk(ids, key_ev, key_cr, dec.columns)
        finally:
            # Release the RocksDB iterators and snapshot now, also when the consumer stops early
            # (a closed or dropped generator runs this at its paused yield).
            del key_iter, value_iter, snapshot

    def estimate_versions(self, group: str) -> int:
        """RocksDB's estimate of the versions stored in ``group``: cheap (no scan), and may be off
        by a few % (more before :meth:`flush`, and after deletions until compaction).

        Raises:
            NotFoundError: Unknown group.
            StoreError: RocksDB failed.
        """
        h = self._handles(group)
        with _rocks(f"estimate the size of group {group!r}", self._path):
            return int(h.versions.property_int_value("rocksdb.estimate-num-keys") or 0)

    def sample_value_bytes(self, group: str, n: int = DEFAULT_SAMPLE_VALUES) -> float:
        """Mean encoded size of the group's first ``n`` versions in key order, in bytes (about the
        size of their decoded features); 0.0 for a group without versions.

        Args:
            group: Group name.
            n: Versions to read (at least 1).

        Raises:
            NotFoundError: Unknown group.
            InputError: ``n`` < 1.
            StoreError: RocksDB failed.
        """
        h = self._handles(group)
        if n < 1:
            raise InputError(f"n must be >= 1, found {n}", source="n")
        with _rocks(f"sample group {group!r}", self._path):
            sizes = [len(cast(bytes, v)) for v in itertools.islice(h.versions.values(), n)]
        return sum(sizes) / len(sizes) if sizes else 0.0

    def seek_versions(
        self,
        group: str,
        entity_keys: np.ndarray,
        as_of_us: np.ndarray | Sequence[int] | int,
        features: Sequence[str] | None = None,
    ) -> VersionSeek:
        """Point-in-time matches of n queries by seeking, and why a query has none.

        The rule of :meth:`get_as_of`, for entities given as int64 id keys, with what a join needs
        to count its misses. Distinct queries are sorted into the column family's key order
        (entity ascending, time descending) and read by one iterator with monotone seeks, ~6-8 us
        each; duplicates are read once. Queries without a version at or before their time are
        classified by one multi_get of latest rows. Only matched versions are decoded, so memory is
        bounded by the batch.

        Args:
            group: Group name.
            entity_keys: n int64 entity id keys (string ids hashed with
                :func:`adrank.hashing.string_id_keys`).
            as_of_us: One query time for all, or n (microseconds).
            features: Features to decode, in this order (default: all).

        Returns:
            The matches (:class:`VersionSeek`).

        Raises:
            NotFoundError: Unknown group or feature.
            InputError: ``entity_keys`` not a 1-D int64 array, or ``as_of_us`` of the wrong length.
            StoreError: RocksDB failed or a stored key or value is corrupt.
        """
        h = self._handles(group)
        feats = _check_features(h.group, features)
        keys = np.asarray(entity_keys)
        if keys.ndim != 1 or (keys.shape[0] and keys.dtype != np.int64):
            raise InputError(
                f"entity_keys must be a 1-D int64 array, found {keys.dtype} {keys.shape}",
                source=f"{group} entity keys",
            )
        n = keys.shape[0]
        times = _times(as_of_us, n, "as_of_us")
        if n == 0:
            dec = self._decode(h, [], feats)
            return VersionSeek(
                np.zeros(0, dtype=np.int64),
                np.zeros(0, dtype=bool),
                np.zeros(0, dtype=bool),
                dec.event_us,
                dec.created_us,
                dec.columns,
                0,
            )
        # Key order of the seek targets: entity ascending, then ~t ascending (t descending).
        order = np.lexsort((~times, keys))
        k, t = keys[order], times[order]
        first = np.ones(n, dtype=bool)
        first[1:] = (k[1:] != k[:-1]) | (t[1:] != t[:-1])
        uk, ut = k[first], t[first]
        query_of = np.cumsum(first) - 1  # sorted position -> distinct query
        m = uk.shape[0]
        found_at, found_keys, found_values = self._seek_first(h, K.seek_keys(uk, ut))
        q_row = np.full(m, -1, dtype=np.int64)
        q_past = np.zeros(m, dtype=bool)
        q_past[found_at] = True
        at = np.asarray(found_at, dtype=np.int64)
        values: list[bytes] = []
        if at.shape[0]:
            ev = _decode_keys(found_keys, h.group.name, self._path)[1]
            expired = np.zeros(at.shape[0], dtype=bool)
            ttl = h.group.ttl_us
            if ttl is not None:
                # Inclusive bound, as get_as_of: expired when event < t - ttl (saturating at int64).
                cutoff = np.maximum(ut[at], np.iinfo(np.int64).min + ttl) - ttl
                expired = ev < cutoff
            good = at[~expired]
            q_row[good] = np.arange(good.shape[0], dtype=np.int64)
            values = [v for v, e in zip(found_values, expired.tolist(), strict=True) if not e]
        q_entity = q_past.copy()
        miss = np.flatnonzero(~q_past)
        if miss.shape[0]:
            ents, inverse = np.unique(uk[miss], return_inverse=True)
            with _rocks(f"read latest rows of group {group!r}", self._path):
                latest = _multi_get(h.latest, K.latest_keys(ents))
            exists = np.array([v is not None for v in latest], dtype=bool)
            q_entity[miss] = exists[inverse]
        dec = self._decode(h, values, feats)
        row = np.empty(n, dtype=np.int64)
        has_past = np.empty(n, dtype=bool)
        has_entity = np.empty(n, dtype=bool)
        row[order] = q_row[query_of]
        has_past[order] = q_past[query_of]
        has_entity[order] = q_entity[query_of]
        return VersionSeek(
            row, has_past, has_entity, dec.event_us, dec.created_us, dec.columns, int(m)
        )

    def _seek_first(
        self, h: _GroupHandles, targets: Sequence[bytes]
    ) -> tuple[list[int], list[bytes], list[bytes]]:
        """Seek one iterator to each target (in key order) and keep the version it lands on when
        that is of the target's entity: ``(target index, key, value)`` of each hit."""
        found_keys: list[bytes] = []
        found_values: list[bytes] = []
        found_at: list[int] = []
        pl = K.ENTITY_PREFIX_BYTES
        with _rocks(f"read versions of group {h.group.name!r}", self._path):
            it = h.versions.iter()
            try:
                for j, target in enumerate(targets):
                    it.seek(target)
                    if it.valid():
                        key = cast(bytes, it.key())
                        if key[:pl] == target[:pl]:
                            found_keys.append(key)
                            found_values.append(cast(bytes, it.value()))
                            found_at.append(j)
                it.status()
            finally:
                del it
        return found_at, found_keys, found_values

    def _decode(
        self, h: _GroupHandles, values: Sequence[bytes | None], feats: Sequence[str] | None
    ) -> DecodedValues:
        try:
            return h.codec.decode(values, feats)
        except ValueError as exc:
            raise StoreError(
                f"corrupt value in group {h.group.name!r}: {exc}", source=self._path
            ) from exc

    # ------------------------------------------------------------------ maintenance

    def compact(
        self, now_us: int, *, groups: Sequence[str] | None = None, drop_expired: bool = False
    ) -> CompactionReport:
        """Delete versions that no read at or after ``now_us`` can return, then compact RocksDB.

        For a group with a TTL, a version is deleted when its event time is older than
        ``now_us - ttl`` and a newer version of the same entity exists: any as-of read at
        ``t >= now_us`` either returns a newer version or finds this one expired, so such reads
        are unchanged. As-of reads at earlier times (historical joins) may lose versions: compact
        with a ``now_us`` no later than the oldest time you still join at. The newest version of
        each entity is kept even when expired, so latest reads without ``now_us`` still see it,
        unless ``drop_expired`` is set: then entities whose newest version is expired are removed
        entirely (versions and latest row in one batch). Groups without a TTL are left alone.

        Args:
            now_us: Reference time, microseconds.
            groups: Groups to compact (default: all).
            drop_expired: Also remove entities whose newest version is expired.

        Returns:
            Counts per group.

        Raises:
            NotFoundError: Unknown group.
            InputError: The store is read-only.
            StoreError: RocksDB failed (deletions already written stay; each is safe on its own).
        """
        db = self._require_writable("compact")
        names = list(groups) if groups is not None else sorted(self._groups)
        handles = [self._handles(n) for n in names]
        out: list[GroupCompaction] = []
        start = time.perf_counter()
        with self._lock:
            for h in handles:
                ttl = h.group.ttl_us
                if ttl is None:
                    out.append(GroupCompaction(h.group.name, 0, 0, 0))
                    continue
                out.append(self._compact_group(db, h, int(now_us) - ttl, drop_expired))
        report = CompactionReport(int(now_us), tuple(out))
        logger.info(
            "compacted %d groups: deleted %d versions in %.1f s",
            len(out),
            report.versions_deleted,
            time.perf_counter() - start,
        )
        return report

    def _compact_group(
        self, db: Rdict, h: _GroupHandles, cutoff_us: int, drop_expired: bool
    ) -> GroupCompaction:
        name = h.group.name
        scanned = deleted = dropped = 0
        prev_id: int | None = None  # entity of the previous chunk's last key
        prev_newest = 0
        with _rocks(f"compact group {name!r}", self._path):
            for chunk in _key_chunks(h.versions):
                ids, ev, _cr = _decode_keys(chunk, name, self._path)
                m = ids.shape[0]
                first = np.ones(m, dtype=bool)
                first[1:] = ids[1:] != ids[:-1]
                if prev_id is not None and ids[0] == prev_id:
                    first[0] = False
                # Newest event of each row's entity: the event of the entity's first row.
                start_idx = np.maximum.accumulate(np.where(first, np.arange(m), 0))
                newest = ev[start_idx]
                if not first[0]:
                    # Rows before the chunk's first entity start belong to the previous chunk's
                    # last entity.
                    newest[start_idx == 0] = prev_newest
                # A version is deletable when it is expired and not its entity's newest.
                delete = ~first & (ev < cutoff_us)
                if drop_expired:
                    delete |= newest < cutoff_us
                wb = WriteBatch(raw_mode=True)
                for i in np.flatnonzero(delete).tolist():
                    wb.delete(chunk[i], h.versions_h)
                if drop_expired:
                    gone = first & (ev < cutoff_us)
                    for k in K.latest_keys(ids[gone]):
                        wb.delete(k, h.latest_h)
                    dropped += int(gone.sum())
                if len(wb):
                    wb.put(K.group_generation_key(name), _new_generation(), self._meta_h)
                    db.write(wb)
                del wb
                scanned += m
                deleted += int(delete.sum())
                prev_id, prev_newest = int(ids[-1]), int(newest[-1])
            h.versions.compact_range(None, None)
            if drop_expired and dropped:
                h.latest.compact_range(None, None)
        return GroupCompaction(name, scanned, deleted, dropped)

    def stats(self) -> tuple[GroupStats, ...]:
        """Per group: entities, versions, approximate bytes on disk, oldest and newest event time.

        Scans every version key (not values) of every group: O(versions), ~millions of keys per
        second.

        Raises:
            StoreError: RocksDB failed.
        """
        self._require_open()
        out = []
        for name in sorted(self._groups):
            h = self._groups[name]
            entities = versions = 0
            oldest: int | None = None
            newest: int | None = None
            prev_id: int | None = None
            with _rocks(f"scan group {name!r}", self._path):
                for chunk in _key_chunks(h.versions):
                    ids, ev, _cr = _decode_keys(chunk, name, self._path)
                    first = np.ones(ids.shape[0], dtype=bool)
                    first[1:] = ids[1:] != ids[:-1]
                    if prev_id is not None and ids[0] == prev_id:
                        first[0] = False
                    entities += int(first.sum())
                    versions += ids.shape[0]
                    lo, hi = int(ev.min()), int(ev.max())
                    oldest = lo if oldest is None else min(oldest, lo)
                    newest = hi if newest is None else max(newest, hi)
                    prev_id = int(ids[-1])
                disk = 0
                for cf in (h.versions, h.latest):
                    for prop in ("rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"):
                        disk += int(cf.property_int_value(prop) or 0)
            out.append(GroupStats(name, entities, versions, disk, oldest, newest))
        return tuple(out)


# ---------------------------------------------------------------------- helpers


def entity_id_keys(
    group: FeatureGroup, entity_ids: Sequence[int] | Sequence[str] | np.ndarray | pa.Array
) -> np.ndarray:
    """Turn raw entity ids into int64 id keys for ``group`` (strings hashed, ints as they are).

    Raises:
        InputError: The ids' type does not match the group's id kind, or ids are null.
    """
    src = f"{group.name} entity ids"
    kind = group.entity_id_kind
    if isinstance(entity_ids, (pa.Array, pa.ChunkedArray)):
        if entity_ids.null_count:
            raise InputError("entity ids must not be null", source=src)
        entity_ids = entity_ids.to_numpy(zero_copy_only=False)
    arr = np.asarray(entity_ids)
    if arr.ndim != 1:
        raise InputError(
            f"entity ids must be a one-dimensional sequence, found shape {arr.shape}", source=src
        )
    if arr.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if kind is EntityIdKind.INT:
        if arr.dtype.kind == "i":
            return np.ascontiguousarray(arr, dtype=np.int64)
        if arr.dtype.kind == "u":
            if arr.max() > np.iinfo(np.int64).max:
                raise InputError("entity ids exceed the int64 range", source=src)
            return arr.astype(np.int64)
        raise InputError(
            f"group {group.name!r} has integer entity ids, found {arr.dtype} values",
            source=src,
            hint="pass ints (np.int64)",
        )
    if arr.dtype.kind in "US" or (
        arr.dtype.kind == "O" and all(isinstance(x, str) for x in arr.tolist())
    ):
        from adrank.hashing import string_id_keys

        values = arr.astype(str).tolist() if arr.dtype.kind != "O" else arr.tolist()
        return string_id_keys(values)
    raise InputError(
        f"group {group.name!r} has string entity ids, found {arr.dtype} values",
        source=src,
        hint="pass the ids as str",
    )


def _check_features(group: FeatureGroup, features: Sequence[str] | None) -> list[str] | None:
    if features is None:
        return None
    feats = [features] if isinstance(features, str) else list(features)
    unknown = [f for f in feats if f not in set(group.feature_names)]
    if unknown:
        raise NotFoundError(
            f"feature group {group.name!r} has no feature(s) {unknown}; "
            f"it has: {', '.join(group.feature_names)}",
            source=f"{group.name}.{unknown[0]}",
        )
    return feats


def _times(values: np.ndarray | Sequence[int] | int, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 0:
        if arr.dtype.kind not in "iu":
            raise InputError(
                f"{what} must be an integer (microseconds), found {arr.dtype}", source=what
            )
        return np.full(n, int(arr), dtype=np.int64)
    if arr.shape != (n,) or (n and arr.dtype.kind not in "iu"):
        raise InputError(
            f"{what} must be {n} integers (microseconds), found {arr.dtype} {arr.shape}",
            source=what,
        )
    return np.ascontiguousarray(arr, dtype=np.int64)


def _cf_options(cache: Cache) -> Options:
    opts = Options(raw_mode=True)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_bloom_filter(_BLOOM_BITS_PER_KEY, False)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    opts.set_block_based_table_factory(table)
    opts.set_compression_type(DBCompressionType.lz4())
    return opts


def _new_generation() -> bytes:
    # Random rather than a counter: no read-modify-write, and never equal to an earlier
    # generation of a re-created group.
    return os.urandom(16)


def _check_format(path: str) -> None:
    """Refuse a store of another format before opening it with this format's table options.

    Opening a store whose ``latest:`` families were written in another table format fails deep in
    RocksDB ("Bad table magic number"), so the marker is read first from a read-only open of the
    meta family alone (which every format writes block-based).

    Raises:
        InputError: Not an adrank feature store, or one of another format version.
    """
    with _rocks("read the store's format marker", path):
        names = Rdict.list_cf(path)
        if _META_CF not in names:
            raise InputError(
                "this RocksDB database is not an adrank feature store (no 'meta' column family)",
                source=path,
                hint="pass the directory of a store created by adrank ingest",
            )
        db = Rdict(
            path,
            Options(raw_mode=True),
            column_families={_META_CF: Options(raw_mode=True)},
            access_type=AccessType.read_only(False),
        )
        try:
            meta = db.get_column_family(_META_CF)
            marker = cast("bytes | None", meta.get(K.store_marker_key()))
            del meta
        finally:
            db.close()
    if marker is None:
        return  # created but never written: the store's own open writes the marker
    doc = _json(marker, f"{path} (store marker)")
    if doc.get("kind") != _STORE_KIND or doc.get("format_version") != STORE_FORMAT_VERSION:
        raise InputError(
            f"store format {doc.get('kind')!r} version {doc.get('format_version')!r} "
            f"is not {_STORE_KIND} version {STORE_FORMAT_VERSION}",
            source=path,
            hint="open it with the adrank version that wrote it, or re-ingest its parquet "
            "snapshots into a new store with `adrank ingest`",
        )


def _latest_cf_options() -> Options:
    """Options of a ``latest:<group>`` family: RocksDB's PlainTable format.

    The family is only ever read by point lookups of whole 9-byte keys (``[ver][entity]``), never
    iterated, so it takes the in-memory point-lookup format: a hash index over the fixed-length
    key (here also the prefix) with a bloom filter, read through mmap, no block cache and no
    compression. A 500-key multi_get costs ~0.5 ms instead of ~1.0 ms with block-based tables
    (measured on this machine; every key is a separate lookup in the binding either way). A
    PlainTable family cannot be scanned in key order, which nothing needs.
    """
    opts = Options(raw_mode=True)
    plain = PlainTableFactoryOptions()
    plain.user_key_length = K.ENTITY_PREFIX_BYTES
    plain.bloom_bits_per_key = _BLOOM_BITS_PER_KEY
    plain.hash_table_ratio = 0.75
    plain.index_sparseness = 16
    opts.set_plain_table_factory(plain)
    opts.set_prefix_extractor(SliceTransform.create_fixed_prefix(K.ENTITY_PREFIX_BYTES))
    opts.set_compression_type(DBCompressionType.none())
    return opts


def _multi_get(cf: Rdict, keys: list[bytes]) -> list[bytes | None]:
    """One multi_get (raw mode: bytes in, bytes or None out; the stubs type it loosely)."""
    return cast("list[bytes | None]", cf.get(cast(Any, keys)))


def _prefix_items(cf: Rdict, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    for k, v in cf.items(from_key=prefix):
        key = cast(bytes, k)
        if not key.startswith(prefix):
            break
        yield key, cast(bytes, v)


def _key_chunks(cf: Rdict) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for k in cf.keys():  # noqa: SIM118 - an Rdict iterates like a dict, but keys() is the API
        chunk.append(cast(bytes, k))
        if len(chunk) >= _SCAN_CHUNK_KEYS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decode_keys(
    chunk: list[bytes], group: str, path: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        return K.decode_version_keys(chunk)
    except ValueError as exc:
        raise StoreError(f"corrupt version key in group {group!r}: {exc}", source=path) from exc


def _json(raw: bytes, source: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"stored metadata is not JSON: {exc}", source=source) from exc
    if not isinstance(doc, dict):
        raise StoreError("stored metadata is not a JSON object", source=source)
    return doc


def _checkpoint_bytes(cp: IngestCheckpoint) -> bytes:
    return json.dumps(
        {"kind": "adrank.ingest_checkpoint", "format_version": 1, **asdict(cp)}
    ).encode()


def _checkpoint_from_bytes(raw: bytes, path: str) -> IngestCheckpoint:
    doc = _json(raw, f"{path} (ingest checkpoint)")
    doc.pop("kind", None)
    doc.pop("format_version", None)
    try:
        return IngestCheckpoint(**doc)
    except TypeError as exc:
        raise StoreError(f"stored ingest checkpoint is malformed: {exc}", source=path) from exc
