"""Typed values of the feature store: schemas, columnar read results, ingest and maintenance
reports.

Everything here is a frozen, slotted dataclass or an Enum, passed between the store, the codec,
ingest and (later) the gRPC layer and the point-in-time join. Nothing here touches RocksDB.

Time is int64 microseconds since the Unix epoch everywhere (``*_us``); durations carry their unit
(``ttl_s``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from adrank.errors import NotFoundError

__all__ = [
    "Dtype",
    "Shape",
    "EntityIdKind",
    "FeatureSpec",
    "FeatureGroup",
    "FeatureColumn",
    "FeatureFrame",
    "FeatureRead",
    "RequestFeatures",
    "IngestCheckpoint",
    "FileIngestReport",
    "IngestReport",
    "GroupStats",
    "GroupCompaction",
    "CompactionReport",
]


class Dtype(enum.Enum):
    """Element type of a feature's values."""

    INT64 = "int64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    BOOL = "bool"

    @property
    def numpy(self) -> np.dtype[Any]:
        """The numpy dtype of decoded values (``uint8`` for STRING: UTF-8 bytes plus offsets)."""
        return np.dtype(_NUMPY[self])

    @property
    def itemsize(self) -> int:
        """Bytes per element in the value encoding (1 for STRING: bytes)."""
        return self.numpy.itemsize


_NUMPY = {
    Dtype.INT64: "<i8",
    Dtype.FLOAT32: "<f4",
    Dtype.FLOAT64: "<f8",
    Dtype.STRING: "u1",
    Dtype.BOOL: "?",
}


class Shape(enum.Enum):
    """How many values a feature holds per entity version."""

    SCALAR = "scalar"
    """One value (a STRING scalar is one variable-length UTF-8 string)."""
    VECTOR = "vector"
    """Exactly ``dim`` values (a dense embedding or a fixed-size float list)."""
    LIST = "list"
    """Any number of values (a sparse / multi-hot feature such as recent ad ids)."""


class EntityIdKind(enum.Enum):
    """Type of a group's raw entity ids.

    INT ids are their own int64 key. STRING ids are hashed to int64 keys with
    :func:`adrank.hashing.string_id_keys` (64-bit mmh3); the original string is not stored, so two
    strings that collide share a row. For n distinct entities the chance of any collision is about
    n**2 / 2**65 (3e-8 for a million entities, 3e-4 for 100 million); storing the string in every
    value to detect it would cost bytes and decode time on every read.
    """

    INT = "int64"
    STRING = "string"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One feature's declared schema.

    Args:
        name: Feature name, unique in its group (letters, digits, ``_``, ``-``, ``.``).
        dtype: Element type.
        shape: SCALAR, VECTOR (``dim`` values) or LIST (any number).
        dim: Vector length for VECTOR; 0 otherwise.
        since_version: Schema version of the group that added the feature (values written before
            it read as null). Set by the registry; leave at 1 when declaring a group.
    """

    name: str
    dtype: Dtype
    shape: Shape = Shape.SCALAR
    dim: int = 0
    since_version: int = 1

    @property
    def fixed_width(self) -> bool:
        """True when every value has the same encoded size (numeric/bool scalars and vectors)."""
        return self.dtype is not Dtype.STRING and self.shape is not Shape.LIST

    def describe(self) -> str:
        """Short human form, e.g. ``float32[16]``, ``list<int64>``, ``string``."""
        if self.shape is Shape.VECTOR:
            return f"{self.dtype.value}[{self.dim}]"
        if self.shape is Shape.LIST:
            return f"list<{self.dtype.value}>"
        return self.dtype.value


@dataclass(frozen=True, slots=True)
class FeatureGroup:
    """A named set of features of one entity type, versioned by event time.

    Example::

        FeatureGroup("ad_stats", entity_type="ad", entity_id_kind=EntityIdKind.INT,
                     features=(FeatureSpec("ctr_7d", Dtype.FLOAT32),
                               FeatureSpec("emb", Dtype.FLOAT32, Shape.VECTOR, dim=16)),
                     ttl_s=7 * 86_400)

    Args:
        name: Group name (letters, digits, ``_``, ``-``, ``.``), unique in the store.
        entity_type: What the rows describe, e.g. ``user`` or ``ad``.
        entity_id_kind: Raw id type of the entities.
        features: Feature schemas, in encoding order. Schema evolution only appends.
        ttl_s: Versions older than this many seconds before the read time are ignored by as-of reads
            (and removed by compaction once shadowed); None keeps values forever.
        schema_version: Version of ``features``; the registry bumps it when features are added.
    """

    name: str
    entity_type: str
    entity_id_kind: EntityIdKind
    features: tuple[FeatureSpec, ...]
    ttl_s: int | None = None
    schema_version: int = 1

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of all features, in encoding order."""
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> FeatureSpec:
        """Look a feature up by name.

        Raises:
            NotFoundError: No such feature; the message lists the group's features.
        """
        for spec in self.features:
            if spec.name == name:
                return spec
        raise NotFoundError(
            f"feature group {self.name!r} has no feature {name!r}; "
            f"it has: {', '.join(self.feature_names) or '(none)'}",
            source=f"{self.name}.{name}",
        )

    def features_at(self, schema_version: int) -> tuple[FeatureSpec, ...]:
        """Features present in values written under ``schema_version`` (a prefix of
        ``features``)."""
        return tuple(f for f in self.features if f.since_version <= schema_version)

    @property
    def ttl_us(self) -> int | None:
        """TTL in microseconds, or None."""
        return None if self.ttl_s is None else self.ttl_s * 1_000_000


