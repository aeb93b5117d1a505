"""Build a :class:`~adrank.remap.RowRemap` from the rows a table keeps."""

from __future__ import annotations

from typing import Literal

import numpy as np

from adrank.errors import InputError
from adrank.remap import PRUNED, RowRemap

__all__ = ["build_remap"]


def build_remap(
    keep: np.ndarray,
    *,
    table: str = "",
    num_rows: int | None = None,
    fallback_row: int | None | Literal["end"] = "end",
    inputs_fingerprint: str = "",
) -> RowRemap:
    """Give every kept hashed id its own row, in hashed-id order; pruned ids get -1.

    Kept ids take the ``num_kept`` lowest rows other than the fallback row, so with the fallback
    after them (the usual layout) they get exactly ``0..num_kept-1``.

    Example::

        build_remap(np.array([1, 0, 1, 1, 0, 1], bool))
        -> hashed_to_row [0, -1, 1, 2, -1, 3], num_kept 4, fallback_row 4, num_rows 5

    Args:
        keep: bool per hashed id.
        table: Table name recorded in the remap.
        num_rows: Rows of the stored table (None: just enough, ``num_kept`` plus the fallback).
        fallback_row: The row pruned ids read: an explicit row, ``"end"`` (the table's last row:
            ``num_rows - 1``, or ``num_kept`` when ``num_rows`` is None), or None (pruned ids
            contribute nothing).
        inputs_fingerprint: Fingerprint of the plan the remap is for.

    Returns:
        The remap.

    Raises:
        InputError: ``keep`` is not 1-D, or the kept rows plus the fallback do not fit ``num_rows``,
            or the fallback row lies outside the table.
    """
    k = np.asarray(keep, dtype=bool)
    if k.ndim != 1:
        raise InputError(f"keep must be a 1-D mask, found shape {k.shape}", source=table or "keep")
    num_kept = int(np.count_nonzero(k))
    if fallback_row == "end":
        fallback: int | None = (num_rows - 1) if num_rows is not None else num_kept
    else:
        fallback = fallback_row
    rows_needed = num_kept + (1 if fallback is not None else 0)
    total = rows_needed if num_rows is None else num_rows
    if total < rows_needed or (fallback is not None and not 0 <= fallback < total):
        raise InputError(
            f"table {table!r}: {num_kept} kept rows"
            + (f" + fallback row {fallback}" if fallback is not None else "")
            + f" do not fit {total} rows",
            source=table or "keep",
            hint="keep fewer rows (a stricter policy) or give the table more rows",
        )
    rows = np.cumsum(k, dtype=np.int64) - 1
    if fallback is not None and fallback < num_kept:
        rows[rows >= fallback] += 1  # step over the fallback row
    hashed_to_row = np.where(k, rows, np.int64(PRUNED))
    return RowRemap(table, hashed_to_row, total, num_kept, fallback, inputs_fingerprint)
