"""Numba kernels behind the feature sketches: the per-id hot loop and table maintenance.

Every id of every sparse feature passes through :func:`observe_ids` once. It hashes the id key,
updates the HyperLogLog registers, updates the Misra-Gries heavy-hitter table (when active) and
upserts the id into the hash-sampled exact table, all in one pass with the GIL released, so worker
threads run features in parallel.

Hash tables are open-addressing arrays of shape ``(capacity, 4)`` int64 with columns
``[key, count, first_ts, last_ts]`` (one cache line holds two slots); ``count == 0`` marks an
empty slot. Capacities are powers of two and the callers keep the load factor at or below 1/2.

Hashes of an id key (uint64):

* ``h1 = fmix64(key ^ SALT_H1)``: HLL register (top p bits), HLL rank (the rest) and the
  table slot (low bits).
* ``h2 = fmix64(h1 ^ SALT_SAMPLE)``: the sampling hash. At sample level ``j`` the exact table keeps
  exactly the ids with ``h2 < 2**(64 - j)`` (rate ``2**-j``).

fmix64 is a bijection with full avalanche, so the salted keys spread evenly even for sequential
integer ids, and the two hashes are uncorrelated in the bits each of them uses.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from adrank.hashing import fmix64

__all__ = [
    "COL_COUNT",
    "COL_ERR",
    "COL_FIRST",
    "COL_KEY",
    "COL_LAST",
    "FIRST_NONE",
    "LAST_NONE",
    "NO_TS",
    "N_SCALARS",
    "S_GROW_AT",
    "S_HLL_P",
    "S_LEVEL",
    "S_LIMIT",
    "S_MAX_TS",
    "S_MG_ACTIVE",
    "S_MG_ERR",
    "S_MG_KEEP",
    "S_MG_MAX",
    "S_MG_SIZE",
    "S_MIN_TS",
    "S_SIZE",
    "build_summary",
    "build_table",
    "observe_ids",
    "sample_hash",
    "table_entries",
]

COL_KEY, COL_COUNT, COL_FIRST, COL_LAST = 0, 1, 2, 3
COL_ERR = 4
"""Misra-Gries tables only: the summary's undercount bound when the id started being tracked."""

NO_TS = np.iinfo(np.int64).min
"""Timestamp of a row without one (null or no timestamp column)."""
FIRST_NONE = np.iinfo(np.int64).max
"""first_ts of an id never seen with a timestamp."""
LAST_NONE = np.iinfo(np.int64).min
"""last_ts of an id never seen with a timestamp."""

# Indices into the int64 scalar-state vector shared between Python and the kernel.
S_HLL_P = 0  # HLL precision p
S_LEVEL = 1  # sample level j: rate 2**-j
S_SIZE = 2  # ids in the exact table
S_GROW_AT = 3  # the kernel returns when the table size reaches this (load factor would pass 1/2)
S_LIMIT = 4  # exact-distinct limit: the kernel returns when the size exceeds it
S_MG_ACTIVE = 5  # 1 once the Misra-Gries summary is maintained (sampled mode)
S_MG_SIZE = 6  # ids tracked by the summary
S_MG_MAX = 7  # compaction trigger: tracked ids reaching this
S_MG_KEEP = 8  # k: ids kept after a compaction
S_MG_ERR = 9  # total subtracted by compactions: the undercount bound
S_MIN_TS = 10  # earliest timestamp of an observed id
S_MAX_TS = 11  # latest timestamp of an observed id
N_SCALARS = 12

SALT_H1 = np.uint64(0x9E3779B97F4A7C15)
SALT_SAMPLE = np.uint64(0xD6E8FEB86659FD93)
_ONE = np.uint64(1)
_U64 = np.uint64(64)


@intrinsic
def _clz64(typingctx, x):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Count leading zeros of a uint64 (LLVM ctlz; defined as 64 for 0)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@numba.njit(inline="always", cache=True)
def _h1(key: np.int64) -> np.uint64:  # pragma: no cover - compiled
    return fmix64(np.uint64(key) ^ SALT_H1)


@numba.njit(inline="always", cache=True)
def _upsert(
    table: np.ndarray, mask: np.uint64, key: np.int64, h: np.uint64, t: np.int64
) -> bool:  # pragma: no cover
    """Count one occurrence of ``key`` at time ``t``; True if it was inserted (new id)."""
    slot = h & mask
    while True:
        s = np.intp(slot)
        c = table[s, COL_COUNT]
        if c == 0:
            table[s, COL_KEY] = key
            table[s, COL_COUNT] = 1
            if t != NO_TS:
                table[s, COL_FIRST] = t
                table[s, COL_LAST] = t
            else:
                table[s, COL_FIRST] = FIRST_NONE
                table[s, COL_LAST] = LAST_NONE
            return True
        if table[s, COL_KEY] == key:
            table[s, COL_COUNT] = c + 1
            if t != NO_TS:
                if t < table[s, COL_FIRST]:
                    table[s, COL_FIRST] = t
                if t > table[s, COL_LAST]:
                    table[s, COL_LAST] = t
            return False
        slot = (slot + _ONE) & mask


