"""The per-request tier router: predicted uplift of a larger tier, cold-start fallback, latency
downgrade, and a decision log that makes drift visible.

For each request the router reads a few context values (:func:`router_features`: history length,
user activity, cold start, candidate count), predicts with one ridge regression per larger tier the
*uplift* of that tier over the smallest one (the mean per-candidate log-loss improvement measured
on held-in data: :func:`uplift_targets`), and picks the tier with the best predicted uplift minus
``cost_weight`` x its relative compute cost. Then two rules override it:

* cold start (no behaviour history): the configured safe tier, whatever the prediction (the
  uplift model saw few such users and the large tier's attention has nothing to attend to);
* latency budget: if the chosen tier's expected latency for this request exceeds the budget, the
  next smaller tier that fits (the smallest tier if none fits).

``cost_weight`` is calibrated on held-in data (:meth:`TierRouter.calibrate`) as the cheapest
setting whose routed quality stays within ``max_auc_loss`` of always-largest. Every decision is
recorded (:class:`RouterLog`) with its features, predictions, tier and reason; once labels arrive,
:meth:`RouterLog.quality` reports the realised uplift of routed requests per tier, so a router
whose predictions stop matching reality shows up.

Pure numpy: the router is cheap enough to run per request on the serving path (a few dot products).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adrank.errors import InputError
from adrank.formats import read_json_document, write_json_document

__all__ = [
    "RECENT_DECISIONS",
    "FORMAT_VERSION_ROUTER",
    "ROUTER_KIND",
    "ROUTER_FEATURES",
    "RouteReason",
    "RouterDecision",
    "RouterLog",
    "TierRouter",
    "router_features",
    "uplift_targets",
]

ROUTER_FEATURES = ("log_history_len", "cold_start", "log_user_activity", "log_candidates")
"""Context values the router reads per request, in order."""

RECENT_DECISIONS = 10_000
"""Decisions a :class:`RouterLog` keeps in memory."""

ROUTER_KIND = "adrank.router"
FORMAT_VERSION_ROUTER = 1


class RouteReason(enum.Enum):
    """Why a request got its tier."""

    PREDICTED_UPLIFT = "predicted_uplift"
    COLD_START = "cold_start"
    LATENCY_BUDGET = "latency_budget"


def router_features(
    history_len: np.ndarray, user_activity: np.ndarray, num_candidates: np.ndarray
) -> np.ndarray:
    """The router's context matrix ``[R, len(ROUTER_FEATURES)]`` (float64).

    Args:
        history_len: Items in each user's history (0 = cold start).
        user_activity: Behaviour items per day (any scale >= 0).
        num_candidates: Candidates per request.
    """
    h = np.asarray(history_len, dtype=np.float64)
    return np.stack(
        [
            np.log1p(np.maximum(h, 0)),
            (h <= 0).astype(np.float64),
            np.log1p(np.maximum(np.asarray(user_activity, dtype=np.float64), 0)),
            np.log1p(np.maximum(np.asarray(num_candidates, dtype=np.float64), 0)),
        ],
        axis=1,
    )


def uplift_targets(
    loss_small: np.ndarray, loss_other: np.ndarray, candidate_request: np.ndarray, num_requests: int
) -> np.ndarray:
    """Per-request mean log-loss improvement of a tier over the smallest (positive = better).

    Args:
        loss_small: Per-candidate log loss of the smallest tier.
        loss_other: Per-candidate log loss of the other tier.
        candidate_request: Request row of each candidate.
        num_requests: Requests.
    """
    diff = np.asarray(loss_small, dtype=np.float64) - np.asarray(loss_other, dtype=np.float64)
    total = np.bincount(candidate_request, weights=diff, minlength=num_requests)
    count = np.bincount(candidate_request, minlength=num_requests)
    return total / np.maximum(count, 1)


@dataclasses.dataclass(frozen=True, slots=True)
class RouterDecision:
    """One request's routing.

    Attributes:
        tier: Index of the chosen tier (0 = smallest).
        reason: Why.
        predicted_uplift: Predicted uplift of each tier over the smallest (0 for the smallest).
    """

    tier: int
    reason: RouteReason
    predicted_uplift: tuple[float, ...]


@dataclasses.dataclass
class TierRouter:
    """Routes requests among tiers ordered smallest to largest.

    Attributes:
        tier_names: Names, smallest first.
        relative_cost: Compute cost of each tier relative to the largest (largest = 1).
        coef: ``[tiers - 1, features + 1]`` ridge weights (last column: intercept) predicting each
            larger tier's uplift over the smallest.
        cost_weight: Uplift (nats per candidate) one unit of relative cost must buy.
        safe_tier: Tier for cold-start users.
        feature_mean / feature_std: Standardisation of the context features.
    """

    tier_names: tuple[str, ...]
    relative_cost: tuple[float, ...]
    coef: np.ndarray
    cost_weight: float
    safe_tier: int
    feature_mean: np.ndarray
    feature_std: np.ndarray

    @classmethod
    def fit(
        cls,
        tier_names: Sequence[str],
        relative_cost: Sequence[float],
        features: np.ndarray,
        uplifts: np.ndarray,
        *,
        safe_tier: int = 1,
        ridge: float = 1.0,
        cost_weight: float = 0.0,
    ) -> TierRouter:
        """Fit the uplift regressions.

        Args:
            tier_names: Tiers, smallest first (at least two).
            relative_cost: Per tier, compute cost relative to the largest.
            features: ``[R, len(ROUTER_FEATURES)]`` context of held-in requests.
            uplifts: ``[R, tiers - 1]`` measured uplift of each larger tier over the smallest.
            safe_tier: Tier for cold-start users.
            ridge: L2 penalty.
            cost_weight: Initial trade-off (see :meth:`calibrate`).

        Raises:
            InputError: Shapes that do not match, or fewer than two tiers.
        """
        k = len(tier_names)
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(uplifts, dtype=np.float64)
        if k < 2 or len(relative_cost) != k or y.shape != (x.shape[0], k - 1):
            raise InputError(
                f"need >= 2 tiers with one cost each and uplifts [R, tiers-1]; got {k} tiers, "
                f"{len(relative_cost)} costs, features {x.shape}, uplifts {y.shape}",
                source="TierRouter.fit",
            )
        if not 0 <= safe_tier < k:
            raise InputError(f"safe_tier must be in [0, {k}), got {safe_tier}", source="safe_tier")
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
        z = np.hstack([(x - mean) / std, np.ones((x.shape[0], 1))])
        reg = ridge * np.eye(z.shape[1])
        reg[-1, -1] = 0.0  # no penalty on the intercept
        coef = np.linalg.solve(z.T @ z + reg, z.T @ y).T
        return cls(
            tier_names=tuple(tier_names),
            relative_cost=tuple(float(c) for c in relative_cost),
            coef=coef,
            cost_weight=cost_weight,
            safe_tier=safe_tier,
            feature_mean=mean,
            feature_std=std,
        )

    def predict_uplift(self, features: np.ndarray) -> np.ndarray:
        """``[R, tiers]`` predicted uplift over the smallest tier (column 0 is 0)."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        z = np.hstack([(x - self.feature_mean) / self.feature_std, np.ones((x.shape[0], 1))])
        return np.hstack([np.zeros((x.shape[0], 1)), z @ self.coef.T])

    def route(
        self,
        features: np.ndarray,
        *,
        latency_budget_ms: np.ndarray | float | None = None,
        expected_latency_ms: np.ndarray | None = None,
    ) -> list[RouterDecision]:
        """Choose a tier per request.

        Args:
            features: ``[R, len(ROUTER_FEATURES)]``.
            latency_budget_ms: Per request (or one for all); None: no budget.
            expected_latency_ms: ``[R, tiers]`` expected latency of each tier for each request
                (needed with a budget).
        """
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        pred = self.predict_uplift(x)
        score = pred - self.cost_weight * np.asarray(self.relative_cost)[None, :]
        best = score.argmax(axis=1)
        cold = x[:, ROUTER_FEATURES.index("cold_start")] > 0.5
        budget = (
            None
            if latency_budget_ms is None
            else np.broadcast_to(np.asarray(latency_budget_ms, dtype=np.float64), (x.shape[0],))
        )
        out = []
        for i in range(x.shape[0]):
            tier, reason = int(best[i]), RouteReason.PREDICTED_UPLIFT
            if cold[i]:
                tier, reason = self.safe_tier, RouteReason.COLD_START
            if budget is not None and expected_latency_ms is not None:
                lat = expected_latency_ms[i]
                if lat[tier] > budget[i]:
                    fits = [t for t in range(tier) if lat[t] <= budget[i]]
                    tier, reason = (max(fits) if fits else 0), RouteReason.LATENCY_BUDGET
            out.append(RouterDecision(tier, reason, tuple(float(v) for v in pred[i])))
        return out

    def calibrate(
        self,
        features: np.ndarray,
        per_tier_scores: Sequence[np.ndarray],
        labels: np.ndarray,
        candidate_request: np.ndarray,
        *,
        max_auc_loss: float = 0.002,
        grid: Sequence[float] | None = None,
    ) -> dict[str, float]:
        """Pick the cheapest ``cost_weight`` whose routed AUC is within ``max_auc_loss`` of the
        best single tier's (always-small, always-medium or always-large, whichever scores best), on
        held-in requests.

        The reference is the best tier rather than the largest: where a smaller tier matches or
        beats the largest on these requests, the routed traffic must still be within the loss of
        it, so the router does not spend the margin on the smallest tier. (On 300k-row synthetic
        logs one day's AUC moves by ~0.01 between days, more than the loss: a setting chosen on one
        day can miss on the next either way. A paired bootstrap over requests was tried and made
        it worse on those seeds: it pushed one seed to nearly always-large.)

        Args:
            features: ``[R, ...]`` router features of the held-in requests.
            per_tier_scores: Per tier, ``[C]`` scores of every candidate.
            labels: ``[C]`` clicks.
            candidate_request: ``[C]`` request row of each candidate.
            max_auc_loss: Allowed AUC drop versus the best single tier.
            grid: Candidate weights (default: 0 and a log grid).

        Returns:
            ``{"cost_weight", "auc", "relative_cost"}`` of the chosen setting, ``auc_largest``
            (always-largest), ``auc_reference`` and ``reference_tier`` (the best single tier).
        """
        from ranker.metrics import auc

        grid = list(grid) if grid is not None else [0.0, *np.geomspace(1e-4, 1.0, 25)]
        largest = len(self.tier_names) - 1
        per_tier_auc = [auc(labels, s) for s in per_tier_scores]
        reference = int(np.argmax(per_tier_auc))
        auc_reference = per_tier_auc[reference]
        settings = []
        for w in sorted(grid):
            self.cost_weight = float(w)
            tiers = np.array([d.tier for d in self.route(features)])
            scores = np.choose(tiers[candidate_request], per_tier_scores)
            cost = float(np.mean(np.asarray(self.relative_cost)[tiers]))
            settings.append(
                {"cost_weight": float(w), "auc": auc(labels, scores), "relative_cost": cost}
            )
        ok = [x for x in settings if x["auc"] >= auc_reference - max_auc_loss]
        if ok:
            best = min(ok, key=lambda x: (x["relative_cost"], -x["auc"]))
        else:
            # No weight reaches the reference (the uplift model cannot express routing to it):
            # the best quality on offer, cheapest among equals.
            best = min(settings, key=lambda x: (-x["auc"], x["relative_cost"]))
        self.cost_weight = best["cost_weight"]
        return {
            **best,
            "auc_largest": per_tier_auc[largest],
            "auc_reference": auc_reference,
            "reference_tier": float(reference),
        }

    def save(self, path: str | Path) -> None:
        """Write the router (atomically)."""
        write_json_document(
            path,
            ROUTER_KIND,
            FORMAT_VERSION_ROUTER,
            {
                "tier_names": list(self.tier_names),
                "relative_cost": list(self.relative_cost),
                "coef": self.coef.tolist(),
                "cost_weight": self.cost_weight,
                "safe_tier": self.safe_tier,
                "feature_mean": self.feature_mean.tolist(),
                "feature_std": self.feature_std.tolist(),
                "features": list(ROUTER_FEATURES),
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> TierRouter:
        """Read a router written by :meth:`save`.

        Raises:
            InputError: Not a router file, or made for other router features.
        """
        doc = read_json_document(path, ROUTER_KIND, (FORMAT_VERSION_ROUTER,))
        if tuple(doc.get("features", ())) != ROUTER_FEATURES:
            raise InputError(
                f"router features {doc.get('features')} differ from {list(ROUTER_FEATURES)}",
                source=str(path),
                hint="retrain the router with this version (adrank train)",
            )
        return cls(
            tier_names=tuple(doc["tier_names"]),
            relative_cost=tuple(doc["relative_cost"]),
            coef=np.asarray(doc["coef"], dtype=np.float64),
            cost_weight=float(doc["cost_weight"]),
            safe_tier=int(doc["safe_tier"]),
            feature_mean=np.asarray(doc["feature_mean"], dtype=np.float64),
            feature_std=np.asarray(doc["feature_std"], dtype=np.float64),
        )


@dataclasses.dataclass
class RouterLog:
    """Decisions and, once known, their outcomes (JSON lines when a path is given).

    Attributes:
        path: Where each decision is appended as a JSON line (None: memory only).
        decisions: The most recent decisions (at most :data:`RECENT_DECISIONS`: a server keeps
            running; the file has them all).
    """

    path: Path | None = None
    decisions: collections.deque[dict[str, object]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RECENT_DECISIONS)
    )

    def record(self, request_id: int, features: np.ndarray, decision: RouterDecision) -> None:
        entry: dict[str, object] = {
            "request_id": int(request_id),
            "features": [float(v) for v in np.asarray(features).ravel()],
            "tier": decision.tier,
            "reason": decision.reason.value,
            "predicted_uplift": list(decision.predicted_uplift),
        }
        self.decisions.append(entry)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def quality(self, realised_uplift: dict[int, Sequence[float]]) -> dict[str, dict[str, float]]:
        """Per chosen tier: requests, mean predicted vs realised uplift of that tier.

        Args:
            realised_uplift: request_id -> measured uplift of each tier over the smallest.
        """
        out: dict[str, dict[str, float]] = {}
        for d in self.decisions:
            rid = int(d["request_id"])  # type: ignore[call-overload]
            if rid not in realised_uplift:
                continue
            t = int(d["tier"])  # type: ignore[call-overload]
            s = out.setdefault(str(t), {"requests": 0.0, "predicted": 0.0, "realised": 0.0})
            s["requests"] += 1
            s["predicted"] += float(d["predicted_uplift"][t])  # type: ignore[index]
            s["realised"] += float(realised_uplift[rid][t])
        for s in out.values():
            s["predicted"] /= max(s["requests"], 1)
            s["realised"] /= max(s["requests"], 1)
        return out
