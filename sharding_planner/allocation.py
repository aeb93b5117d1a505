"""Hash-size allocation: rows per feature under a memory budget, minimising collision loss.

The loss is ``sum_f weight_f * rate_f(H_f, d_f)`` with ``weight_f = traffic share x importance``
and ``rate_f`` the expected collision rate of :mod:`sharding_planner.collision`: ``H_f`` hashed
rows and ``d_f`` dedicated rows for the feature's most frequent live ids. ``H_f >= min_hash_size``
(new ids need somewhere to land).

What a feature's rows cost depends on whether its table will be pruned (features from stats, with
pruning on; the stats say which ids are live):

* Pruned: only the rows live ids hit are stored, so the stored rows are ``d + occ(H, n)`` with
  ``occ(H, n) = H * (1 - (1 - 1/H) ** n)`` the expected rows ``n`` live tail ids occupy -- never
  more than the live ids, however large ``H`` -- plus the remap (``REMAP_BYTES_PER_HASHED_ROW``
  per hashed id). ``H <= max_hash_per_live_id x live ids`` bounds the remap. A larger range then
  buys fewer collisions for little memory.
* Not pruned (a tables file, or pruning off): all ``H + d`` rows are stored, and
  ``H + d <= max(1, live_ids x max_rows_per_live_id)``: never more rows than the live ids.

:class:`LagrangianAllocator` minimises ``loss + lambda x bytes`` for each feature on its own, over a
grid of hashed-range sizes (every size up to 32, then steps of about 4%, plus the caps) and numbers
of dedicated heavy hitters (0, 1, 2, 4, ... and all of them), then bisects ``lambda`` until the
bytes fit the budget. Solving each feature exactly over its grid handles the non-convex start of
the collision curve (a few more rows for a badly overloaded range barely help), where a greedy
marginal-gain loop stalls. What the bisection leaves of the budget is then spent greedily on each
feature's next better grid point by loss reduction per byte. Without pruning, a last pass converts
hashed rows into dedicated rows wherever that lowers the loss at equal bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping

import numpy as np

from adrank.constants import REMAP_BYTES_PER_HASHED_ROW
from adrank.errors import PlanError, PlanErrorKind
from sharding_planner.collision import feature_collision_rate, shared_row_probability
from sharding_planner.types import (
    Allocation,
    AllocationConfig,
    FeatureSpec,
    HashSizeDecision,
    PlanInputs,
)

__all__ = ["LagrangianAllocator", "occupied_rows", "traffic_shares"]

logger = logging.getLogger(__name__)

_GRID_RATIO = 1.04
_GRID_DENSE = 32
_BISECT_STEPS = 60
_FILL_STEPS = 200


def traffic_shares(features: tuple[FeatureSpec, ...]) -> dict[str, float]:
    """Each feature's share of all lookups (by pooling factor; uniform if none has traffic)."""
    total = sum(f.pooling_factor for f in features)
    if total <= 0:
        return {f.name: 1.0 / len(features) for f in features}
    return {f.name: f.pooling_factor / total for f in features}


def occupied_rows(hash_size: int, num_ids: int) -> float:
    """Expected rows of a ``hash_size`` range that ``num_ids`` uniformly hashed ids hit."""
    return hash_size * shared_row_probability(num_ids, hash_size)


def _hash_grid(lo: int, hi: int) -> np.ndarray:
    """Sizes lo..hi: every integer up to _GRID_DENSE, then geometric steps, and hi itself."""
    if hi <= lo:
        return np.array([lo], dtype=np.int64)
    dense = np.arange(lo, min(hi, _GRID_DENSE) + 1, dtype=np.int64)
    start = max(lo, _GRID_DENSE)
    if hi > start:
        n = math.ceil(math.log(hi / start) / math.log(_GRID_RATIO)) + 1
        geo = np.unique(np.ceil(start * _GRID_RATIO ** np.arange(n)).astype(np.int64))
        dense = np.concatenate([dense, geo[geo <= hi], np.array([hi], dtype=np.int64)])
    return np.unique(dense)


def _dedicated_grid(max_ded: int) -> np.ndarray:
    if max_ded <= 0:
        return np.zeros(1, dtype=np.int64)
    vals = {0, max_ded} | {1 << i for i in range(max_ded.bit_length()) if 1 << i <= max_ded}
    return np.array(sorted(vals), dtype=np.int64)