@dataclass(frozen=True, slots=True, eq=False)
class FeatureColumn:
    """One feature's values for n rows, in a columnar layout close to Arrow's.

    Layout by shape (``valid[i]`` is False for a null; null rows hold zeros or an empty list):

    * SCALAR numeric/bool: ``values`` has shape ``(n,)``.
    * VECTOR: ``values`` has shape ``(n, dim)``.
    * LIST: ``values`` is flat; row i is ``values[offsets[i]:offsets[i + 1]]``.
    * STRING scalar: ``values`` is flat UTF-8 bytes (uint8), sliced by ``offsets`` like a list.

    Example, a LIST<int64> column of three rows ``[7, 8], null, [9]``::

        values  = [7, 8, 9]
        offsets = [0, 2, 2, 3]
        valid   = [True, False, True]

    Args:
        spec: The feature's schema.
        values: Values as described above (dtype ``spec.dtype.numpy``).
        valid: bool array of shape ``(n,)``.
        offsets: int64 array of shape ``(n + 1,)`` for LIST and STRING; None otherwise.
    """

    spec: FeatureSpec
    values: np.ndarray
    valid: np.ndarray
    offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.valid.shape[0])

    def to_arrow(self) -> pa.Array:
        """Convert to an Arrow array (nulls kept; lists are ``large_list``, strings
        ``large_string``)."""
        n = len(self)
        mask = ~self.valid
        spec = self.spec
        if spec.dtype is Dtype.STRING:
            assert self.offsets is not None
            validity = pa.py_buffer(np.packbits(self.valid, bitorder="little"))
            return pa.LargeStringArray.from_buffers(
                n,
                pa.py_buffer(np.ascontiguousarray(self.offsets, dtype=np.int64)),
                pa.py_buffer(np.ascontiguousarray(self.values, dtype=np.uint8)),
                validity,
                int(mask.sum()),
            )
        if spec.shape is Shape.LIST:
            assert self.offsets is not None
            return pa.LargeListArray.from_arrays(
                pa.array(self.offsets, type=pa.int64()),
                pa.array(self.values),
                mask=pa.array(mask),
            )
        if spec.shape is Shape.VECTOR:
            flat = pa.array(np.ascontiguousarray(self.values).reshape(-1))
            return pa.FixedSizeListArray.from_arrays(flat, spec.dim, mask=pa.array(mask))
        return pa.array(self.values, mask=mask if mask.any() else None)

    def to_pylist(self) -> list[Any]:
        """Python values per row (None for nulls); strings decoded from UTF-8."""
        return self.to_arrow().to_pylist()


@dataclass(frozen=True, slots=True, eq=False)
class FeatureFrame:
    """Columnar result of a read: one row per requested entity, in request order.

    Args:
        group: The feature group read.
        entity_keys: int64 id keys of the requested entities (hashed for string ids).
        found: bool per row: a version was found (and was within TTL where TTL applied).
        event_us: Event time of the version returned; 0 where not found.
        created_us: Created time of the version returned; 0 where not found.
        columns: Requested features by name, in request order. Rows not found are null.
    """

    group: str
    entity_keys: np.ndarray
    found: np.ndarray
    event_us: np.ndarray
    created_us: np.ndarray
    columns: Mapping[str, FeatureColumn]

    def __len__(self) -> int:
        return int(self.found.shape[0])

    def __getitem__(self, name: str) -> FeatureColumn:
        try:
            return self.columns[name]
        except KeyError:
            raise NotFoundError(
                f"result of group {self.group!r} has no feature {name!r}; "
                f"it has: {', '.join(self.columns) or '(none)'}",
                source=f"{self.group}.{name}",
            ) from None

    def to_arrow(self) -> pa.Table:
        """Arrow table: ``entity_key``, ``found``, ``event_ts``, ``created_ts`` (timestamp[us], null
        where not found), then one column per feature."""
        not_found = ~self.found
        ts_type = pa.timestamp("us", tz="UTC")
        arrays: dict[str, pa.Array] = {
            "entity_key": pa.array(self.entity_keys, type=pa.int64()),
            "found": pa.array(self.found, type=pa.bool_()),
            "event_ts": pa.array(self.event_us, type=pa.int64(), mask=not_found).cast(ts_type),
            "created_ts": pa.array(self.created_us, type=pa.int64(), mask=not_found).cast(ts_type),
        }
        for name, col in self.columns.items():
            arrays[name] = col.to_arrow()
        return pa.table(arrays)


