"""Pruning quality on a later log window: how much traffic reads the fallback instead of its row.

The remap is made from counts over an earlier window (the training logs); a later window (the
next day, held out) shows what serving would see. See :class:`~pruning.types.PruningQuality`.
"""

from __future__ import annotations

import numpy as np

from adrank.errors import InputError
from adrank.remap import RowRemap
from pruning.types import AccessCounts, PruningQuality

__all__ = ["evaluate_pruning", "pruned_traffic_share"]


def _check(remap: RowRemap, counts: AccessCounts, what: str) -> None:
    if counts.hashed_rows != remap.hashed_rows:
        raise InputError(
            f"{what} counts have {counts.hashed_rows} hashed rows; the remap of table "
            f"{remap.table!r} has {remap.hashed_rows}",
            source=counts.table,
            hint="count both windows with the plan the remap was made for",
        )


def pruned_traffic_share(remap: RowRemap, counts: AccessCounts) -> float:
    """Share of the lookups in ``counts`` that hit a pruned hashed id (0 when there are none).

    Raises:
        InputError: The counts and the remap disagree on the table's size.
    """
    _check(remap, counts, "the")
    total = counts.total_lookups
    if not total:
        return 0.0
    return float(counts.counts[remap.hashed_to_row < 0].sum()) / total


def evaluate_pruning(remap: RowRemap, earlier: AccessCounts, later: AccessCounts) -> PruningQuality:
    """Compare the unpruned and the pruned table on a later window's lookups.

    Args:
        remap: Remap built from ``earlier``.
        earlier: Counts of the window the remap was built from (the training window).
        later: Counts of a later window.

    Returns:
        Shares of the later lookups that read a pruned, an untrained, or a lost trained row.

    Raises:
        InputError: Counts of another size than the remap.
    """
    _check(remap, earlier, "earlier")
    _check(remap, later, "later")
    c = later.counts
    total = int(c.sum())
    pruned = remap.hashed_to_row < 0
    untrained = earlier.counts == 0

    def share(mask: np.ndarray) -> float:
        return float(c[mask].sum()) / total if total else 0.0

    return PruningQuality(
        table=remap.table,
        lookups=total,
        pruned_share=share(pruned),
        untrained_share_before=share(untrained),
        untrained_share_after=share(pruned | untrained),
        lost_trained_share=share(pruned & ~untrained),
        kept_unused_rows=int(np.count_nonzero(~pruned & (c == 0))),
    )
