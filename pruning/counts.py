"""Access counts per hashed row: from hashed ids, or from parquet logs hashed with a plan.

A log's raw ids go through the same steps the runtime uses (:mod:`adrank.idmap`: id key, the
feature's slot in its table, dedicated heavy-hitter rows), so the counts land on exactly the
hashed rows the runtime will read. Features that share a table add into the same counts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from adrank.constants import DEFAULT_BATCH_ROWS
from adrank.errors import InputError, NotFoundError
from adrank.hashing import id_keys_from_arrow
from adrank.idmap import id_keys_to_hashed, load_dedicated_keys
from adrank.timecols import epoch_seconds
from adrank.types import FeatureSlot, ShardPlan, TablePlan
from pruning import kernels as K
from pruning.types import NEVER_ACCESSED_S, AccessCounts
from sharding_planner import StatsConfig, plan_inputs

__all__ = [
    "access_counts_from_hashed",
    "count_accesses",
    "empty_access_counts",
    "merge_access_counts",
]

logger = logging.getLogger(__name__)


def empty_access_counts(table: str, hashed_rows: int) -> AccessCounts:
    """Counts of a table no lookup has hit yet."""
    return AccessCounts(
        table,
        np.zeros(hashed_rows, dtype=np.int64),
        np.full(hashed_rows, NEVER_ACCESSED_S, dtype=np.int64),
    )


def access_counts_from_hashed(
    table: str,
    hashed_ids: np.ndarray,
    hashed_rows: int,
    timestamps_s: np.ndarray | None = None,
) -> AccessCounts:
    """Count lookups per hashed row from a flat array of hashed ids.

    Args:
        table: Table name.
        hashed_ids: int64 hashed ids, each in ``[0, hashed_rows)``.
        hashed_rows: Size of the table's hashed-id space.
        timestamps_s: Optional int64 epoch seconds per lookup (same length).

    Returns:
        The counts (``last_access_s`` stays :data:`~pruning.types.NEVER_ACCESSED_S` without times).

    Raises:
        ValueError: An id outside ``[0, hashed_rows)`` or mismatched lengths.
    """
    h = np.ascontiguousarray(hashed_ids, dtype=np.int64).ravel()
    if h.size and (int(h.min()) < 0 or int(h.max()) >= hashed_rows):
        raise ValueError(f"hashed ids of table {table!r} must lie in [0, {hashed_rows})")
    out = empty_access_counts(table, hashed_rows)
    if timestamps_s is None:
        K.accumulate_counts(h, out.counts)
        return out
    ts = np.ascontiguousarray(timestamps_s, dtype=np.int64).ravel()
    if ts.shape != h.shape:
        raise ValueError(f"{h.size} hashed ids but {ts.size} timestamps")
    K.accumulate_accesses(h, ts, out.counts, out.last_access_s)
    known = ts[ts != NEVER_ACCESSED_S]
    if known.size:
        return AccessCounts(
            table, out.counts, out.last_access_s, int(known.min()), int(known.max())
        )
    return out


def merge_access_counts(a: AccessCounts, b: AccessCounts) -> AccessCounts:
    """Counts over both logs (e.g. two days counted separately): sums and latest times.

    Raises:
        ValueError: The counts belong to different tables or sizes.
    """
    if a.table != b.table or a.hashed_rows != b.hashed_rows:
        raise ValueError(
            f"cannot merge counts of {a.table!r} ({a.hashed_rows} rows) and {b.table!r} "
            f"({b.hashed_rows} rows)"
        )
    starts = [s for s in (a.log_start_s, b.log_start_s) if s is not None]
    ends = [e for e in (a.log_end_s, b.log_end_s) if e is not None]
    return AccessCounts(
        a.table,
        a.counts + b.counts,
        np.maximum(a.last_access_s, b.last_access_s),
        min(starts) if starts else None,
        max(ends) if ends else None,
    )


class _Counter:
    """Mutable accumulator of one table's counts while logs stream by."""

    def __init__(self, table: TablePlan) -> None:
        self.table = table.name
        self.hashed_rows = table.hashed_rows
        self.counts = np.zeros(table.hashed_rows, dtype=np.int64)
        self.last = np.full(table.hashed_rows, NEVER_ACCESSED_S, dtype=np.int64)

    def add(self, hashed: np.ndarray, ts: np.ndarray | None) -> None:
        if ts is None:
            K.accumulate_counts(hashed, self.counts)
        else:
            K.accumulate_accesses(hashed, ts, self.counts, self.last)

    def result(self, start: int | None, end: int | None) -> AccessCounts:
        return AccessCounts(self.table, self.counts, self.last, start, end)