@dataclass(frozen=True, slots=True, eq=False)
class FeatureRead:
    """One part of a batched read: a group, its entity ids and the features wanted (None: all)."""

    group: str
    entity_ids: Sequence[int] | Sequence[str] | np.ndarray
    features: Sequence[str] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class RequestFeatures:
    """Features of one ranking request: the request's user (one row) and its candidate ads."""

    user: FeatureFrame
    candidates: FeatureFrame


@dataclass(frozen=True, slots=True)
class IngestCheckpoint:
    """Progress of one (file, group, column mapping) ingest, committed with each batch.

    Batches are committed in order, so ``batches_committed`` is a prefix: a resumed ingest skips
    that many batches of ``batch_rows`` rows.

    Args:
        ingest_id: Fingerprint of the file content and the column mapping.
        source: The path the file was read from (informational; the id is content-based).
        batch_rows: Rows per record batch the file was cut into (fixed for the ingest's life).
        batches_committed: Batches written so far.
        rows_written: Rows written so far.
        rows_rejected: Rows rejected so far.
        done: All batches are committed.
    """

    ingest_id: str
    source: str
    batch_rows: int
    batches_committed: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    done: bool = False


@dataclass(frozen=True, slots=True)
class FileIngestReport:
    """What one ingest run did with one file.

    Args:
        path: Input file.
        ingest_id: See :class:`IngestCheckpoint`.
        batches_total: Record batches the file was committed in, over all runs (batches end at
            ``batch_rows`` rows and at parquet row-group boundaries).
        batches_skipped: Batches already committed by an earlier run and skipped.
        rows_written: Rows written by this run.
        rows_rejected: Rows rejected by this run.
        rejected_examples: The first few rejection reasons of this run, each naming file, row and
            column.
        total_rows_written: Rows of this file written by all runs (this one included).
        total_rows_rejected: Rows of this file rejected by all runs.
    """

    path: str
    ingest_id: str
    batches_total: int
    batches_skipped: int
    rows_written: int
    rows_rejected: int
    rejected_examples: tuple[str, ...]
    total_rows_written: int
    total_rows_rejected: int


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one ingest run did.

    Args:
        group: The group as stored after the run.
        files: One report per input file, in input order.
        elapsed_s: Wall time of the run in seconds (including the snapshot refresh).
        snapshot: The store's scan snapshot of the group after the run: ``"written"`` (refreshed
            by this run), ``"current"`` (already current), ``"skipped"`` (not asked for, or the
            group is over the refresh budget) or ``"failed"`` (could not be written; logged).
        snapshot_s: Seconds spent refreshing it.
    """

    group: FeatureGroup
    files: tuple[FileIngestReport, ...]
    elapsed_s: float = 0.0
    snapshot: str = "skipped"
    snapshot_s: float = 0.0

    @property
    def rows_written(self) -> int:
        """Rows written by this run over all files."""
        return sum(f.rows_written for f in self.files)

    @property
    def rows_rejected(self) -> int:
        """Rows rejected by this run over all files."""
        return sum(f.rows_rejected for f in self.files)


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Size and time range of one feature group.

    Args:
        group: Group name.
        entities: Distinct entities with at least one version.
        versions: Stored versions (rows of the versions column family).
        disk_bytes: Approximate bytes on disk (SST files plus memtables) of the group's column
            families.
        oldest_event_us: Smallest event time stored; None when empty.
        newest_event_us: Largest event time stored; None when empty.
    """

    group: str
    entities: int
    versions: int
    disk_bytes: int
    oldest_event_us: int | None
    newest_event_us: int | None


@dataclass(frozen=True, slots=True)
class GroupCompaction:
    """What :meth:`FeatureStore.compact` did to one group.

    Args:
        group: Group name.
        versions_scanned: Versions looked at.
        versions_deleted: Shadowed versions older than the TTL that were deleted.
        entities_dropped: Entities whose newest version was expired and were removed entirely
            (only with ``drop_expired=True``).
    """

    group: str
    versions_scanned: int
    versions_deleted: int
    entities_dropped: int


@dataclass(frozen=True, slots=True)
class CompactionReport:
    """Result of one compaction pass over the store."""

    now_us: int
    groups: tuple[GroupCompaction, ...] = field(default_factory=tuple)

    @property
    def versions_deleted(self) -> int:
        """Versions deleted over all groups."""
        return sum(g.versions_deleted for g in self.groups)
