"""numba kernels of the pruning package (compiled on first use, cached on disk)."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["accumulate_accesses", "accumulate_counts"]


@numba.njit(cache=True, nogil=True)
def accumulate_accesses(
    hashed_ids: np.ndarray, ts_s: np.ndarray, counts: np.ndarray, last_access_s: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Add one lookup per entry of ``hashed_ids`` and raise each row's last access to its time.

    Args:
        hashed_ids: int64 hashed ids, all in ``[0, len(counts))`` (checked by the caller).
        ts_s: int64 time per lookup (int64 min where unknown: it never raises ``last_access_s``).
        counts: int64 lookups per hashed id, updated in place.
        last_access_s: int64 latest time per hashed id, updated in place.
    """
    for i in range(hashed_ids.shape[0]):
        h = hashed_ids[i]
        counts[h] += 1
        t = ts_s[i]
        if t > last_access_s[h]:
            last_access_s[h] = t


@numba.njit(cache=True, nogil=True)
def accumulate_counts(hashed_ids: np.ndarray, counts: np.ndarray) -> None:  # pragma: no cover
    """Add one lookup per entry of ``hashed_ids`` (no timestamps).

    Args:
        hashed_ids: int64 hashed ids in ``[0, len(counts))``.
        counts: int64 lookups per hashed id, updated in place.
    """
    for i in range(hashed_ids.shape[0]):
        counts[hashed_ids[i]] += 1
