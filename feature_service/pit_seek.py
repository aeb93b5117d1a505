"""The point-in-time join's selective path: one RocksDB seek per distinct (entity, time) query.

Used when a batch touches few of a group's versions, or when a group's decoded versions do not fit
the join's memory budget (:mod:`feature_service.pit_versions` is the bulk path). Queries are sorted
by (entity ascending, time descending), which is the versions column family's key order, so one
iterator serves the batch with monotone seeks; duplicates are read once. A seek to
``[ver][entity][~t]`` lands on the entity's newest version with ``event <= t`` (ties: the newest
created), see :mod:`feature_service.keys`. Misses are classified with one multi_get on the latest
column family (the entity has some version: only future ones; else none). Memory is bounded by the
batch: only the matched values are kept and decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from adrank.errors import StoreError
from feature_service import keys as K
from feature_service.pit_versions import MatchReason, _latest_cf, _versions_cf, store_errors
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
        StoreError: RocksDB failed or a stored key or value is corrupt.
    """
    n = keys.shape[0]
    g = store.group(group)
    codec = store._handles(group).codec
    reason = np.full(n, MatchReason.NULL_KEY, dtype=np.int8)
    row = np.full(n, -1, dtype=np.int64)
    live = np.flatnonzero(ok)
    if live.shape[0] == 0:
        dec = codec.decode([], list(features))
        return SeekResult(row, reason, dec.event_us, dec.columns, 0)
    k = keys[live]
    t = times_us[live]
    # Key order of the seek targets: entity ascending, then ~t ascending (t descending).
    order = np.lexsort((~t, k))
    k, t, live = k[order], t[order], live[order]
    first = np.ones(k.shape[0], dtype=bool)
    first[1:] = (k[1:] != k[:-1]) | (t[1:] != t[:-1])
    uk, ut = k[first], t[first]
    query_of = np.cumsum(first) - 1  # sorted position -> distinct query
    m = uk.shape[0]
    targets = K.seek_keys(uk, ut)
    found_keys: list[bytes] = []
    found_values: list[bytes] = []
    found_at: list[int] = []
    pl = K.ENTITY_PREFIX_BYTES
    cf = _versions_cf(store, group)
    with store_errors(f"read versions of group {group!r}", store.path):
        it = cf.iter()
        try:
            for j, target in enumerate(targets):
                it.seek(target)
                if it.valid():
                    key = cast(bytes, it.key())
                    if key[:pl] == target[:pl]:
                        found_keys.append(key)
                        found_values.append(cast(bytes, it.value()))
                        found_at.append(j)
            it.status()
        finally:
            del it
    q_reason = np.empty(m, dtype=np.int8)
    q_row = np.full(m, -1, dtype=np.int64)
    hit = np.zeros(m, dtype=bool)
    hit[found_at] = True
    at = np.asarray(found_at, dtype=np.int64)
    values: list[bytes] = []
    if at.shape[0]:
        try:
            _ids, ev, _cr = K.decode_version_keys(found_keys)
        except ValueError as exc:
            raise StoreError(
                f"corrupt version key in group {group!r}: {exc}", source=store.path
            ) from exc
        ttl = g.ttl_us
        expired = np.zeros(at.shape[0], dtype=bool)
        if ttl is not None:
            # Inclusive bound, as match_as_of: expired when event < t - ttl (saturating at int64).
            cutoff = np.maximum(ut[at], np.iinfo(np.int64).min + ttl) - ttl
            expired = ev < cutoff
        q_reason[at[expired]] = MatchReason.EXPIRED
        good = at[~expired]
        q_reason[good] = MatchReason.MATCHED
        q_row[good] = np.arange(good.shape[0], dtype=np.int64)
        values = [v for v, e in zip(found_values, expired.tolist(), strict=True) if not e]
    miss = np.flatnonzero(~hit)
    if miss.shape[0]:
        ents, inverse = np.unique(uk[miss], return_inverse=True)
        with store_errors(f"read latest rows of group {group!r}", store.path):
            latest = cast("list[bytes | None]", _latest_cf(store, group).get(K.latest_keys(ents)))
        exists = np.array([v is not None for v in latest], dtype=bool)
        q_reason[miss] = np.where(
            exists[inverse], MatchReason.FUTURE_ONLY, MatchReason.NO_ENTITY
        ).astype(np.int8)
    try:
        dec = codec.decode(values, list(features))
    except ValueError as exc:
        raise StoreError(f"corrupt value in group {group!r}: {exc}", source=store.path) from exc
    reason[live] = q_reason[query_of]
    row[live] = q_row[query_of]
    return SeekResult(row, reason, dec.event_us, dec.columns, m)
