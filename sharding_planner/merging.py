"""Unified tables: merge small features of one dim, pooling and precision into shared tables.

Candidates are features with at most ``max_feature_rows`` rows, grouped by ``(dim, pooling,
precision)`` and packed in name order into tables of at most ``max_table_rows`` rows. In each
table the features either

* share one salted hashed range (:attr:`MergeKind.SALTED`): every feature hashes its tail ids with
  its own seed into the same ``S`` rows. ``S`` is the smallest size whose traffic-weighted collision
  rate over the table's features rises by at most ``max_collision_increase`` over their separate
  ranges; chosen when ``S`` is smaller than the sum of their ranges (it saves rows). Only for
  features whose tables are not pruned: a pruned table stores just the rows live ids hit, so a
  shared range would spread each feature's ids over more stored rows instead of saving any; or
* keep their own ranges side by side (:attr:`MergeKind.CONCAT`): no extra collisions, fewer tables.

Dedicated heavy-hitter rows always stay per feature, after the hashed range(s). Seeds are CRC-32 of
the feature name (bumped on a clash inside a table), so a feature keeps its seed across plans.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Mapping

from adrank.types import FeatureSlot, PoolingType, Precision
from sharding_planner.collision import shared_row_probability, tail_traffic_share
from sharding_planner.types import (
    Allocation,
    FeatureSpec,
    HashSizeDecision,
    MergeConfig,
    MergedTable,
    MergeKind,
    PlanInputs,
)

__all__ = ["dedicated_keys_file", "feature_seed", "merge_tables"]

logger = logging.getLogger(__name__)


def feature_seed(name: str) -> int:
    """The uint32 hashing seed of a feature: CRC-32 of its UTF-8 name."""
    return zlib.crc32(name.encode("utf-8")) & 0xFFFFFFFF


def dedicated_keys_file(feature: str) -> str:
    """Sidecar name (relative to the plan directory) of a feature's dedicated keys."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", feature)
    return f"dedicated/{safe}-{feature_seed(feature):08x}.npy"


def merge_tables(
    inputs: PlanInputs,
    allocation: Allocation,
    precisions: Mapping[str, Precision],
    config: MergeConfig,
) -> tuple[MergedTable, ...]:
    """Group features into tables.

    Args:
        inputs: The features.
        allocation: Rows per feature (``pruned`` tells which tables will be pruned; pruned and
            unpruned features never share a table).
        precisions: Feature -> precision estimate (features of different precisions never merge).
        config: Merge settings.

    Returns:
        Tables sorted by name; every feature is in exactly one.
    """
    specs = {f.name: f for f in inputs.features}
    decisions = {d.feature: d for d in allocation.decisions}
    groups: dict[tuple[int, PoolingType, Precision, bool], list[str]] = {}
    tables: list[MergedTable] = []
    for name in sorted(specs):
        spec, dec = specs[name], decisions[name]
        if not config.enabled:
            tables.append(_single(spec, dec, "merging disabled"))
        elif dec.num_rows > config.max_feature_rows:
            tables.append(
                _single(
                    spec,
                    dec,
                    f"alone: {dec.num_rows:,} rows > merge limit {config.max_feature_rows:,}",
                )
            )
        else:
            groups.setdefault((spec.dim, spec.pooling, precisions[name], dec.pruned), []).append(
                name
            )
    for (dim, pooling, prec, pruned), names in sorted(groups.items(), key=lambda kv: kv[1][0]):
        bins: list[list[str]] = []
        rows_in: list[int] = []
        for n in names:
            r = decisions[n].num_rows
            for i, b in enumerate(bins):
                if rows_in[i] + r <= config.max_table_rows:
                    b.append(n)
                    rows_in[i] += r
                    break
            else:
                bins.append([n])
                rows_in.append(r)
        for i, b in enumerate(bins):
            if len(b) == 1:
                tables.append(
                    _single(
                        specs[b[0]],
                        decisions[b[0]],
                        f"alone: no other small feature with dim {dim}, "
                        f"{pooling.value} pooling and {prec.value}",
                    )
                )
                continue
            name = (
                f"unified_d{dim}_{pooling.value.lower()}_{prec.value}"
                f"{'_pruned' if pruned else ''}_{i}"
            )
            tables.append(
                _merge(
                    name,
                    [specs[n] for n in b],
                    [decisions[n] for n in b],
                    config,
                    salted_ok=not pruned,
                )
            )
    tables.sort(key=lambda t: t.name)
    merged = [t for t in tables if t.kind is not MergeKind.SINGLE]
    logger.info(
        "merged %d features into %d unified tables (%d tables in all, %s rows saved)",
        sum(len(t.features) for t in merged),
        len(merged),
        len(tables),
        f"{sum(t.rows_saved for t in tables):,}",
    )
    return tuple(tables)


