"""Replay logged requests through a ranker and measure what serving them cost and earned.

:func:`logged_requests` reads requests (user, context, candidates in logged order, their labels)
from ``requests.parquet`` and ``impressions.parquet``; :func:`replay` sends each to a rank function
(an in-process :meth:`ranker.serving.Ranker.rank` or a gRPC client's ``rank``) and reports AUC and
log loss of the served scores against the logged clicks, latency percentiles, the tier mix, and the
compute cost relative to always using the largest tier.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ranker.metrics import auc

__all__ = ["LoggedRequest", "ReplayReport", "logged_requests", "replay"]


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One logged request.

    Attributes:
        request_id: Its id.
        user_id: Raw user id.
        ad_ids: Candidates in logged order.
        labels: Clicks per candidate.
        context: Request-level columns (ids, lists, dense values) by name.
        ts_s: Request time, epoch seconds.
    """

    request_id: int
    user_id: int
    ad_ids: np.ndarray
    labels: np.ndarray
    context: dict[str, Any]
    ts_s: int = 0


def logged_requests(
    logs_dir: str | Path, *, start_s: int | None = None, limit: int | None = None
) -> Iterator[LoggedRequest]:
    """Requests at or after ``start_s`` (epoch seconds), in time order, at most ``limit``."""
    logs = Path(logs_dir)
    reqs = pq.read_table(logs / "requests.parquet")
    secs = pc.cast(reqs.column("ts"), pa.timestamp("s", tz="UTC")).cast(pa.int64()).to_numpy()
    keep = np.ones(len(secs), dtype=bool) if start_s is None else secs >= start_s
    reqs = reqs.filter(pa.array(keep))
    if limit is not None:
        reqs = reqs.slice(0, limit)
    if reqs.num_rows == 0:
        return
    ids = reqs.column("request_id").to_numpy()
    imps = pq.read_table(
        logs / "impressions.parquet",
        columns=["request_id", "ad_id", "label"],
        filters=[("request_id", ">=", int(ids.min())), ("request_id", "<=", int(ids.max()))],
    )
    rid = imps.column("request_id").to_numpy()
    order = np.argsort(rid, kind="stable")
    rid = rid[order]
    ads = imps.column("ad_id").to_numpy()[order]
    labels = imps.column("label").to_numpy()[order]
    context_cols = [c for c in reqs.column_names if c not in ("request_id", "ts", "user_id")]
    rows = reqs.to_pylist()
    times = pc.cast(reqs.column("ts"), pa.timestamp("s", tz="UTC")).cast(pa.int64()).to_numpy()
    for row, ts in zip(rows, times, strict=True):
        lo, hi = (
            np.searchsorted(rid, row["request_id"], "left"),
            np.searchsorted(rid, row["request_id"], "right"),
        )
        if hi == lo:
            continue
        yield LoggedRequest(
            request_id=int(row["request_id"]),
            user_id=int(row["user_id"]),
            ad_ids=ads[lo:hi],
            labels=labels[lo:hi].astype(np.float64),
            context={c: (row[c] if row[c] is not None else 0) for c in context_cols},
            ts_s=int(ts),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayReport:
    """What replaying requests measured.

    Attributes:
        requests / candidates: Counted.
        auc: Of the served scores against the logged clicks.
        latency_ms: p50 / p90 / p99 of the rank calls, end to end as the caller saw them.
        tier_mix: Share of requests per tier.
        relative_cost: Mean compute cost relative to always-largest (weighted by candidates).
        reasons: Requests per routing reason.
    """

    requests: int
    candidates: int
    auc: float
    latency_ms: dict[str, float]
    tier_mix: dict[str, float]
    relative_cost: float
    reasons: dict[str, int]


def replay(
    rank: Callable[..., Any],
    requests: Sequence[LoggedRequest],
    relative_cost: Mapping[str, float],
    *,
    latency_budget_ms: float | None = None,
    warmup: int = 5,
) -> ReplayReport:
    """Send each request to ``rank(user_id, ad_ids, context, latency_budget_ms=...,
    request_id=..., as_of_us=...)`` (which returns an object with ``scores``, ``tier`` and
    ``reason``); features are read as of each request's logged time.

    Args:
        rank: The rank function.
        requests: Requests to send, in order.
        relative_cost: Tier name -> compute cost relative to the largest tier.
        latency_budget_ms: Passed to every call.
        warmup: Calls sent first and not measured.
    """
    for r in requests[:warmup]:
        rank(
            r.user_id,
            r.ad_ids,
            r.context,
            latency_budget_ms=latency_budget_ms,
            as_of_us=r.ts_s * 10**6,
        )
    scores, labels, lat = [], [], []
    tiers: dict[str, int] = {}
    reasons: dict[str, int] = {}
    cost = weight = 0.0
    for r in requests:
        t0 = time.perf_counter()
        # Features as of the request's time: what serving saw then, nothing from later.
        out = rank(
            r.user_id,
            r.ad_ids,
            r.context,
            latency_budget_ms=latency_budget_ms,
            request_id=r.request_id,
            as_of_us=r.ts_s * 10**6,
        )
        lat.append(time.perf_counter() - t0)
        scores.append(np.asarray(out.scores, dtype=np.float64))
        labels.append(r.labels)
        tiers[out.tier] = tiers.get(out.tier, 0) + 1
        reasons[out.reason] = reasons.get(out.reason, 0) + 1
        cost += relative_cost[out.tier] * len(r.ad_ids)
        weight += len(r.ad_ids)
    n = max(len(requests), 1)
    ms = np.asarray(lat) * 1e3 if lat else np.zeros(1)
    return ReplayReport(
        requests=len(requests),
        candidates=int(weight),
        auc=auc(np.concatenate(labels), np.concatenate(scores)) if labels else 0.5,
        latency_ms={f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)},
        tier_mix={t: c / n for t, c in sorted(tiers.items())},
        relative_cost=cost / max(weight, 1.0),
        reasons=reasons,
    )