def count_accesses(
    plan: ShardPlan,
    paths: Sequence[str | os.PathLike[str]],
    *,
    plan_dir: str | os.PathLike[str] | None = None,
    dedicated_keys: Mapping[str, np.ndarray] | None = None,
    features: Sequence[str] | None = None,
    timestamp_column: str | None = None,
    start_s: int | None = None,
    end_s: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Callable[[int], None] | None = None,
) -> dict[str, AccessCounts]:
    """Count lookups per hashed row of every table of ``plan`` over parquet click logs.

    Each feature column's raw ids are turned into id keys (:mod:`adrank.hashing`) and mapped to
    their table's hashed ids exactly as the runtime maps them
    (:func:`adrank.idmap.id_keys_to_hashed`, dedicated rows included); a numba kernel adds one
    lookup per id and keeps each row's latest timestamp. Multi-hot (list) columns count every
    element. Null ids are skipped.

    Args:
        plan: The shard plan whose features and tables are counted.
        paths: Parquet files or directories of them.
        plan_dir: Plan directory, to load dedicated-key sidecars from (needed when a feature has
            dedicated rows and ``dedicated_keys`` does not give them).
        dedicated_keys: Feature name -> its sorted dedicated keys (overrides ``plan_dir``).
        features: Count only these features (None: every feature of the plan; each must be a
            column of at least one file).
        timestamp_column: The event-time column (None: each file's only timestamp column).
        start_s: Count only rows with a timestamp ``>= start_s`` (rows without one are skipped).
        end_s: Count only rows with a timestamp ``< end_s`` (likewise).
        batch_rows: Rows per record batch read (bounds memory; does not change results).
        progress: Called with the number of rows after each record batch.

    Returns:
        Table name -> counts, for every table of the plan (tables of uncounted features stay 0).

    Raises:
        InputError: Unknown features, unreadable or mistyped inputs, a missing dedicated-keys
            sidecar, or a time bound without timestamps in a file (every problem found before
            reading data is reported together).
    """
    t0 = time.perf_counter()
    slots: dict[str, tuple[TablePlan, FeatureSlot]] = {}
    for t in plan.tables:
        for slot in t.features:
            slots[slot.name] = (t, slot)
    wanted = list(slots) if features is None else list(dict.fromkeys(features))
    problems: list[InputError] = []
    unknown = [n for n in wanted if n not in slots]
    if unknown:
        problems.append(
            InputError(
                f"features not in the plan: {', '.join(unknown)}",
                source="features",
                hint=f"the plan has: {', '.join(sorted(slots))}",
            )
        )
    wanted = [n for n in wanted if n in slots]
    dedicated: dict[str, np.ndarray | None] = {}
    for name in wanted:
        slot = slots[name][1]
        if not slot.num_dedicated_rows:
            dedicated[name] = None
        elif dedicated_keys is not None and name in dedicated_keys:
            keys = np.asarray(dedicated_keys[name], dtype=np.int64)
            if (
                keys.ndim != 1
                or len(keys) != slot.num_dedicated_rows
                or np.any(keys[1:] <= keys[:-1])
            ):
                problems.append(
                    InputError(
                        f"expected {slot.num_dedicated_rows} sorted unique dedicated keys, found "
                        f"an array of shape {keys.shape}",
                        source=f"dedicated_keys[{name!r}]",
                        hint="pass the feature's keys from its dedicated_keys_file",
                    )
                )
            dedicated[name] = keys
        elif plan_dir is not None:
            try:
                dedicated[name] = load_dedicated_keys(plan_dir, slot)
            except InputError as exc:
                problems.append(exc)
            except NotFoundError as exc:
                problems.append(
                    InputError(exc.message, source=exc.source, hint="regenerate the plan directory")
                )
        else:
            problems.append(
                InputError(
                    f"feature {name!r} has {slot.num_dedicated_rows} dedicated rows; their keys "
                    "are needed to count its lookups",
                    source=f"{slot.dedicated_keys_file}",
                    hint="pass plan_dir (the directory holding plan.json) or dedicated_keys",
                )
            )
    if problems:
        raise InputError.from_problems(problems)
    files = plan_inputs(
        paths, StatsConfig(features=tuple(wanted), timestamp_column=timestamp_column)
    )
    if start_s is not None or end_s is not None:
        no_ts = [str(x.path) for x in files if x.timestamp_column is None and x.features]
        if no_ts:
            raise InputError(
                "a time window was requested but these files have no timestamp column: "
                + ", ".join(no_ts),
                source=", ".join(no_ts),
                hint="name the event-time column with timestamp_column, or drop start_s/end_s",
            )

    counters = {t.name: _Counter(t) for t in plan.tables}
    rows = 0
    span: list[int] = []  # [earliest, latest] timestamp of the rows counted, over all files
    for log in files:
        cols = [c for c in log.features if c.name in slots]
        if not cols:
            continue
        for batch in _batches(log.path, [c.name for c in cols], log.timestamp_column, batch_rows):
            ts = None
            if log.timestamp_column is not None:
                ts = _epoch_seconds(
                    batch.column(log.timestamp_column), log.path, log.timestamp_column
                )
            row_mask = _window_mask(ts, start_s, end_s)
            if ts is not None:
                _extend_span(span, ts if row_mask is None else ts[row_mask])
            for col in cols:
                table, slot = slots[col.name]
                _count_column(
                    counters[table.name],
                    slot,
                    dedicated.get(col.name),
                    batch.column(col.name),
                    ts,
                    row_mask,
                    f"{log.path}:{col.name}",
                )
            rows += batch.num_rows
            if progress is not None:
                progress(batch.num_rows)
    lo, hi = (span[0], span[1]) if span else (None, None)
    out = {name: c.result(lo, hi) for name, c in counters.items()}
    logger.info(
        "counted %d lookups over %d rows of %d files into %d tables in %.1f s",
        sum(c.total_lookups for c in out.values()),
        rows,
        len(files),
        len(out),
        time.perf_counter() - t0,
    )
    return out


