"""``python -m bench plan_allocation``: collision rate of the planner's hash sizes at equal memory.

Data: ``adrank synth`` logs (``rows`` impressions over ``days`` days, Zipf ids with churn). Stats
are computed on every day but the last (``adrank stats``, recent window ``recent_window_s``); the
last day is the held-out traffic. Every method gets the same memory, ``budget_fraction x (sum of
the features' distinct ids) x row_bytes`` (dim ``dim``, fp16, 16-byte rows), for each fraction:

* ``planner``: ``plan_shards`` with that ``--memory-budget`` (heavy hitters dedicated, pruning-aware
  sizes, unified tables); the remap a pruning run would build is simulated from the training logs
  (a hashed row is kept when an id seen in the recent window hits it, most-hit rows first, up to
  the plan's rows; the rest read the fallback row);
* ``planner_no_prune``: the same without pruning (every hashed row stored);
* ``uniform``: the same number of rows for every feature;
* ``distinct_capped``: ``rows = min(distinct ids, cap)`` with the cap that spends the budget.

Measured, not modelled: every id of the evaluation traffic is hashed with each method's mapping
(murmur3 with the plan's seeds, dedicated rows, salted/concatenated ranges, the remap); a lookup
*collides* when its row is shared with another distinct id of that traffic (any feature of the
table). The traffic-weighted collision rate is collided lookups / lookups, on the held-out day
and in sample (the training days). The planner's memory is reported as what it stores (its
tables' rows after pruning) plus the int32 remap per hashed row; the baselines store every row.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from adrank.constants import REMAP_BYTES_PER_HASHED_ROW
from adrank.data import SynthConfig, read_roles, synthesize
from adrank.hashing import id_keys_from_arrow, murmur3_64
from adrank.idmap import id_keys_to_hashed
from adrank.types import ColumnRole, Precision, ShardPlan
from bench.harness import BenchResult, measure_peak_rss_bytes
from sharding_planner import PlannerConfig, compute_stats, plan_shards, uniform_topology
from sharding_planner.inputs import features_from_stats
from sharding_planner.merging import feature_seed
from sharding_planner.types import PruningConfig, StatsConfig

__all__ = ["DEFAULT_CONFIG", "run"]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "rows": 2_000_000,
    "days": 8,
    "ad_vocab": 2_000_000,
    "user_vocab": 500_000,
    "seed": 0,
    "recent_window_s": 2 * 86_400,
    "dim": 64,
    "budget_fractions": [0.05, 0.1, 0.25, 0.5],
    "devices": 4,
    "smoke_rows": 20_000,
    "smoke_days": 3,
    "smoke_ad_vocab": 20_000,
    "smoke_user_vocab": 5_000,
    "smoke_budget_fractions": [0.1, 0.5],
}

_DAY_S = 86_400


def _split(logs: Path, out: Path) -> tuple[Path, pa.Table, pa.Table, list[str], int]:
    """Write the training days to ``out``; return them and the held-out day as tables."""
    table = pq.read_table(logs / "impressions.parquet")
    roles = read_roles(table.schema)
    sparse = sorted(n for n, r in roles.items() if r is ColumnRole.SPARSE)
    ts_s = pc.divide(pc.cast(table.column("ts"), pa.int64()), 1000)
    last_day = (int(pc.max(ts_s).as_py()) // _DAY_S) * _DAY_S
    is_test = pc.greater_equal(ts_s, last_day)
    train, test = table.filter(pc.invert(is_test)), table.filter(is_test)
    path = out / "train.parquet"
    pq.write_table(train, path)
    return path, train, test, sparse, last_day


def _keys(table: pa.Table, column: str) -> np.ndarray:
    keys, valid = id_keys_from_arrow(table.column(column))
    return keys[valid]


def _measure_baseline(hash_sizes: dict[str, int], traffic: pa.Table, features: list[str]) -> float:
    collided = total = 0.0
    for f in features:
        keys = _keys(traffic, f)
        rows = (murmur3_64(keys, feature_seed(f)) % np.uint64(hash_sizes[f])).astype(np.int64)
        c, t = _collisions([rows], [keys])
        collided, total = collided + c, total + t
    return collided / total if total else 0.0


def _remaps(
    plan: ShardPlan, dedicated: dict[str, np.ndarray], train: pa.Table, window_start_s: int
) -> dict[str, np.ndarray]:
    """What the pruning package would build: kept rows = rows hit by ids live in the window."""
    ts_s = pc.divide(pc.cast(train.column("ts"), pa.int64()), 1000).to_numpy()
    recent = ts_s >= window_start_s
    out = {}
    for t in plan.tables:
        if t.num_rows == t.hashed_rows:
            continue
        hits = np.zeros(t.hashed_rows, dtype=np.int64)
        for slot in t.features:
            keys, valid = id_keys_from_arrow(train.column(slot.name))
            live = keys[valid & recent]
            h = id_keys_to_hashed(slot, live, dedicated.get(slot.name))
            hits += np.bincount(h, minlength=t.hashed_rows)
            if slot.num_dedicated_rows:  # dedicated rows are kept by construction
                hits[
                    slot.dedicated_row_offset : slot.dedicated_row_offset + slot.num_dedicated_rows
                ] += 1
        keep_cap = t.num_rows - (1 if t.fallback_row is not None else 0)
        order = np.argsort(-hits, kind="stable")
        kept = order[: min(keep_cap, int((hits > 0).sum()))]
        remap = np.full(t.hashed_rows, -1, dtype=np.int64)
        remap[np.sort(kept)] = np.arange(len(kept))
        if t.fallback_row is not None:
            remap[remap < 0] = t.fallback_row
        out[t.name] = remap
    return out


def _measure_plan(
    plan: ShardPlan,
    dedicated: dict[str, np.ndarray],
    remaps: dict[str, np.ndarray],
    traffic: pa.Table,
) -> float:
    collided = total = 0.0
    for t in plan.tables:
        rows_l, keys_l = [], []
        for slot in t.features:
            keys = _keys(traffic, slot.name)
            rows = id_keys_to_hashed(slot, keys, dedicated.get(slot.name))
            if t.name in remaps:
                rows = remaps[t.name][rows]
            rows_l.append(rows)
            keys_l.append(keys)
        c, n = _collisions(rows_l, keys_l)
        collided, total = collided + c, total + n
    return collided / total if total else 0.0


def _collisions(rows_l: list[np.ndarray], keys_l: list[np.ndarray]) -> tuple[float, int]:
    """(collided lookups, lookups) of features sharing one table's rows.

    Ids are distinct per feature (equal keys of two features are two ids); a lookup collides
    when its row holds at least two distinct ids of this traffic.
    """
    distinct_rows, weights = [], []
    for rows, keys in zip(rows_l, keys_l, strict=True):
        _, first, counts = np.unique(keys, return_index=True, return_counts=True)
        distinct_rows.append(rows[first])
        weights.append(counts)
    all_rows = np.concatenate(distinct_rows)
    if not len(all_rows):
        return 0.0, 0
    _, inverse, per_row = np.unique(all_rows, return_inverse=True, return_counts=True)
    shared = per_row[inverse] >= 2
    w = np.concatenate(weights)
    return float(w[shared].sum()), int(w.sum())


def _plan_memory(plan: ShardPlan) -> int:
    total = 0
    for t in plan.tables:
        total += sum(plan.shard_bytes(t, s) for s in t.shards)
        if t.num_rows < t.hashed_rows:
            total += REMAP_BYTES_PER_HASHED_ROW * t.hashed_rows
    return total


def _capped(distinct: dict[str, int], budget_rows: int) -> dict[str, int]:
    if sum(distinct.values()) <= budget_rows:
        return dict(distinct)
    lo, hi = 1, max(distinct.values())
    while lo < hi:  # largest cap whose total fits
        mid = (lo + hi + 1) // 2
        if sum(min(d, mid) for d in distinct.values()) <= budget_rows:
            lo = mid
        else:
            hi = mid - 1
    return {f: max(1, min(d, lo)) for f, d in distinct.items()}


def run(config: dict[str, Any], smoke: bool) -> BenchResult:
    """Run the benchmark (see the module docstring).

    Args:
        config: :data:`DEFAULT_CONFIG` overlaid with the YAML file.
        smoke: Tiny logs and two budgets (for the unit test).
    """
    pre = "smoke_" if smoke else ""
    rows, days = config[f"{pre}rows"], config[f"{pre}days"]
    fractions = config[f"{pre}budget_fractions"]
    row_bytes = Precision.FP16.row_bytes(config["dim"])
    metrics: dict[str, Any] = {"row_bytes": row_bytes}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-plan-alloc-") as tmp_s:
        tmp = Path(tmp_s)
        synthesize(
            tmp / "logs",
            SynthConfig(
                num_rows=rows,
                num_days=days,
                seed=config["seed"],
                ad_vocab=config[f"{pre}ad_vocab"],
                user_vocab=config[f"{pre}user_vocab"],
            ),
        )
        train_path, train, test, features, last_day = _split(tmp / "logs", tmp)
        stats = compute_stats(
            [train_path],
            StatsConfig(features=tuple(features), recent_window_s=config["recent_window_s"]),
        )
        inputs = features_from_stats(stats, default_dim=config["dim"], source=str(train_path))
        distinct = {f.name: f.num_ids for f in inputs.features}
        metrics.update(
            features=len(features),
            train_lookups=train.num_rows * len(features),
            test_lookups=test.num_rows * len(features),
            distinct_ids=sum(distinct.values()),
            live_ids=sum(f.live_ids for f in inputs.features),
        )
        window_start = last_day - config["recent_window_s"]
        topo = uniform_topology(config["devices"], 1 << 40)
        results = []
        for frac in fractions:
            budget_rows = max(len(features), int(frac * sum(distinct.values())))
            budget = budget_rows * row_bytes
            entry: dict[str, Any] = {"budget_fraction": frac, "budget_bytes": budget}
            for label, prune in (("planner", True), ("planner_no_prune", False)):
                cfg = PlannerConfig(
                    memory_budget_bytes=budget,
                    default_precision=Precision.FP16,
                    pruning=PruningConfig(enabled=prune),
                )
                t0 = time.perf_counter()
                res = plan_shards(inputs, topo, cfg)
                entry[f"{label}_plan_s"] = time.perf_counter() - t0
                plan = res.plan
                dedicated = {}
                for t in plan.tables:
                    for s in t.features:
                        if s.dedicated_keys_file:
                            dedicated[s.name] = np.asarray(res.sidecars[s.dedicated_keys_file])
                remaps = _remaps(plan, dedicated, train, window_start)
                entry[f"{label}_holdout"] = _measure_plan(plan, dedicated, remaps, test)
                entry[f"{label}_in_sample"] = _measure_plan(plan, dedicated, remaps, train)
                entry[f"{label}_model"] = res.report.allocation.expected_collision_rate
                entry[f"{label}_memory_bytes"] = _plan_memory(plan)
                entry[f"{label}_tables"] = len(plan.tables)
            uniform = {f: max(1, budget_rows // len(features)) for f in features}
            capped = _capped(distinct, budget_rows)
            for label, sizes in (("uniform", uniform), ("distinct_capped", capped)):
                entry[f"{label}_holdout"] = _measure_baseline(sizes, test, features)
                entry[f"{label}_in_sample"] = _measure_baseline(sizes, train, features)
                entry[f"{label}_memory_bytes"] = sum(sizes.values()) * row_bytes
            results.append(entry)
            logger.info(
                "budget %.0f%%: %s",
                100 * frac,
                {k: round(v, 4) for k, v in entry.items() if isinstance(v, float)},
            )
    metrics["budgets"] = results
    metrics["wall_s"] = time.perf_counter() - t_start
    metrics["peak_rss_bytes"] = measure_peak_rss_bytes()
    targets = {}
    for e in results:
        key = f"holdout_beats_baselines_at_{e['budget_fraction']:g}"
        best_base = min(e["uniform_holdout"], e["distinct_capped_holdout"])
        targets[key] = {
            "max": best_base,
            "measured": e["planner_holdout"],
            "met": e["planner_holdout"] < best_base,
        }
    notes = (
        f"{len(features)} sparse impression features; stats on days 1..{days - 1}, held-out day "
        f"{days}. Memory per method is in *_memory_bytes (the planner's includes its int32 remap "
        "and the pruning margin). *_model is the planner's own estimate for comparison."
    )
    return BenchResult(
        name="plan_allocation", config=dict(config), metrics=metrics, targets=targets, notes=notes
    )
