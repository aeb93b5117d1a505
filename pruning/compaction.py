"""Compact a trained table (or any per-row array) to its pruned rows: ``new[row] = old[hashed_id]``.

Works on any array whose first axis is the hashed id: fp32/fp16 weights ``[hashed_rows, dim]``,
row-wise optimizer state ``[hashed_rows]``, or raw quantized rows ``[hashed_rows, row_bytes]``
(uint8; their fallback can only be zeros). Rows are copied in chunks, so a memory-mapped input
of any size needs memory for one chunk plus the output.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from adrank.errors import InputError, NotFoundError
from adrank.formats import atomic_path
from adrank.remap import RowRemap
from pruning.types import FallbackInit

__all__ = ["compact_npy", "compact_rows"]

logger = logging.getLogger(__name__)

_CHUNK_ROWS = 1 << 20


def compact_rows(
    values: np.ndarray,
    remap: RowRemap,
    *,
    fallback_init: FallbackInit = FallbackInit.MEAN_OF_PRUNED,
    counts: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Rewrite per-hashed-id rows into the pruned table's rows.

    ``new[remap.hashed_to_row[h]] = values[h]`` for every kept hashed id ``h``; the fallback row
    gets ``fallback_init`` of the pruned rows; spare rows are zero.

    Example (remap ``[0, -1, 1]``, fallback row 2)::

        values [[1, 1], [5, 5], [3, 3]] -> [[1, 1], [3, 3], [5, 5]]   (MEAN_OF_PRUNED)

    Args:
        values: Array of shape ``(hashed_rows, ...)`` (may be a read-only memmap).
        remap: The table's remap.
        fallback_init: How to fill the fallback row (floating arrays only, except ZEROS).
        counts: Lookups per hashed id (for ``TRAFFIC_MEAN_OF_PRUNED``; when every pruned row has
            zero lookups the plain mean is used).
        out: Optional output of shape ``(num_rows, ...)`` and ``values.dtype`` (e.g. a memmap);
            it is fully overwritten.

    Returns:
        The compacted array (``out`` when given).

    Raises:
        InputError: ``values`` does not have ``hashed_rows`` rows, ``out`` has the wrong shape or
            dtype, a mean fallback of a non-floating array, or missing/mis-sized ``counts``.
    """
    v = values
    h = remap.hashed_rows
    problems: list[InputError] = []
    if v.ndim < 1 or v.shape[0] != h:
        problems.append(
            InputError(
                f"values have shape {v.shape}; expected {h} rows (the remap's hashed ids)",
                source=remap.table,
            )
        )
    shape = (remap.num_rows, *v.shape[1:])
    if out is not None and (out.shape != shape or out.dtype != v.dtype):
        problems.append(
            InputError(
                f"out has shape {out.shape} and dtype {out.dtype}; expected {shape} {v.dtype}",
                source=remap.table,
            )
        )
    mean = fallback_init is not FallbackInit.ZEROS and remap.fallback_row is not None
    if mean and not np.issubdtype(v.dtype, np.floating):
        problems.append(
            InputError(
                f"cannot average {v.dtype} rows for the fallback row",
                source=remap.table,
                hint="use FallbackInit.ZEROS for quantized or integer rows",
            )
        )
    if fallback_init is FallbackInit.TRAFFIC_MEAN_OF_PRUNED and (
        counts is None or np.shape(counts) != (h,)
    ):
        problems.append(
            InputError(
                f"traffic-weighted fallback needs lookups per hashed id ({h} of them)",
                source=remap.table,
                hint="pass counts=AccessCounts.counts",
            )
        )
    if problems:
        raise InputError.from_problems(problems)

    dest = out if out is not None else np.empty(shape, dtype=v.dtype)
    dest[...] = 0
    rows = remap.hashed_to_row
    acc = np.zeros(v.shape[1:], dtype=np.float64)
    weight = 0.0
    for lo in range(0, h, _CHUNK_ROWS):
        hi = min(lo + _CHUNK_ROWS, h)
        chunk = np.asarray(v[lo:hi])
        r = rows[lo:hi]
        kept = r >= 0
        dest[r[kept]] = chunk[kept]
        if mean and not kept.all():
            pruned = chunk[~kept].astype(np.float64)
            if fallback_init is FallbackInit.TRAFFIC_MEAN_OF_PRUNED:
                assert counts is not None
                w = np.asarray(counts[lo:hi], dtype=np.float64)[~kept]
                acc += np.tensordot(w, pruned, axes=(0, 0))
                weight += float(w.sum())
            else:
                acc += pruned.sum(axis=0)
                weight += pruned.shape[0]
    if mean and weight == 0.0 and fallback_init is FallbackInit.TRAFFIC_MEAN_OF_PRUNED:
        # No pruned row had a lookup: fall back to the plain mean of the pruned rows.
        return compact_rows(values, remap, fallback_init=FallbackInit.MEAN_OF_PRUNED, out=dest)
    if mean and weight > 0 and remap.fallback_row is not None:
        dest[remap.fallback_row] = (acc / weight).astype(v.dtype)
    return dest


def compact_npy(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    remap: RowRemap,
    *,
    fallback_init: FallbackInit = FallbackInit.MEAN_OF_PRUNED,
    counts: np.ndarray | None = None,
) -> None:
    """Compact a ``.npy`` table file into another, memory-mapped, written atomically.

    Args:
        src: ``.npy`` array of shape ``(hashed_rows, ...)``.
        dest: Output ``.npy`` (shape ``(num_rows, ...)``, same dtype).
        remap: The table's remap.
        fallback_init: See :func:`compact_rows`.
        counts: See :func:`compact_rows`.

    Raises:
        NotFoundError: ``src`` is missing.
        InputError: ``src`` is not a readable ``.npy`` array, or see :func:`compact_rows`.
    """
    p = Path(src)
    try:
        values = np.load(p, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as exc:
        raise NotFoundError("table file is missing", source=str(p)) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read a .npy array: {exc}", source=str(p)) from exc
    with atomic_path(dest, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=values.dtype, shape=(remap.num_rows, *values.shape[1:])
        )
        compact_rows(values, remap, fallback_init=fallback_init, counts=counts, out=out)
        out.flush()
        del out
    logger.info(
        "compacted %s: %d hashed rows -> %d rows (%s)", p, remap.hashed_rows, remap.num_rows, dest
    )