def _batches(
    path: Path, columns: list[str], ts_col: str | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Yield record batches of the needed columns; decode failures become InputErrors."""
    needed = columns + ([ts_col] if ts_col is not None and ts_col not in columns else [])
    try:
        with pq.ParquetFile(path) as pf:
            yield from pf.iter_batches(batch_size=batch_rows, columns=needed, use_threads=True)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"cannot read parquet data ({type(exc).__name__}: {exc})",
            source=f"{path}:{','.join(needed)}",
            hint="the file may be corrupt or truncated; re-export it",
        ) from exc


def _epoch_seconds(arr: pa.Array, path: Path, column: str) -> np.ndarray:
    """Epoch seconds (floored) per row; NEVER_ACCESSED_S for null times."""
    values, nulls = epoch_seconds(arr, source=f"{path}:{column}")
    if nulls is not None:
        values[nulls] = NEVER_ACCESSED_S
    return values


def _window_mask(
    ts: np.ndarray | None, start_s: int | None, end_s: int | None
) -> np.ndarray | None:
    """Rows inside ``[start_s, end_s)`` (None: every row)."""
    if ts is None or (start_s is None and end_s is None):
        return None
    mask = ts != NEVER_ACCESSED_S
    if start_s is not None:
        mask &= ts >= start_s
    if end_s is not None:
        mask &= ts < end_s
    return mask


def _count_column(
    counter: _Counter,
    slot: FeatureSlot,
    dedicated: np.ndarray | None,
    arr: pa.Array,
    ts: np.ndarray | None,
    row_mask: np.ndarray | None,
    source: str,
) -> None:
    """Hash one column of a batch into its table's hashed ids and count them."""
    try:
        if (
            pa.types.is_list(arr.type)
            or pa.types.is_large_list(arr.type)
            or pa.types.is_fixed_size_list(arr.type)
        ):
            values = pc.list_flatten(arr)
            parents = np.asarray(
                pc.list_parent_indices(arr).to_numpy(zero_copy_only=False), dtype=np.int64
            )
        else:
            values, parents = arr, None
        if pa.types.is_dictionary(values.type) and pa.types.is_integer(values.type.value_type):
            values = values.dictionary_decode()
        if pa.types.is_string_view(values.type):
            values = values.cast(pa.large_string())
        keys, valid = id_keys_from_arrow(values)
    except (pa.ArrowException, TypeError) as exc:
        raise InputError(
            f"cannot convert ids to id keys: {exc}",
            source=source,
            hint="sparse ids must be integers or strings, or lists of them",
        ) from exc
    el_ts = None if ts is None else (ts if parents is None else ts[parents])
    keep = valid
    if row_mask is not None:
        keep = keep & (row_mask if parents is None else row_mask[parents])
    if not keep.all():
        keys = keys[keep]
        el_ts = None if el_ts is None else el_ts[keep]
    if keys.size == 0:
        return
    hashed = id_keys_to_hashed(slot, keys, dedicated)
    counter.add(hashed, None if el_ts is None else np.ascontiguousarray(el_ts))


def _extend_span(span: list[int], ts: np.ndarray) -> None:
    """Widen ``span`` ([earliest, latest], or empty) to cover the known times in ``ts``."""
    known = ts[ts != NEVER_ACCESSED_S]
    if not known.size:
        return
    lo, hi = int(known.min()), int(known.max())
    if span:
        span[0], span[1] = min(span[0], lo), max(span[1], hi)
    else:
        span.extend((lo, hi))