def _slot(
    spec: FeatureSpec,
    dec: HashSizeDecision,
    seed: int,
    hash_size: int,
    row_offset: int,
    dedicated_offset: int,
    rate: float,
) -> FeatureSlot:
    n = len(dec.dedicated_keys)
    return FeatureSlot(
        name=spec.name,
        seed=seed,
        hash_size=hash_size,
        row_offset=row_offset,
        num_dedicated_rows=n,
        dedicated_row_offset=dedicated_offset if n else 0,
        dedicated_keys_file=dedicated_keys_file(spec.name) if n else None,
        pooling=spec.pooling,
        pooling_factor=spec.pooling_factor,
        traffic_share=dec.traffic_share,
        expected_collision_rate=rate,
    )


def _single(spec: FeatureSpec, dec: HashSizeDecision, reason: str) -> MergedTable:
    slot = _slot(
        spec,
        dec,
        feature_seed(spec.name),
        dec.hash_size,
        0,
        dec.hash_size,
        dec.expected_collision_rate,
    )
    return MergedTable(
        name=f"t_{spec.name}",
        features=(slot,),
        dim=spec.dim,
        pooling=spec.pooling,
        hashed_rows=dec.num_rows,
        kind=MergeKind.SINGLE,
        reason=reason,
    )


def _merge(
    name: str,
    specs: list[FeatureSpec],
    decs: list[HashSizeDecision],
    config: MergeConfig,
    salted_ok: bool,
) -> MergedTable:
    seeds: list[int] = []
    for s in specs:
        seed = feature_seed(s.name)
        while seed in seeds:
            seed = (seed + 1) & 0xFFFFFFFF
        seeds.append(seed)
    weights = [d.traffic_share for d in decs]
    wsum = sum(weights) or 1.0
    before = sum(w * d.expected_collision_rate for w, d in zip(weights, decs, strict=True)) / wsum
    total_hash = sum(d.hash_size for d in decs)
    n_tail = sum(
        max(0, s.live_ids - len(d.dedicated_keys)) for s, d in zip(specs, decs, strict=True)
    )
    tails = [tail_traffic_share(s, len(d.dedicated_keys)) for s, d in zip(specs, decs, strict=True)]

    def shared_rate(size: int) -> float:
        p = shared_row_probability(n_tail - 1, size)
        return sum(w * t * p for w, t in zip(weights, tails, strict=True)) / wsum

    shared = total_hash
    if config.max_collision_increase > 0 and salted_ok:
        lo, hi = 1, total_hash
        if shared_rate(hi) - before <= config.max_collision_increase:
            while lo < hi:  # smallest size within the bound; the rate falls as the size grows
                mid = (lo + hi) // 2
                if shared_rate(mid) - before <= config.max_collision_increase:
                    hi = mid
                else:
                    lo = mid + 1
            shared = lo
    bound = f"{100 * config.max_collision_increase:.2g} pt"
    if shared < total_hash:
        rate = shared_row_probability(n_tail - 1, shared)
        slots, cursor = [], shared
        for s, d, seed, t in zip(specs, decs, seeds, tails, strict=True):
            slots.append(_slot(s, d, seed, shared, 0, cursor, t * rate))
            cursor += len(d.dedicated_keys)
        increase = shared_rate(shared) - before
        saved = total_hash - shared
        reason = (
            f"{len(specs)} features of dim {specs[0].dim} share one salted range of "
            f"{shared:,} rows instead of {total_hash:,}: saves {saved:,} rows at "
            f"+{100 * increase:.2f} pt traffic-weighted collisions (bound {bound})"
        )
        return MergedTable(
            name,
            tuple(slots),
            specs[0].dim,
            specs[0].pooling,
            cursor,
            MergeKind.SALTED,
            reason,
            rows_saved=saved,
            collision_increase=increase,
        )
    slots, cursor = [], 0
    for s, d, seed in zip(specs, decs, seeds, strict=True):
        slots.append(
            _slot(s, d, seed, d.hash_size, cursor, cursor + d.hash_size, d.expected_collision_rate)
        )
        cursor += d.num_rows
    if not salted_ok:
        why = "pruned table: a shared range would store more rows, not fewer"
    elif config.max_collision_increase > 0:
        why = "sharing one salted range would raise collisions by more than " + bound
    else:
        why = "salted sharing disabled"
    reason = (
        f"{len(specs)} small features of dim {specs[0].dim} concatenated into one table "
        f"(own row ranges, no extra collisions; {why})"
    )
    return MergedTable(
        name, tuple(slots), specs[0].dim, specs[0].pooling, cursor, MergeKind.CONCAT, reason
    )
