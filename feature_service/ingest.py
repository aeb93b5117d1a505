"""Bulk ingest of parquet feature snapshots into a FeatureStore: streamed, atomic per batch,
resumable.

Each file is read one record batch at a time (bounded memory). A batch's rows, the latest-row
updates and the file's checkpoint (rows consumed, written, rejected) go into one WriteBatch, so
after a crash (even SIGKILL) every batch is either fully present with its checkpoint or absent.
Re-running the same ingest reads the checkpoint and skips the rows already consumed, so nothing is
written or counted twice. An ingest is identified by the file's content fingerprint
(:func:`adrank.formats.parquet_file_fingerprint`) and the column mapping, not by its path.

Every column other than the entity, timestamp and created columns is a feature. The group's schema
is inferred from the parquet schema on the first ingest and must match on later ones (new columns
are refused unless ``add_features``). Rows with a null entity id, timestamp or created time, a
timestamp out of range, or a null element inside a list/vector feature are rejected and counted;
the first few reasons (file, row, column) are kept in the report.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from adrank.errors import InputError
from adrank.formats import fingerprint, parquet_file_fingerprint
from feature_service.codec import empty_column
from feature_service.pit_snapshot import refresh_store_snapshot
from feature_service.schema import (
    entity_kind_from_arrow,
    merge_group,
    spec_from_arrow_field,
    validate_group,
)
from feature_service.store import FeatureStore
from feature_service.types import (
    Dtype,
    EntityIdKind,
    FeatureColumn,
    FeatureGroup,
    FeatureSpec,
    FileIngestReport,
    IngestCheckpoint,
    IngestReport,
    Shape,
)

__all__ = [
    "DEFAULT_INGEST_BATCH_ROWS",
    "MAX_REJECTED_EXAMPLES",
    "TIMESTAMP_UNITS",
    "ingest_parquet",
    "infer_group",
    "columns_from_arrow",
]

logger = logging.getLogger(__name__)

DEFAULT_INGEST_BATCH_ROWS = 65_536
"""Rows per record batch and WriteBatch: large enough to amortise per-batch costs, small enough
that a batch (~2x its encoded size in memory) stays in the tens of MB."""
MAX_REJECTED_EXAMPLES = 10
"""Rejection reasons kept per file in the report."""
TIMESTAMP_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}
"""Units an integer timestamp column may be in, and their factor to microseconds (ns divides)."""

_Flag = Callable[[np.ndarray, str, str], None]
"""Marks rows rejected: (mask, reason, column)."""

# Event times must stay within int64 microseconds: about +-292,000 years around 1970.
_MAX_ABS_US = np.iinfo(np.int64).max


@dataclass(frozen=True, slots=True)
class _Plan:
    """One validated input file."""

    path: str
    file_fingerprint: str
    ingest_id: str
    num_rows: int


def infer_group(
    schema: pa.Schema,
    *,
    group: str,
    entity_column: str,
    timestamp_column: str,
    created_column: str | None = None,
    entity_type: str | None = None,
    ttl_s: int | None = None,
    source: str = "<schema>",
) -> FeatureGroup:
    """Infer a group declaration from a parquet schema: every non-key column is a feature.

    Args:
        schema: The file's Arrow schema.
        group: Group name.
        entity_column: Column of raw entity ids (ints or strings).
        timestamp_column: Column of event times (timestamp, or integer in a given unit).
        created_column: Optional column of created times.
        entity_type: Entity type; default: ``entity_column`` without a trailing ``_id``.
        ttl_s: TTL in seconds, or None.
        source: File path, for errors.

    Returns:
        The declaration (schema version 1).

    Raises:
        InputError: Missing key columns, unsupported types, no feature columns; every problem at
            once, each naming the file and column.
    """
    problems: list[InputError] = []
    names = set(schema.names)
    key_cols = [("entity", entity_column), ("timestamp", timestamp_column)]
    if created_column is not None:
        key_cols.append(("created", created_column))
    for role, col in key_cols:
        if col not in names:
            problems.append(
                InputError(
                    f"{role} column {col!r} not found; columns are: {', '.join(schema.names)}",
                    source=f"{source}:{col}",
                    hint=f"pass the right --{role}-column",
                )
            )
    kind = EntityIdKind.INT
    if entity_column in names:
        try:
            kind = entity_kind_from_arrow(schema.field(entity_column).type, entity_column, source)
        except InputError as exc:
            problems.append(exc)
    for time_col in (timestamp_column, created_column):
        if time_col is not None and time_col in names:
            col = time_col
            t = schema.field(col).type
            if not (pa.types.is_timestamp(t) or pa.types.is_integer(t)):
                problems.append(
                    InputError(
                        f"time column {col!r} has type {t}; expected a timestamp or an integer",
                        source=f"{source}:{col}",
                        hint="cast it, or pass --timestamp-unit for integers",
                    )
                )
    features: list[FeatureSpec] = []
    keys = {entity_column, timestamp_column, created_column}
    for fld in schema:
        if fld.name in keys:
            continue
        try:
            features.append(spec_from_arrow_field(fld, source))
        except InputError as exc:
            problems.append(exc)
    if not features and not problems:
        problems.append(
            InputError(
                "no feature columns: every column is the entity, timestamp or created column",
                source=source,
                hint="a snapshot needs at least one feature column",
            )
        )
    if problems:
        raise InputError.from_problems(problems)
    if entity_type is None:
        entity_type = re.sub(r"_id$", "", entity_column) or "entity"
    decl = FeatureGroup(group, entity_type, kind, tuple(features), ttl_s)
    try:
        validate_group(decl)
    except InputError as exc:
        where = f"{source} ({exc.source})" if exc.source else source
        raise InputError(exc.message, source=where, hint=exc.hint) from exc
    return decl


def ingest_parquet(
    store: FeatureStore,
    files: Sequence[str | Path],
    *,
    group: str,
    entity_column: str,
    timestamp_column: str,
    created_column: str | None = None,
    entity_type: str | None = None,
    ttl_s: int | None = None,
    timestamp_unit: str = "s",
    batch_rows: int = DEFAULT_INGEST_BATCH_ROWS,
    add_features: bool = False,
    progress: Callable[[int], None] | None = None,
    scan_snapshot: bool = True,
) -> IngestReport:
    """Ingest parquet snapshots into ``group``, resumably.

    Every file is validated (exists, is parquet, has the columns, matches the group's schema) before
    anything is written. Then each file is streamed in record batches of ``batch_rows`` rows; each
    batch is one atomic write including the file's checkpoint. A file whose checkpoint says done is
    skipped; a partially ingested one resumes after its last committed row.

    Args:
        store: A store open read-write.
        files: Parquet files, ingested in order.
        group: Group name; registered on first ingest with the schema inferred from the first file.
        entity_column: Column of raw entity ids (ints or strings).
        timestamp_column: Column of event times.
        created_column: Column of created times (corrections); without it every row's created time
            is 0, so a later row with the same entity and event time replaces an earlier one.
        entity_type: Entity type for a new group (default: ``entity_column`` without ``_id``);
            for an existing group it must match.
        ttl_s: TTL in seconds to set on the group; None keeps the stored TTL (none for a new group).
        timestamp_unit: Unit of integer time columns: ``s``, ``ms``, ``us`` or ``ns``.
        batch_rows: Rows per record batch / WriteBatch.
        add_features: Allow columns the group lacks to become new features.
        progress: Called with the number of rows consumed after each committed batch.
        scan_snapshot: After the last batch, make the store's scan snapshot of the group current
            (:func:`feature_service.pit_snapshot.refresh_store_snapshot`: one scan of the group,
            ~1 us per version), so the next point-in-time join reads files instead of scanning
            RocksDB. Also done when an earlier, interrupted run left it stale.

    Returns:
        Per-file counts for this run and in total.

    Raises:
        NotFoundError: A file does not exist.
        InputError: Bad arguments, a file that is not parquet or lacks a column, or a schema that
            does not match the group (every problem at once, naming file and column).
        StoreError: RocksDB failed; batches committed so far stay, and a re-run resumes after them.
    """
    start = time.perf_counter()
    if timestamp_unit not in TIMESTAMP_UNITS:
        raise InputError(
            f"timestamp unit must be one of {', '.join(TIMESTAMP_UNITS)}, found {timestamp_unit!r}",
            source="timestamp_unit",
        )
    if batch_rows <= 0:
        raise InputError(f"batch_rows must be positive, found {batch_rows}", source="batch_rows")
    if not files:
        raise InputError(
            "no input files given", source="files", hint="pass one or more parquet files"
        )
    decl, plans = _validate_inputs(
        store,
        files,
        group=group,
        entity_column=entity_column,
        timestamp_column=timestamp_column,
        created_column=created_column,
        entity_type=entity_type,
        ttl_s=ttl_s,
        timestamp_unit=timestamp_unit,
        add_features=add_features,
    )
    stored = store.register_group(decl, allow_new_features=add_features)
    reports = []
    for plan in plans:
        reports.append(
            _ingest_file(
                store,
                stored,
                plan,
                entity_column=entity_column,
                timestamp_column=timestamp_column,
                created_column=created_column,
                timestamp_unit=timestamp_unit,
                batch_rows=batch_rows,
                progress=progress,
            )
        )
    snapshot, snapshot_s = "skipped", 0.0
    if scan_snapshot:
        t0 = time.perf_counter()
        snapshot = refresh_store_snapshot(store, group)
        snapshot_s = time.perf_counter() - t0
    return IngestReport(
        store.group(group),
        tuple(reports),
        time.perf_counter() - start,
        snapshot=snapshot,
        snapshot_s=snapshot_s,
    )


def _validate_inputs(
    store: FeatureStore,
    files: Sequence[str | Path],
    *,
    group: str,
    entity_column: str,
    timestamp_column: str,
    created_column: str | None,
    entity_type: str | None,
    ttl_s: int | None,
    timestamp_unit: str,
    add_features: bool,
) -> tuple[FeatureGroup, list[_Plan]]:
    """Check every file against the group before any write; return the declaration to register."""
    existing = next((g for g in store.groups() if g.name == group), None)
    if existing is not None:
        entity_type = entity_type or existing.entity_type
        ttl_s = existing.ttl_s if ttl_s is None else ttl_s
    problems: list[InputError] = []
    plans: list[_Plan] = []
    # The stored group (or the first file's schema, for a new group), merged with every file so
    # far: each file must be compatible with it.
    merged: FeatureGroup | None = existing
    for f in files:
        path = str(f)
        file_fp = parquet_file_fingerprint(path)  # NotFoundError, or InputError when not parquet
        try:
            pf = pq.ParquetFile(path)
            schema = pf.schema_arrow
            num_rows = pf.metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"cannot read parquet metadata: {exc}", source=path) from exc
        try:
            file_decl = infer_group(
                schema,
                group=group,
                entity_column=entity_column,
                timestamp_column=timestamp_column,
                created_column=created_column,
                entity_type=entity_type,
                ttl_s=ttl_s,
                source=path,
            )
            if merged is None:
                merged = file_decl
            else:
                merged, _changed = merge_group(
                    merged, file_decl, allow_new_features=add_features, source=path
                )
        except InputError as exc:
            problems.append(
                exc if exc.source else InputError(exc.message, source=path, hint=exc.hint)
            )
            continue
        ingest_id = fingerprint(
            {
                "file": file_fp,
                "group": group,
                "entity_column": entity_column,
                "timestamp_column": timestamp_column,
                "created_column": created_column,
                "timestamp_unit": timestamp_unit,
            }
        )
        plans.append(_Plan(path, file_fp, ingest_id, num_rows))
    if problems:
        raise InputError.from_problems(problems)
    assert merged is not None
    return merged, plans


def _ingest_file(
    store: FeatureStore,
    group: FeatureGroup,
    plan: _Plan,
    *,
    entity_column: str,
    timestamp_column: str,
    created_column: str | None,
    timestamp_unit: str,
    batch_rows: int,
    progress: Callable[[int], None] | None,
) -> FileIngestReport:
    start = time.perf_counter()
    cp = store.checkpoint(group.name, plan.ingest_id) or IngestCheckpoint(
        plan.ingest_id, plan.path, batch_rows
    )
    if cp.done:
        logger.info(
            "skipping %s: already ingested into %s (%d rows)",
            plan.path,
            group.name,
            cp.rows_written,
        )
        return FileIngestReport(
            path=plan.path,
            ingest_id=plan.ingest_id,
            batches_total=cp.batches_committed,
            batches_skipped=cp.batches_committed,
            rows_written=0,
            rows_rejected=0,
            rejected_examples=(),
            total_rows_written=cp.rows_written,
            total_rows_rejected=cp.rows_rejected,
        )
    skip_rows = cp.rows_written + cp.rows_rejected
    if skip_rows:
        logger.info(
            "resuming %s after %d committed rows (%d batches)",
            plan.path,
            skip_rows,
            cp.batches_committed,
        )
    written = rejected = batches_written = 0
    examples: list[str] = []
    columns = [entity_column, timestamp_column] + ([created_column] if created_column else [])
    columns += list(group.feature_names)
    row_base = skip_rows
    for batch in _batches(plan.path, columns, batch_rows, skip_rows):
        keys, event_us, created_us, feats, bad, reasons = _prepare(
            batch,
            group,
            plan.path,
            row_base,
            entity_column=entity_column,
            timestamp_column=timestamp_column,
            created_column=created_column,
            timestamp_unit=timestamp_unit,
        )
        n_ok = int(keys.shape[0])
        cp = dataclasses.replace(
            cp,
            batch_rows=batch_rows,
            batches_committed=cp.batches_committed + 1,
            rows_written=cp.rows_written + n_ok,
            rows_rejected=cp.rows_rejected + bad,
        )
        store.write_keys(group.name, keys, event_us, feats, created_us=created_us, checkpoint=cp)
        written += n_ok
        rejected += bad
        batches_written += 1
        row_base += batch.num_rows
        examples.extend(reasons[: MAX_REJECTED_EXAMPLES - len(examples)])
        if progress is not None:
            progress(batch.num_rows)
    cp = dataclasses.replace(cp, done=True)
    _mark_done(store, group, cp)
    elapsed = time.perf_counter() - start
    logger.info(
        "ingested %s into %s: %d rows written, %d rejected, %d batches in %.1f s (%.0f rows/s)",
        plan.path,
        group.name,
        written,
        rejected,
        batches_written,
        elapsed,
        (written + rejected) / elapsed if elapsed > 0 else 0.0,
    )
    return FileIngestReport(
        path=plan.path,
        ingest_id=plan.ingest_id,
        batches_total=cp.batches_committed,
        batches_skipped=cp.batches_committed - batches_written,
        rows_written=written,
        rows_rejected=rejected,
        rejected_examples=tuple(examples),
        total_rows_written=cp.rows_written,
        total_rows_rejected=cp.rows_rejected,
    )


def _mark_done(store: FeatureStore, group: FeatureGroup, cp: IngestCheckpoint) -> None:
    """Commit the checkpoint with ``done`` set (a write of no rows)."""
    empty = {s.name: empty_column(s, 0) for s in group.features}
    store.write_keys(
        group.name, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), empty, checkpoint=cp
    )


def _batches(
    path: str, columns: list[str], batch_rows: int, skip_rows: int
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``path`` after its first ``skip_rows`` rows (leading row groups wholly
    inside the skipped rows are not read)."""
    try:
        pf = pq.ParquetFile(path)
        meta = pf.metadata
        first = 0  # leading row groups wholly before skip_rows are not read at all
        before = 0
        while first < meta.num_row_groups and before + meta.row_group(first).num_rows <= skip_rows:
            before += meta.row_group(first).num_rows
            first += 1
        if first == meta.num_row_groups:
            return
        row_groups = list(range(first, meta.num_row_groups))
        drop = skip_rows - before  # rows still to drop from the first row group read
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=row_groups, columns=columns):
            if drop:
                if drop >= batch.num_rows:
                    drop -= batch.num_rows
                    continue
                batch = batch.slice(drop)
                drop = 0
            yield batch
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"cannot read parquet data: {exc}", source=path, hint="the file may be corrupt"
        ) from exc