@numba.njit(inline="always", cache=True)
def _put_row(
    table: np.ndarray,
    mask: np.uint64,
    key: np.int64,
    count: np.int64,
    first: np.int64,
    last: np.int64,
) -> bool:  # pragma: no cover - compiled
    """Add an aggregated row (count, first, last) for ``key``; True if it was inserted."""
    slot = _h1(key) & mask
    while True:
        s = np.intp(slot)
        c = table[s, COL_COUNT]
        if c == 0:
            table[s, COL_KEY] = key
            table[s, COL_COUNT] = count
            table[s, COL_FIRST] = first
            table[s, COL_LAST] = last
            return True
        if table[s, COL_KEY] == key:
            table[s, COL_COUNT] = c + count
            if first < table[s, COL_FIRST]:
                table[s, COL_FIRST] = first
            if last > table[s, COL_LAST]:
                table[s, COL_LAST] = last
            return False
        slot = (slot + _ONE) & mask


@numba.njit(inline="always", cache=True)
def _mg_upsert(
    mg: np.ndarray, mask: np.uint64, key: np.int64, h: np.uint64, t: np.int64, err: np.int64
) -> bool:  # pragma: no cover - compiled
    """Count one occurrence in the Misra-Gries table; a new id records the bound ``err`` so far."""
    slot = h & mask
    while True:
        s = np.intp(slot)
        c = mg[s, COL_COUNT]
        if c == 0:
            mg[s, COL_KEY] = key
            mg[s, COL_COUNT] = 1
            mg[s, COL_FIRST] = t if t != NO_TS else FIRST_NONE
            mg[s, COL_LAST] = t
            mg[s, COL_ERR] = err
            return True
        if mg[s, COL_KEY] == key:
            mg[s, COL_COUNT] = c + 1
            if t != NO_TS:
                if t < mg[s, COL_FIRST]:
                    mg[s, COL_FIRST] = t
                if t > mg[s, COL_LAST]:
                    mg[s, COL_LAST] = t
            return False
        slot = (slot + _ONE) & mask


@numba.njit(nogil=True, cache=True)
def _mg_compact(
    mg: np.ndarray, keep: np.int64, err: np.int64
) -> tuple[np.int64, np.int64]:  # pragma: no cover
    """Misra-Gries compaction: raise the bound by the (keep+1)-th largest counter, drop those <= 0.

    An id's Misra-Gries counter is ``count + err_at_insert - err``; raising ``err`` by ``d`` is the
    textbook "subtract d from every counter" without touching the exact since-tracked counts.

    Returns:
        (new err, ids left); at most ``keep`` ids are left.
    """
    cap = mg.shape[0]
    n = 0
    for s in range(cap):
        if mg[s, COL_COUNT] > 0:
            n += 1
    if n <= keep:
        return err, np.int64(n)
    counters = np.empty(n, dtype=np.int64)
    rows = np.empty((n, 5), dtype=np.int64)
    m = 0
    for s in range(cap):
        if mg[s, COL_COUNT] > 0:
            rows[m, :] = mg[s, :]
            counters[m] = rows[m, COL_COUNT] + rows[m, COL_ERR] - err
            m += 1
    ordered = np.sort(counters)
    err = err + ordered[n - keep - 1]
    mg[:, COL_COUNT] = 0
    mask = np.uint64(cap - 1)
    left = 0
    for r in range(n):
        if rows[r, COL_COUNT] + rows[r, COL_ERR] - err > 0:
            _put_summary_row(mg, mask, rows[r])
            left += 1
    return err, np.int64(left)


@numba.njit(inline="always", cache=True)
def _put_summary_row(mg: np.ndarray, mask: np.uint64, row: np.ndarray) -> None:  # pragma: no cover
    slot = _h1(row[COL_KEY]) & mask
    while mg[np.intp(slot), COL_COUNT] != 0:
        slot = (slot + _ONE) & mask
    mg[np.intp(slot), :] = row


