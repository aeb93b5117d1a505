"""The point-in-time join's selective path: one RocksDB seek per distinct (entity, time) query.

Used when a batch touches few of a group's versions, or when a group's decoded versions do not fit
the join's memory budget (:mod:`feature_service.pit_versions` is the bulk path). The reads are
:meth:`FeatureStore.seek_versions`: queries sorted into the versions column family's key order, one
iterator with monotone seeks, duplicates read once, misses classified with one multi_get of latest
rows. This module turns its result into the join's
:class:`~feature_service.pit_versions.MatchReason` codes. Memory is bounded by the batch: only the
matched values are kept and decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from feature_service.pit_versions import MatchReason
from feature_service.store import FeatureStore
from feature_service.types import FeatureColumn

__all__ = ["SeekResult", "seek_as_of"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, eq=False)
class SeekResult:
    """Matches of one batch of queries read by seeks.

    Args:
        row: Per query, the row of the match in ``columns`` / ``event_us`` (-1 where none).
        reason: Per query, its :class:`~feature_service.pit_versions.MatchReason` code.
        event_us: Event time of each matched version.
        columns: Decoded features of the matched versions.
        seeks: RocksDB seeks made (distinct non-null queries).
    """

    row: np.ndarray
    reason: np.ndarray
    event_us: np.ndarray
    columns: dict[str, FeatureColumn]
    seeks: int


def seek_as_of(
    store: FeatureStore,
    group: str,
    features: Sequence[str],
    keys: np.ndarray,
    times_us: np.ndarray,
    ok: np.ndarray,
) -> SeekResult:
    """Point-in-time matches of n queries by seeking, with the same rule as
    :func:`~feature_service.pit_versions.match_as_of`.

    Args:
        store: An open store.
        group: Group name.
        features: Features to decode.
        keys: int64 entity id keys.
        times_us: int64 query times (microseconds).
        ok: False where the query's key or time is null (reason NULL_KEY, no seek).

    Returns:
        The matches.

    Raises:
        NotFoundError: Unknown group or feature.
        InputError: ``keys`` not int64.
        StoreError: RocksDB failed or a stored key or value is corrupt.
    """
    n = keys.shape[0]
    reason = np.full(n, MatchReason.NULL_KEY, dtype=np.int8)
    row = np.full(n, -1, dtype=np.int64)
    live = np.flatnonzero(ok)
    res = store.seek_versions(group, keys[live], times_us[live], features)
    reason[live] = np.where(
        res.row >= 0,
        MatchReason.MATCHED,
        np.where(
            res.has_past,
            MatchReason.EXPIRED,
            np.where(res.has_entity, MatchReason.FUTURE_ONLY, MatchReason.NO_ENTITY),
        ),
    )
    row[live] = res.row
    return SeekResult(row, reason, res.event_us, res.columns, res.seeks)