def _prepare(
    batch: pa.RecordBatch,
    group: FeatureGroup,
    path: str,
    row_base: int,
    *,
    entity_column: str,
    timestamp_column: str,
    created_column: str | None,
    timestamp_unit: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, FeatureColumn], int, list[str]]:
    """Validate and convert one batch.

    Returns:
        ``(id keys, event_us, created_us, columns, rows rejected, reasons)`` for the kept rows.
    """
    n = batch.num_rows
    reject = np.zeros(n, dtype=bool)
    reasons: list[str] = []

    def flag(mask: np.ndarray, why: str, column: str) -> None:
        new = mask & ~reject
        if new.any() and len(reasons) < MAX_REJECTED_EXAMPLES:
            for i in np.flatnonzero(new)[: MAX_REJECTED_EXAMPLES - len(reasons)].tolist():
                reasons.append(f"{path}: row {row_base + i}: {why} in column {column!r}")
        reject[:] |= mask

    ent = batch.column(entity_column)
    if ent.null_count:
        flag(_nulls(ent), "null entity id", entity_column)
    event_us = _times_us(
        batch.column(timestamp_column), timestamp_unit, path, timestamp_column, flag
    )
    created_us = (
        _times_us(batch.column(created_column), timestamp_unit, path, created_column, flag)
        if created_column
        else np.zeros(n, dtype=np.int64)
    )
    for spec in group.features:
        if spec.shape is not Shape.SCALAR:
            bad = _rows_with_null_elements(batch.column(spec.name))
            if bad is not None:
                flag(bad, "null element inside a list", spec.name)
    n_bad = int(reject.sum())
    if n_bad:
        keep = ~reject
        batch = batch.filter(pa.array(keep))
        event_us = event_us[keep]
        created_us = created_us[keep]
    keys = _entity_keys(batch.column(entity_column), group.entity_id_kind, path, entity_column)
    feats = columns_from_arrow(batch, group, path)
    return keys, event_us, created_us, feats, n_bad, reasons