@numba.njit(nogil=True, cache=True)
def observe_ids(
    keys: np.ndarray,
    valid: np.ndarray,
    use_valid: bool,
    rows: np.ndarray,
    use_rows: bool,
    ts: np.ndarray,
    use_ts: bool,
    start: int,
    scal: np.ndarray,
    table: np.ndarray,
    hll: np.ndarray,
    mg: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Observe ``keys[start:]`` (one sketch), stopping early when the exact table needs attention.

    Args:
        keys: int64 id keys.
        valid: bool mask of real ids (read only if ``use_valid``); invalid entries are skipped.
        rows: For list features, the row of each id (read only if ``use_rows``), to find its time.
        ts: int64 epoch seconds per row, :data:`NO_TS` where unknown (read only if ``use_ts``).
        start: First index to observe.
        scal: The sketch's scalar state (``S_*`` indices), read and written back.
        table: Exact (sampled) table ``(capacity, 4)``.
        hll: uint8 HLL registers, ``2**p`` of them.
        mg: Misra-Gries table ``(capacity, 4)`` (updated only while ``scal[S_MG_ACTIVE]``).

    Returns:
        The index after the last id observed: ``len(keys)`` when done; less when the table's size
        passed ``scal[S_GROW_AT]`` (grow it) or ``scal[S_LIMIT]`` (raise the sample level), after
        which the caller fixes the table and calls again from there.
    """
    n = keys.shape[0]
    p = np.uint64(scal[S_HLL_P])
    level = scal[S_LEVEL]
    size = scal[S_SIZE]
    grow_at = scal[S_GROW_AT]
    limit = scal[S_LIMIT]
    mg_active = scal[S_MG_ACTIVE] != 0
    mg_size = scal[S_MG_SIZE]
    mg_max = scal[S_MG_MAX]
    mg_keep = scal[S_MG_KEEP]
    mg_err = scal[S_MG_ERR]
    min_ts = scal[S_MIN_TS]
    max_ts = scal[S_MAX_TS]
    mask = np.uint64(table.shape[0] - 1)
    mg_mask = np.uint64(mg.shape[0] - 1)
    p_shift = _U64 - p
    guard = _ONE << (p - _ONE)
    s_shift = _U64 - np.uint64(level) if level > 0 else np.uint64(0)
    stop = n
    for i in range(start, n):
        if use_valid and not valid[i]:
            continue
        key = keys[i]
        t = NO_TS
        if use_ts:
            t = ts[rows[i]] if use_rows else ts[i]
            if t != NO_TS:
                if t < min_ts:
                    min_ts = t
                if t > max_ts:
                    max_ts = t
        h1 = _h1(key)
        j = np.intp(h1 >> p_shift)
        rho = np.uint8(_clz64((h1 << p) | guard) + _ONE)  # type: ignore[call-arg]
        if rho > hll[j]:
            hll[j] = rho
        if mg_active and _mg_upsert(mg, mg_mask, key, h1, t, mg_err):
            mg_size += 1
            if mg_size >= mg_max:
                mg_err, mg_size = _mg_compact(mg, mg_keep, mg_err)
        kept = level == 0 or (fmix64(h1 ^ SALT_SAMPLE) >> s_shift) == 0
        if kept and _upsert(table, mask, key, h1, t):
            size += 1
            if size >= grow_at or size > limit:
                stop = i + 1
                break
    scal[S_SIZE] = size
    scal[S_MG_SIZE] = mg_size
    scal[S_MG_ERR] = mg_err
    scal[S_MIN_TS] = min_ts
    scal[S_MAX_TS] = max_ts
    return stop


@numba.njit(nogil=True, cache=True)
def table_entries(table: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """The occupied rows of a table (either layout), shape ``(size, width)``, in slot order."""
    cap = table.shape[0]
    n = 0
    for s in range(cap):
        if table[s, COL_COUNT] > 0:
            n += 1
    out = np.empty((n, table.shape[1]), dtype=np.int64)
    m = 0
    for s in range(cap):
        if table[s, COL_COUNT] > 0:
            out[m, :] = table[s, :]
            m += 1
    return out


@numba.njit(nogil=True, cache=True)
def build_table(entries: np.ndarray, capacity: int) -> tuple[np.ndarray, int]:  # pragma: no cover
    """A new table of ``capacity`` slots holding ``entries`` (rows with equal keys are summed).

    Returns:
        (table, distinct keys inserted).
    """
    table = np.zeros((capacity, 4), dtype=np.int64)
    mask = np.uint64(capacity - 1)
    n = 0
    for r in range(entries.shape[0]):
        if _put_row(
            table,
            mask,
            entries[r, COL_KEY],
            entries[r, COL_COUNT],
            entries[r, COL_FIRST],
            entries[r, COL_LAST],
        ):
            n += 1
    return table, n


@numba.njit(nogil=True, cache=True)
def sample_hash(keys: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """The sampling hash h2 of each key (uint64); the table keeps ``h2 < 2**(64 - level)``."""
    out = np.empty(keys.shape[0], dtype=np.uint64)
    for i in range(keys.shape[0]):
        out[i] = fmix64(_h1(keys[i]) ^ SALT_SAMPLE)
    return out


@numba.njit(nogil=True, cache=True)
def build_summary(rows: np.ndarray, capacity: int) -> np.ndarray:  # pragma: no cover - compiled
    """A Misra-Gries table of ``capacity`` slots holding ``rows`` (``(n, 5)``, unique keys)."""
    mg = np.zeros((capacity, 5), dtype=np.int64)
    mask = np.uint64(capacity - 1)
    for r in range(rows.shape[0]):
        _put_summary_row(mg, mask, rows[r])
    return mg
