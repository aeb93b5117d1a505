"""Hash-size allocation: rows per feature under a memory budget, minimising collision loss.

The loss is ``sum_f weight_f * rate_f(H_f, d_f)`` with ``weight_f = traffic share x importance``
and ``rate_f`` the expected collision rate of :mod:`sharding_planner.collision`: ``H_f`` hashed
rows and ``d_f`` dedicated rows for the feature's most frequent live ids. Constraints: the rows'
bytes fit the budget; ``H_f + d_f <= max(1, live_ids_f x max_rows_per_live_id)`` (never more rows
than the live ids need); ``H_f >= min_hash_size`` (new ids need somewhere to land).

:class:`GreedyMarginalAllocator` spends the budget greedily by marginal loss reduction per byte.
The rate is not convex in ``H`` (adding a few rows to a badly overloaded range barely helps), so a
"grow" move considers several step sizes and takes the steepest chord, which follows the convex
hull of the loss curve. Dedicating the next heavy hitter is a move of one row. When every feature
fits at its cap the greedy loop is skipped. A last pass converts hashed rows into dedicated rows
wherever that lowers the loss at equal bytes.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
from collections.abc import Mapping

from adrank.errors import PlanError, PlanErrorKind
from sharding_planner.collision import feature_collision_rate
from sharding_planner.types import (
    Allocation,
    AllocationConfig,
    FeatureSpec,
    HashSizeDecision,
    PlanInputs,
)

__all__ = ["GreedyMarginalAllocator", "row_cap", "traffic_shares"]

logger = logging.getLogger(__name__)

_GROW_FRACTIONS = (0.05, 0.25, 1.0, 3.0)


def traffic_shares(features: tuple[FeatureSpec, ...]) -> dict[str, float]:
    """Each feature's share of all lookups (by pooling factor; uniform if none has traffic)."""
    total = sum(f.pooling_factor for f in features)
    if total <= 0:
        return {f.name: 1.0 / len(features) for f in features}
    return {f.name: f.pooling_factor / total for f in features}


def row_cap(spec: FeatureSpec, config: AllocationConfig) -> int:
    """Most rows (hashed + dedicated) the feature may get."""
    return max(1, config.min_hash_size, math.floor(spec.live_ids * config.max_rows_per_live_id))


@dataclasses.dataclass(slots=True)
class _State:
    spec: FeatureSpec
    weight: float
    row_bytes: int
    cap: int
    max_dedicated: int
    hash_size: int
    dedicated: int = 0
    version: int = 0

    def loss(self, h: int, d: int) -> float:
        return self.weight * feature_collision_rate(self.spec, h, d)

    def best_move(self, max_rows: int) -> tuple[float, int, int] | None:
        """(gain per row, new hash size, new dedicated) of the steepest move within max_rows."""
        room = min(self.cap - self.hash_size - self.dedicated, max_rows)
        if room <= 0 or self.weight <= 0:
            return None
        base = self.loss(self.hash_size, self.dedicated)
        if base <= 0:
            return None
        best: tuple[float, int, int] | None = None
        steps = {min(room, max(1, math.ceil(self.hash_size * x))) for x in _GROW_FRACTIONS}
        steps.add(room)
        for step in steps:
            gain = (base - self.loss(self.hash_size + step, self.dedicated)) / step
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, self.hash_size + step, self.dedicated)
        if self.dedicated < self.max_dedicated:
            gain = base - self.loss(self.hash_size, self.dedicated + 1)
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, self.hash_size, self.dedicated + 1)
        return best