def _nulls(arr: pa.Array) -> np.ndarray:
    return pc.is_null(arr).to_numpy(zero_copy_only=False)


def _times_us(arr: pa.Array, unit: str, path: str, column: str, flag: _Flag) -> np.ndarray:
    """Event/created times in int64 microseconds; nulls and out-of-range values are flagged."""
    n = len(arr)
    if arr.null_count:
        flag(_nulls(arr), "null time", column)
    try:
        if pa.types.is_timestamp(arr.type):
            raw = pc.fill_null(arr.cast(pa.timestamp("us", tz=arr.type.tz), safe=False), 0).cast(
                pa.int64()
            )
            return np.ascontiguousarray(raw.to_numpy(zero_copy_only=False), dtype=np.int64)
        values = (
            pc.fill_null(arr, 0).cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
        )
    except pa.ArrowException as exc:
        raise InputError(f"cannot convert times: {exc}", source=f"{path}:{column}") from exc
    factor = TIMESTAMP_UNITS[unit]
    if factor is None:
        return values // 1000
    if factor == 1:
        return values
    limit = _MAX_ABS_US // factor
    out_of_range = np.abs(values) > limit
    if out_of_range.any():
        flag(out_of_range, f"time out of range for unit {unit!r}", column)
        values = np.where(out_of_range, 0, values)
    assert values.shape == (n,)
    return values * factor


