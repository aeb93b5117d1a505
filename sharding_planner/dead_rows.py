"""Dead-row pruning in the plan: how many rows of each table the pruning package may drop.

A hashed row is *dead* when none of the live ids (those seen in the stats' recent window) hashes
to it: only ids unseen for the window, or none, map there. With ``n`` live ids hashed uniformly
into a range of ``H`` rows, the expected number of dead rows is ``H * (1 - 1/H) ** n`` with
variance about ``H e^-l (1 - (1 + l) e^-l)``, ``l = n / H`` (the empty-bin count of the occupancy
problem). The plan keeps a margin of three standard deviations
(so the rows the pruning package finds live almost surely fit) and one fallback row that pruned
ids read. Dedicated heavy-hitter rows are live by construction and never pruned.

The plan only sizes tables and records a :class:`~adrank.types.PruningPolicy`; the pruning package
builds the remap (``hashed_id -> row``) from access counts per hashed row.
"""

from __future__ import annotations

import dataclasses
import logging
import math

from adrank.types import FeatureSlot, PruningAction, PruningPolicy
from sharding_planner.types import (
    FeatureSpec,
    MergedTable,
    MergeKind,
    PlanInputs,
    PrunedTable,
    PruningConfig,
)

__all__ = ["dead_rows_variance", "expected_dead_rows", "plan_pruning", "prunable_features"]

logger = logging.getLogger(__name__)

_MARGIN_SIGMAS = 3.0


def dead_rows_variance(hash_size: int, live_ids: int) -> float:
    """Approximate variance of the count of rows no live id hits (large-range form)."""
    if hash_size <= 0 or live_ids <= 0:
        return 0.0
    lam = live_ids / hash_size
    p0 = math.exp(-lam)
    return max(0.0, hash_size * p0 * (1.0 - (1.0 + lam) * p0))


def expected_dead_rows(hash_size: int, live_ids: int) -> float:
    """Expected rows of a ``hash_size`` range that none of ``live_ids`` uniformly hashed ids hit."""
    if hash_size <= 0:
        return 0.0
    if live_ids <= 0:
        return float(hash_size)
    return hash_size * math.exp(live_ids * math.log1p(-1.0 / hash_size)) if hash_size > 1 else 0.0


def prunable_features(inputs: PlanInputs, config: PruningConfig) -> frozenset[str]:
    """Features whose tables may be pruned: measured (from stats) and with little dead traffic.

    The allocator sizes these features' hashed ranges for the rows their live ids hit, so the
    same predicate must decide here and in :func:`plan_pruning`.

    Args:
        inputs: Planner features.
        config: Pruning settings.

    Returns:
        Names of the prunable features.
    """
    if not config.enabled or inputs.recent_window_s is None:
        return frozenset()
    return frozenset(
        f.name
        for f in inputs.features
        if f.from_stats and f.dead_traffic_share <= config.max_pruned_traffic_share
    )


def plan_pruning(
    tables: tuple[MergedTable, ...], inputs: PlanInputs, config: PruningConfig
) -> tuple[PrunedTable, ...]:
    """Decide, per table, whether to prune dead rows and how many rows to keep.

    Args:
        tables: Merged tables.
        inputs: Features (live ids, dead traffic) and the stats' recent window.
        config: Pruning settings.

    Returns:
        One :class:`PrunedTable` per table, same order.
    """
    specs = {f.name: f for f in inputs.features}
    out = []
    for t in tables:
        out.append(_plan_table(t, specs, inputs, config))
    pruned = [p for p in out if p.pruning.action is PruningAction.DROP_DEAD]
    logger.info(
        "planned dead-row pruning for %d of %d tables (%s of %s hashed rows)",
        len(pruned),
        len(out),
        f"{sum(p.pruning.expected_pruned_rows for p in pruned):,}",
        f"{sum(p.table.hashed_rows for p in out):,}",
    )
    return tuple(out)


