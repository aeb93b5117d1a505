"""Row liveness: which hashed rows keep a row under a table's pruning policy.

A hashed row is dead when (see :class:`adrank.types.PruningPolicy`):

* no lookup hit it in the counted logs, or none in the last ``unseen_window_s`` before the
  reference time (lookups without a timestamp never count as recent), or
* it was hit fewer than ``min_count`` times.

Protected rows (a feature's dedicated heavy-hitter rows) are never dead. When more rows are live
than the table has room for, the least-accessed live rows are dropped too (ties: the older last
access first, then the higher hashed id), so the outcome is deterministic.
"""

from __future__ import annotations

import logging

import numpy as np

from adrank.errors import InputError, PlanError, PlanErrorKind
from adrank.types import PruningAction, PruningPolicy
from pruning.types import AccessCounts, LiveRows

__all__ = ["select_live_rows"]

logger = logging.getLogger(__name__)


def select_live_rows(
    counts: AccessCounts,
    policy: PruningPolicy,
    *,
    capacity: int | None = None,
    protected: np.ndarray | None = None,
    reference_time_s: int | None = None,
) -> LiveRows:
    """Decide which hashed rows of a table keep a row.

    Args:
        counts: Lookups and last access per hashed row.
        policy: The table's policy; ``KEEP_ALL`` keeps every row.
        capacity: Most rows that may be kept (the table's rows minus its fallback row; None: no
            limit).
        protected: bool per hashed row: rows kept whatever their counts (dedicated rows).
        reference_time_s: "Now" for the recency window (None: ``counts.log_end_s``).

    Returns:
        The decision and how many rows each reason removed.

    Raises:
        InputError: The policy has a recency window but the counts have no timestamps (and no
            reference time was given), a negative window or count, or a protected mask of the
            wrong length.
        PlanError: ``CONSTRAINT_CONFLICT`` when the protected rows alone, or (for ``KEEP_ALL``) all
            rows, exceed ``capacity``.
    """
    n = counts.hashed_rows
    problems: list[InputError] = []
    if policy.unseen_window_s is not None and policy.unseen_window_s < 0:
        problems.append(
            InputError(
                f"unseen_window_s must be >= 0, found {policy.unseen_window_s}",
                source=f"{counts.table}.pruning.unseen_window_s",
            )
        )
    if policy.min_count < 0:
        problems.append(
            InputError(
                f"min_count must be >= 0, found {policy.min_count}",
                source=f"{counts.table}.pruning.min_count",
            )
        )
    if protected is not None and protected.shape != (n,):
        problems.append(
            InputError(
                f"protected mask has shape {protected.shape}, expected ({n},)",
                source=f"{counts.table}.protected",
            )
        )
    ref = reference_time_s if reference_time_s is not None else counts.log_end_s
    if (
        policy.action is PruningAction.DROP_DEAD
        and policy.unseen_window_s is not None
        and ref is None
    ):
        problems.append(
            InputError(
                f"table {counts.table!r} prunes rows unseen for {policy.unseen_window_s} s, but "
                "its access counts carry no timestamps",
                source=f"{counts.table}.pruning.unseen_window_s",
                hint="count accesses on logs with a timestamp column, pass a reference time, or "
                "use a count threshold only",
            )
        )
    if problems:
        raise InputError.from_problems(problems)

    if policy.action is PruningAction.KEEP_ALL:
        if capacity is not None and n > capacity:
            raise PlanError(
                f"table {counts.table!r} keeps all {n} hashed rows but has room for {capacity}",
                kind=PlanErrorKind.CONSTRAINT_CONFLICT,
                source=counts.table,
                hint="give the table a drop_dead pruning policy or more rows",
            )
        return LiveRows(np.ones(n, dtype=bool))

    c = counts.counts
    unseen = c == 0
    if policy.unseen_window_s is not None:
        assert ref is not None  # checked above
        unseen |= counts.last_access_s < ref - policy.unseen_window_s
    rare = ~unseen & (c < policy.min_count)
    prot = np.zeros(n, dtype=bool) if protected is None else protected.astype(bool, copy=False)
    keep = ~(unseen | rare) | prot
    num_protected = int(np.count_nonzero(prot))
    num_unseen = int(np.count_nonzero(unseen & ~prot))
    num_rare = int(np.count_nonzero(rare & ~prot))

    over = 0
    live = int(np.count_nonzero(keep))
    if capacity is not None and live > capacity:
        if num_protected > capacity:
            raise PlanError(
                f"table {counts.table!r} has {num_protected} dedicated rows but room for only "
                f"{capacity} rows",
                kind=PlanErrorKind.CONSTRAINT_CONFLICT,
                source=counts.table,
                hint="re-plan with fewer heavy hitters or more rows for this table",
            )
        over = live - capacity
        candidates = np.flatnonzero(keep & ~prot)
        # Primary key: fewest lookups; then the oldest last access; then the highest hashed id.
        order = np.lexsort((-candidates, counts.last_access_s[candidates], c[candidates]))
        keep = keep.copy()
        keep[candidates[order[:over]]] = False
        logger.warning(
            "table %s: %d live rows exceed its %d rows; dropped the %d least-accessed",
            counts.table,
            live,
            capacity,
            over,
        )
    return LiveRows(keep, num_unseen, num_rare, over, num_protected)
