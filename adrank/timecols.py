"""Event-time columns as epoch seconds: the one conversion every stage uses.

Logs carry event time as an Arrow timestamp (any unit, any zone), a date, or integer epoch
seconds. Stats, pruning and joins all reduce it to int64 epoch seconds, floored, so that a row at
12:00:00.9 belongs to the same second everywhere.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adrank.errors import InputError

__all__ = ["SECONDS_PER_UNIT", "epoch_seconds"]

SECONDS_PER_UNIT = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
"""Ticks per second of each Arrow timestamp unit."""


def epoch_seconds(
    arr: pa.Array | pa.ChunkedArray, *, source: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert an event-time column to int64 epoch seconds (floored).

    Args:
        arr: Timestamp, date32/date64 or integer (epoch seconds) values; nulls allowed.
        source: ``path:column`` named in the error.

    Returns:
        ``(seconds, nulls)``: a writeable int64 array (0 where null) and a bool mask of null rows,
        or None when there are none.

    Raises:
        InputError: The type cannot be read as a time.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    try:
        if pa.types.is_timestamp(t):
            raw, per, mult = arr.cast(pa.int64()), SECONDS_PER_UNIT[t.unit], 1
        elif pa.types.is_date32(t):
            raw, per, mult = arr.cast(pa.int32()).cast(pa.int64()), 1, 86_400
        elif pa.types.is_date64(t):
            raw, per, mult = arr.cast(pa.int64()), 1_000, 1
        elif pa.types.is_integer(t):
            raw, per, mult = arr.cast(pa.int64()), 1, 1
        else:
            raise TypeError(f"type {t} is not a time")
        values = np.array(pc.fill_null(raw, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        nulls = np.asarray(raw.is_null().to_numpy(zero_copy_only=False)) if raw.null_count else None
    except (pa.ArrowException, KeyError, TypeError) as exc:
        raise InputError(
            f"cannot convert event times of type {t} to epoch seconds ({exc})",
            source=source,
            hint="store event time as a timestamp, a date or integer epoch seconds",
        ) from exc
    if per != 1:
        values = np.floor_divide(values, per)
    elif mult != 1:
        values = values * mult
    return values, nulls