def _plan_table(
    t: MergedTable, specs: dict[str, FeatureSpec], inputs: PlanInputs, config: PruningConfig
) -> PrunedTable:
    def keep(reason: str) -> PrunedTable:
        return PrunedTable(t, t.hashed_rows, None, PruningPolicy(), reason)

    if not config.enabled:
        return keep("pruning disabled")
    if inputs.recent_window_s is None:
        return keep("no recency information (stats without timestamps, or a tables file)")
    busy_dead = [
        specs[f.name]
        for f in t.features
        if specs[f.name].dead_traffic_share > config.max_pruned_traffic_share
    ]
    if busy_dead:
        worst = max(busy_dead, key=lambda s: s.dead_traffic_share)
        return keep(
            f"ids of {worst.name} unseen in the last {inputs.recent_window_s:,} s carried "
            f"~{worst.dead_traffic_share:.0%} of its lookups (max "
            f"{config.max_pruned_traffic_share:.0%}): they are not dead yet; a longer stats "
            "--recent-window or more logs would tell"
        )
    # Per hashed range: expected dead rows and the chance a dead id lands on a dead row.
    dead_by_feature: dict[str, float] = {}
    variance = 0.0
    dead_traffic = 0.0
    traffic = sum(f.traffic_share for f in t.features) or 1.0
    if t.kind is MergeKind.SALTED:
        size = t.features[0].hash_size
        live = sum(max(0, specs[f.name].live_ids - f.num_dedicated_rows) for f in t.features)
        dead = expected_dead_rows(size, live)
        variance = dead_rows_variance(size, live)
        # Attribute the shared range's dead rows to features by their dead ids.
        dead_ids = [max(0, specs[f.name].num_ids - specs[f.name].live_ids) for f in t.features]
        if not sum(dead_ids):
            dead_ids = [1] * len(dead_ids)
        for f, n in zip(t.features, dead_ids, strict=True):
            dead_by_feature[f.name] = dead * n / sum(dead_ids)
        p_dead = dead / size
        dead_traffic = sum(
            f.traffic_share * specs[f.name].dead_traffic_share * p_dead for f in t.features
        )
    else:
        for f in t.features:
            live = max(0, specs[f.name].live_ids - f.num_dedicated_rows)
            dead = expected_dead_rows(f.hash_size, live)
            variance += dead_rows_variance(f.hash_size, live)
            dead_by_feature[f.name] = dead
            dead_traffic += f.traffic_share * specs[f.name].dead_traffic_share * dead / f.hash_size
    expected = sum(dead_by_feature.values())
    planned = math.floor(expected - _MARGIN_SIGMAS * math.sqrt(variance)) if expected > 0 else 0
    fallback = 1 if config.fallback_row else 0
    if planned <= fallback or planned < config.min_pruned_share * t.hashed_rows:
        return keep(
            f"expected {expected:,.0f} dead rows of {t.hashed_rows:,} "
            f"({expected / t.hashed_rows:.1%}) is below the {config.min_pruned_share:.0%} "
            "threshold"
            if planned > fallback
            else f"too few dead rows expected ({expected:,.0f} of {t.hashed_rows:,})"
        )
    num_rows = t.hashed_rows - planned + fallback
    scale = planned / expected
    slots = tuple(_with_pruned(f, math.floor(dead_by_feature[f.name] * scale)) for f in t.features)
    table = MergedTable(
        t.name,
        slots,
        t.dim,
        t.pooling,
        t.hashed_rows,
        t.kind,
        t.reason,
        t.rows_saved,
        t.collision_increase,
    )
    policy = PruningPolicy(
        action=PruningAction.DROP_DEAD,
        unseen_window_s=inputs.recent_window_s,
        min_count=config.min_count,
        expected_pruned_rows=planned,
        expected_pruned_traffic_share=dead_traffic / traffic,
    )
    reason = (
        f"{expected:,.0f} of {t.hashed_rows:,} hashed rows ({expected / t.hashed_rows:.1%}) "
        f"expected dead (no id seen in the last {inputs.recent_window_s:,} s maps there); "
        f"planned {planned:,} (3-sigma margin)"
        + (f", plus fallback row {num_rows - 1:,}" if fallback else "")
    )
    return PrunedTable(table, num_rows, num_rows - 1 if fallback else None, policy, reason)


def _with_pruned(slot: FeatureSlot, rows: int) -> FeatureSlot:
    return dataclasses.replace(slot, expected_pruned_rows=rows)