class GreedyMarginalAllocator:
    """Greedy marginal-gain hash-size allocation (the default :class:`Allocator`).

    Args:
        config: Caps and limits.
    """

    def __init__(self, config: AllocationConfig | None = None) -> None:
        self.config = config or AllocationConfig()

    def allocate(
        self, inputs: PlanInputs, row_bytes: Mapping[str, int], budget_bytes: int
    ) -> Allocation:
        """Choose rows per feature.

        Args:
            inputs: The features.
            row_bytes: Feature -> bytes per row (precision estimate, dim, optimizer state).
            budget_bytes: Bytes all features' rows may take together.

        Returns:
            One decision per feature (sorted by name); their bytes sum to at most the budget.

        Raises:
            PlanError: ``INSUFFICIENT_MEMORY`` when even ``min_hash_size`` rows per feature do not
                fit the budget.
        """
        cfg = self.config
        shares = traffic_shares(inputs.features)
        states: dict[str, _State] = {}
        for f in inputs.features:
            cap = row_cap(f, cfg)
            max_ded = len(f.heavy_hitters)
            if cfg.max_dedicated_per_feature is not None:
                max_ded = min(max_ded, cfg.max_dedicated_per_feature)
            max_ded = max(0, min(max_ded, cap - cfg.min_hash_size))
            states[f.name] = _State(
                spec=f, weight=shares[f.name] * f.importance, row_bytes=row_bytes[f.name],
                cap=cap, max_dedicated=max_ded, hash_size=cfg.min_hash_size,
            )
        floor_bytes = sum(s.hash_size * s.row_bytes for s in states.values())
        if floor_bytes > budget_bytes:
            raise PlanError(
                f"the memory budget of {budget_bytes:,} bytes cannot hold even "
                f"{cfg.min_hash_size} row(s) for each of the {len(states)} features "
                f"({floor_bytes:,} bytes needed)",
                kind=PlanErrorKind.INSUFFICIENT_MEMORY,
                source="--memory-budget",
                hint="raise --memory-budget or the device memory, lower --dim, or use a lower "
                "precision (--default-precision int8)",
            )
        cap_bytes = sum(s.cap * s.row_bytes for s in states.values())
        if cap_bytes <= budget_bytes:
            for s in states.values():  # everything fits at its cap: no trade-offs to make
                s.hash_size = s.cap
        else:
            self._greedy(states, budget_bytes - floor_bytes)
        for s in states.values():
            self._convert_to_dedicated(s)
        decisions = tuple(self._decision(states[n], shares[n]) for n in sorted(states))
        used = sum(d.bytes for d in decisions)
        rate = sum(d.traffic_share * d.expected_collision_rate for d in decisions)
        logger.info(
            "allocated %s rows to %d features (%s of %s budget bytes), expected collision rate "
            "%.2f%%", f"{sum(d.num_rows for d in decisions):,}", len(decisions), f"{used:,}",
            f"{budget_bytes:,}", 100 * rate,
        )
        return Allocation(decisions=decisions, budget_bytes=budget_bytes, used_bytes=used,
                          expected_collision_rate=rate)

    def _greedy(self, states: dict[str, _State], left: int) -> None:
        heap: list[tuple[float, str, int]] = []

        def push(s: _State) -> None:
            move = s.best_move(left // s.row_bytes)
            if move is not None:
                heapq.heappush(heap, (-move[0] / s.row_bytes, s.spec.name, s.version))

        for s in states.values():
            push(s)
        while heap:
            _, name, version = heapq.heappop(heap)
            s = states[name]
            if version != s.version:
                continue
            move = s.best_move(left // s.row_bytes)
            if move is None:
                continue
            ratio = move[0] / s.row_bytes
            if heap and -heap[0][0] > ratio * (1 + 1e-9):
                # Less budget is left than when this move was queued: re-queue at its new rank.
                heapq.heappush(heap, (-ratio, name, version))
                continue
            _, h, d = move
            added = (h - s.hash_size) + (d - s.dedicated)
            left -= added * s.row_bytes
            s.hash_size, s.dedicated = h, d
            s.version += 1
            push(s)

    def _convert_to_dedicated(self, s: _State) -> None:
        while (
            s.dedicated < s.max_dedicated
            and s.hash_size > self.config.min_hash_size
            and s.loss(s.hash_size - 1, s.dedicated + 1) < s.loss(s.hash_size, s.dedicated)
        ):
            s.hash_size -= 1
            s.dedicated += 1

    def _decision(self, s: _State, share: float) -> HashSizeDecision:
        return HashSizeDecision(
            feature=s.spec.name,
            hash_size=s.hash_size,
            dedicated_keys=tuple(k for k, _ in s.spec.heavy_hitters[: s.dedicated]),
            row_bytes=s.row_bytes,
            expected_collision_rate=feature_collision_rate(s.spec, s.hash_size, s.dedicated),
            traffic_share=share,
            live_ids=s.spec.live_ids,
            capped=s.hash_size + s.dedicated >= s.cap,
        )