@dataclasses.dataclass(slots=True)
class _Options:
    """One feature's candidate (hashed size, dedicated) points with their loss and bytes."""

    spec: FeatureSpec
    row_bytes: int
    pruned: bool
    max_hash: int
    max_rows: int
    max_dedicated: int
    hash_size: np.ndarray
    dedicated: np.ndarray
    loss: np.ndarray  # weighted collision loss
    cost: np.ndarray  # bytes charged
    capped_at: tuple[int, int]


def _options(
    spec: FeatureSpec, weight: float, row_bytes: int, pruned: bool, cfg: AllocationConfig
) -> _Options:
    max_rows = max(1, cfg.min_hash_size, math.floor(spec.live_ids * cfg.max_rows_per_live_id))
    max_hash = (
        max(cfg.min_hash_size, math.ceil(spec.live_ids * cfg.max_hash_per_live_id))
        if pruned
        else max_rows
    )
    max_ded = len(spec.heavy_hitters)
    if cfg.max_dedicated_per_feature is not None:
        max_ded = min(max_ded, cfg.max_dedicated_per_feature)
    if not pruned:
        max_ded = min(max_ded, max_rows - cfg.min_hash_size)
    max_ded = max(0, max_ded)
    hs = _hash_grid(cfg.min_hash_size, max_hash)
    ds = _dedicated_grid(max_ded)
    h, d = (a.ravel() for a in np.meshgrid(hs, ds, indexing="ij"))
    if not pruned:
        keep = h + d <= max_rows
        h, d = h[keep], d[keep]
    shares = np.array([x for _, x in spec.heavy_hitters[:max_ded]], dtype=np.float64)
    served = np.concatenate([[0.0], np.cumsum(shares)])[d]
    tail_share = np.maximum(0.0, 1.0 - served)
    n_tail = np.maximum(0, spec.live_ids - d).astype(np.float64)
    hf = h.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_keep = np.where(hf > 1, np.log1p(-1.0 / hf), -np.inf)
        others = np.maximum(n_tail - 1, 0.0)
        p_shared = np.where(others > 0, -np.expm1(others * log_keep), 0.0)
        occupied = np.where(n_tail > 0, hf * -np.expm1(n_tail * log_keep), 0.0)
    p_shared = np.nan_to_num(p_shared, nan=1.0)
    occupied = np.nan_to_num(occupied, nan=1.0)
    loss = weight * tail_share * p_shared
    if pruned:
        cost = row_bytes * (d + occupied) + REMAP_BYTES_PER_HASHED_ROW * (h + d)
    else:
        cost = (row_bytes * (h + d)).astype(np.float64)
    return _Options(
        spec,
        row_bytes,
        pruned,
        max_hash,
        max_rows,
        max_ded,
        h,
        d,
        loss,
        cost,
        (max_hash, max_ded) if pruned else (max_rows, 0),
    )