def _rows_with_null_elements(arr: pa.Array) -> np.ndarray | None:
    """Rows of a list / fixed-size list column holding a null element, or None if there are none."""
    if arr.values.null_count == 0:
        return None
    flat = pc.list_flatten(arr)
    if flat.null_count == 0:
        return None
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
    bad = np.zeros(len(arr), dtype=bool)
    bad[parents[_nulls(flat)]] = True
    return bad


def _entity_keys(arr: pa.Array, kind: EntityIdKind, path: str, column: str) -> np.ndarray:
    try:
        if kind is EntityIdKind.INT:
            return np.ascontiguousarray(
                arr.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64
            )
        from adrank.hashing import id_keys_from_arrow

        keys, _valid = id_keys_from_arrow(arr)
        return keys
    except pa.ArrowException as exc:
        raise InputError(f"entity ids do not fit int64: {exc}", source=f"{path}:{column}") from exc


def columns_from_arrow(
    batch: pa.RecordBatch | pa.Table, group: FeatureGroup, source: str
) -> dict[str, FeatureColumn]:
    """Convert a batch's feature columns to :class:`FeatureColumn` (mostly zero-copy).

    Args:
        batch: Holds one column per feature of ``group``, of a type :func:`spec_from_arrow_field`
            maps to the feature's spec; no null elements inside lists or vectors.
        group: The group.
        source: File path, for errors.

    Returns:
        Columns by feature name.

    Raises:
        InputError: A column cannot be converted (e.g. uint64 values beyond int64), naming it.
    """
    out = {}
    for spec in group.features:
        arr = batch.column(spec.name)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        try:
            out[spec.name] = _column(arr, spec)
        except pa.ArrowException as exc:
            raise InputError(
                f"cannot convert column {spec.name!r} to {spec.describe()}: {exc}",
                source=f"{source}:{spec.name}",
                hint="cast the column to the group's type",
            ) from exc
    return out