class LagrangianAllocator:
    """Lagrangian hash-size allocation with a greedy fill (the default :class:`Allocator`).

    Args:
        config: Caps and limits.
    """

    def __init__(self, config: AllocationConfig | None = None) -> None:
        self.config = config or AllocationConfig()

    def allocate(
        self,
        inputs: PlanInputs,
        row_bytes: Mapping[str, int],
        budget_bytes: int,
        pruned: frozenset[str] = frozenset(),
    ) -> Allocation:
        """Choose rows per feature.

        Args:
            inputs: The features.
            row_bytes: Feature -> bytes per stored row (precision estimate, dim, optimizer state).
            budget_bytes: Bytes all features may take together (see the module docstring).
            pruned: Features whose tables will be pruned to the rows live ids hit.

        Returns:
            One decision per feature (sorted by name); their bytes sum to at most the budget.

        Raises:
            PlanError: ``INSUFFICIENT_MEMORY`` when even ``min_hash_size`` rows per feature do not
                fit the budget.
        """
        cfg = self.config
        shares = traffic_shares(inputs.features)
        opts = [
            _options(f, shares[f.name] * f.importance, row_bytes[f.name], f.name in pruned, cfg)
            for f in sorted(inputs.features, key=lambda f: f.name)
        ]
        # Whole bytes per feature are reported (rounded up): budget one byte of slack each.
        budget = budget_bytes - len(opts)
        floor_bytes = sum(float(o.cost.min()) for o in opts)
        if floor_bytes > budget:
            raise PlanError(
                f"the memory budget of {budget_bytes:,} bytes cannot hold even "
                f"{cfg.min_hash_size} row(s) for each of the {len(opts)} features "
                f"({math.ceil(floor_bytes) + len(opts):,} bytes needed)",
                kind=PlanErrorKind.INSUFFICIENT_MEMORY,
                source="--memory-budget",
                hint="raise --memory-budget or the device memory, lower --dim, or use a lower "
                "precision (--default-precision int8)",
            )
        choice = self._solve(opts, budget)
        decisions = []
        for o, i in zip(opts, choice, strict=True):
            h, d = int(o.hash_size[i]), int(o.dedicated[i])
            if not o.pruned:
                h, d = self._convert_to_dedicated(o.spec, h, d, o.max_dedicated, cfg.min_hash_size)
            decisions.append(self._decision(o, h, d, shares[o.spec.name]))
        used = sum(d.memory_bytes for d in decisions)
        rate = sum(d.traffic_share * d.expected_collision_rate for d in decisions)
        logger.info(
            "allocated %s hashed rows to %d features (%s of %s budget bytes), expected collision "
            "rate %.2f%%",
            f"{sum(d.num_rows for d in decisions):,}",
            len(decisions),
            f"{used:,}",
            f"{budget_bytes:,}",
            100 * rate,
        )
        return Allocation(
            decisions=tuple(decisions),
            budget_bytes=budget_bytes,
            used_bytes=used,
            expected_collision_rate=rate,
        )

    @staticmethod
    def _pick(opts: list[_Options], lam: float) -> list[int]:
        # Ties (equal objective) go to the cheaper point.
        return [int(np.lexsort((o.cost, o.loss + lam * o.cost))[0]) for o in opts]

    def _solve(self, opts: list[_Options], budget: float) -> list[int]:
        def total(choice: list[int]) -> float:
            return sum(float(o.cost[i]) for o, i in zip(opts, choice, strict=True))

        best = self._pick(opts, 0.0)
        if total(best) > budget:
            lo, hi = 0.0, 1e-12
            while total(self._pick(opts, hi)) > budget and hi < 1e12:
                hi *= 4.0
            for _ in range(_BISECT_STEPS):
                mid = math.sqrt(lo * hi) if lo > 0 else hi / 1e6
                if total(self._pick(opts, mid)) > budget:
                    lo = mid
                else:
                    hi = mid
            best = self._pick(opts, hi)
            if total(best) > budget:  # pragma: no cover - the cheapest points fit (checked above)
                best = [int(np.argmin(o.cost)) for o in opts]
        return self._fill(opts, best, budget - total(best))

    @staticmethod
    def _fill(opts: list[_Options], choice: list[int], left: float) -> list[int]:
        """Spend what is left on the best loss reduction per byte, one grid point at a time."""
        choice = list(choice)
        for _ in range(_FILL_STEPS):
            best_ratio, best = 0.0, None
            for k, (o, i) in enumerate(zip(opts, choice, strict=True)):
                extra = o.cost - o.cost[i]
                gain = o.loss[i] - o.loss
                ok = (gain > 0) & (extra <= left)
                if not ok.any():
                    continue
                ratio = np.where(ok, gain / np.maximum(extra, 1e-9), -1.0)
                j = int(np.argmax(ratio))
                if ratio[j] > best_ratio:
                    best_ratio, best = float(ratio[j]), (k, j)
            if best is None:
                break
            k, j = best
            left -= float(opts[k].cost[j] - opts[k].cost[choice[k]])
            choice[k] = j
        return choice

    @staticmethod
    def _convert_to_dedicated(
        spec: FeatureSpec, h: int, d: int, max_ded: int, min_hash: int
    ) -> tuple[int, int]:
        while (
            d < max_ded
            and h > min_hash
            and feature_collision_rate(spec, h - 1, d + 1) < feature_collision_rate(spec, h, d)
        ):
            h, d = h - 1, d + 1
        return h, d

    @staticmethod
    def _decision(o: _Options, h: int, d: int, share: float) -> HashSizeDecision:
        spec = o.spec
        n_tail = max(0, spec.live_ids - d)
        stored = d + occupied_rows(h, n_tail) if o.pruned else float(h + d)
        cost = o.row_bytes * stored + (REMAP_BYTES_PER_HASHED_ROW * (h + d) if o.pruned else 0)
        capped = h >= o.max_hash if o.pruned else h + d >= o.max_rows
        return HashSizeDecision(
            feature=spec.name,
            hash_size=h,
            dedicated_keys=tuple(k for k, _ in spec.heavy_hitters[:d]),
            row_bytes=o.row_bytes,
            pruned=o.pruned,
            expected_stored_rows=stored,
            memory_bytes=math.ceil(cost),
            expected_collision_rate=feature_collision_rate(spec, h, d),
            traffic_share=share,
            live_ids=spec.live_ids,
            capped=capped,
        )