_ARROW_TYPES = {
    Dtype.INT64: pa.int64(),
    Dtype.FLOAT32: pa.float32(),
    Dtype.FLOAT64: pa.float64(),
    Dtype.BOOL: pa.bool_(),
}


def _valid(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return pc.is_valid(arr).to_numpy(zero_copy_only=False)


def _flat_numpy(arr: pa.Array, dtype: Dtype) -> np.ndarray:
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.timestamp("us", tz=arr.type.tz), safe=False).cast(pa.int64())
    arr = pc.fill_null(arr.cast(_ARROW_TYPES[dtype]), False if dtype is Dtype.BOOL else 0)
    return np.ascontiguousarray(arr.to_numpy(zero_copy_only=False), dtype=dtype.numpy)


def _column(arr: pa.Array, spec: FeatureSpec) -> FeatureColumn:
    n = len(arr)
    valid = _valid(arr)
    if spec.dtype is Dtype.STRING:
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        arr = arr.cast(pa.large_string())
        bufs = arr.buffers()
        offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
        data = (
            np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        )
        return FeatureColumn(spec, data, valid, offsets)
    if spec.shape is Shape.SCALAR:
        return FeatureColumn(spec, _flat_numpy(arr, spec.dtype), valid)
    if spec.shape is Shape.VECTOR:
        d = spec.dim
        child = arr.values.slice(arr.offset * d, n * d)
        return FeatureColumn(spec, _flat_numpy(child, spec.dtype).reshape(n, d), valid)
    arr = arr.cast(pa.large_list(_ARROW_TYPES[spec.dtype]))
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    return FeatureColumn(spec, _flat_numpy(arr.values, spec.dtype), valid, offsets)
