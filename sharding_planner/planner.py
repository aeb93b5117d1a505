"""The planner: the one place that knows the order of the stages.

    inputs (FeatureSpec per feature) + topology + config
      -> allocation   rows per feature under the memory budget   (Allocator)
      -> merging      unified tables                              (merge_tables)
      -> dead rows    pruning policy and physical rows per table  (plan_pruning)
      -> precision    fp32/fp16/int8/int4 per table               (choose_precision)
      -> placement    shards on ranks                             (Partitioner)
      -> ShardPlan + PlanReport (+ dedicated-key sidecars)

Each stage returns new frozen values; nothing is changed in place. The allocation budgets bytes
with a per-feature precision estimate (a feature's own measured errors or the default); features
are merged only with features of the same estimate, so the table precision matches it unless the
errors file names the table itself.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping

import numpy as np

from adrank.errors import InputError
from adrank.formats import fingerprint
from adrank.planfile import validate_plan
from adrank.types import Precision, ShardPlan, Topology, shard_memory_bytes
from sharding_planner.allocation import LagrangianAllocator
from sharding_planner.dead_rows import plan_pruning, prunable_features
from sharding_planner.merging import merge_tables
from sharding_planner.partitioners import GreedyCostPartitioner
from sharding_planner.precision import choose_precision, validate_precision_config
from sharding_planner.topology import topology_to_json
from sharding_planner.types import (
    Allocator,
    Partitioner,
    PlanInputs,
    PlannerConfig,
    PlanReport,
    PlanResult,
    TableDraft,
)

__all__ = ["budget_bytes", "plan_fingerprint", "plan_shards", "validate_planner_config"]

logger = logging.getLogger(__name__)


def validate_planner_config(config: PlannerConfig, inputs: PlanInputs) -> None:
    """Check the config against the inputs before any work; report every problem at once.

    Raises:
        InputError: A value out of range; ``source`` names the CLI flag that sets it.
    """
    problems: list[InputError] = []
    try:
        validate_precision_config(config)
    except InputError as exc:
        problems.append(exc)
    checks = [
        (
            config.memory_budget_bytes is None or config.memory_budget_bytes >= 1,
            "--memory-budget",
            f"the memory budget must be >= 1 byte, found {config.memory_budget_bytes}",
        ),
        (
            0 < config.budget_share <= 1,
            "budget_share",
            f"budget_share must be in (0, 1], found {config.budget_share}",
        ),
        (
            config.batch_size >= 1,
            "--batch-size",
            f"the batch size must be >= 1, found {config.batch_size}",
        ),
        (
            config.row_alignment_bytes >= 1,
            "--row-alignment",
            f"the row alignment must be >= 1 byte, found {config.row_alignment_bytes}",
        ),
        (
            config.allocation.max_rows_per_live_id > 0,
            "max_rows_per_live_id",
            f"max_rows_per_live_id must be > 0, found {config.allocation.max_rows_per_live_id}",
        ),
        (
            config.allocation.min_hash_size >= 1,
            "min_hash_size",
            f"min_hash_size must be >= 1, found {config.allocation.min_hash_size}",
        ),
        (
            config.merging.max_collision_increase >= 0,
            "--merge-max-collision-increase",
            f"must be >= 0, found {config.merging.max_collision_increase}",
        ),
        (
            config.placement.column_wise_min_cols >= 1,
            "column_wise_min_cols",
            f"must be >= 1, found {config.placement.column_wise_min_cols}",
        ),
    ]
    for ok, source, msg in checks:
        if not ok:
            problems.append(InputError(msg, source=source))
    for f in inputs.features:
        if f.dim < 1:
            problems.append(
                InputError(f"dim must be >= 1, found {f.dim}", source=f"{inputs.source}:{f.name}")
            )
    names = {f.name for f in inputs.features}
    tables_and_features = names | {f"t_{n}" for n in names}
    unknown = sorted(set(config.placement.sharding_overrides) - tables_and_features)
    if unknown:
        problems.append(
            InputError(
                f"sharding overrides name unknown tables or features: {unknown}",
                source="--sharding",
                hint="use a feature name (or t_<feature>)",
            )
        )
    if problems:
        raise InputError.from_problems(problems)


def budget_bytes(config: PlannerConfig, topology: Topology) -> int:
    """The memory budget: the configured one, else ``budget_share`` of all device memory."""
    if config.memory_budget_bytes is not None:
        return config.memory_budget_bytes
    return int(config.budget_share * sum(d.memory_bytes for d in topology.devices))


def plan_fingerprint(
    inputs: PlanInputs,
    topology: Topology,
    config: PlannerConfig,
    precision_errors: Mapping[str, Mapping[Precision, float]] | None,
) -> str:
    """Hash of everything a plan depends on: the stats or tables, the topology and the config."""
    return fingerprint(
        {
            "inputs": inputs.source_fingerprint,
            "features": {
                f.name: {"dim": f.dim, "importance": f.importance, "pooling": f.pooling.value}
                for f in inputs.features
            },
            "topology": topology_to_json(topology),
            "config": config.to_json(),
            "precision_errors": None
            if precision_errors is None
            else {
                k: {p.value: e for p, e in v.items()} for k, v in sorted(precision_errors.items())
            },
        }
    )


def plan_shards(
    inputs: PlanInputs,
    topology: Topology,
    config: PlannerConfig | None = None,
    *,
    precision_errors: Mapping[str, Mapping[Precision, float]] | None = None,
    allocator: Allocator | None = None,
    partitioner: Partitioner | None = None,
) -> PlanResult:
    """Make a shard plan.

    Args:
        inputs: Features (from :func:`sharding_planner.inputs.load_plan_inputs`).
        topology: The devices.
        config: Settings (defaults: :class:`PlannerConfig`).
        precision_errors: Measured errors per table or feature, or None.
        allocator: Hash-size stage (default :class:`LagrangianAllocator`).
        partitioner: Placement stage (default :class:`GreedyCostPartitioner`).

    Returns:
        The plan (valid by :func:`adrank.planfile.validate_plan`), the report and the sidecars.

    Raises:
        InputError: Invalid config for these inputs.
        PlanError: ``INSUFFICIENT_MEMORY`` when the budget or the devices cannot hold the tables.
    """
    config = config or PlannerConfig()
    validate_planner_config(config, inputs)
    allocator = allocator or LagrangianAllocator(config.allocation)
    partitioner = partitioner or GreedyCostPartitioner()
    stage_s: dict[str, float] = {}
    t0 = time.perf_counter()
    opt = config.effective_optimizer

    estimates = {
        f.name: choose_precision(f"t_{f.name}", [f.name], f.dim, precision_errors, config).precision
        for f in inputs.features
    }
    row_bytes = {
        f.name: shard_memory_bytes(estimates[f.name], 1, f.dim, opt, config.row_alignment_bytes)
        for f in inputs.features
    }
    budget = budget_bytes(config, topology)
    pruned = prunable_features(inputs, config.pruning)
    # An id unseen in the recent window is dead only if its rows are pruned; otherwise it keeps
    # being looked up, so every distinct id of an unpruned feature is live for sizing.
    inputs = dataclasses.replace(
        inputs,
        features=tuple(
            f
            if f.name in pruned or f.live_ids >= f.num_ids
            else dataclasses.replace(f, live_ids=f.num_ids)
            for f in inputs.features
        ),
    )
    allocation = allocator.allocate(inputs, row_bytes, budget, pruned)
    t1 = time.perf_counter()
    stage_s["allocation"] = t1 - t0

    merged = merge_tables(inputs, allocation, estimates, config.merging)
    t2 = time.perf_counter()
    stage_s["merging"] = t2 - t1

    pruned_tables = plan_pruning(merged, inputs, config.pruning)
    t3 = time.perf_counter()
    stage_s["dead_rows"] = t3 - t2

    pooling_factor = {f.name: f.pooling_factor for f in inputs.features}
    precisions = tuple(
        choose_precision(
            p.table.name, [f.name for f in p.table.features], p.table.dim, precision_errors, config
        )
        for p in pruned_tables
    )
    drafts = tuple(
        TableDraft(p, prec, sum(pooling_factor[f.name] for f in p.table.features))
        for p, prec in zip(pruned_tables, precisions, strict=True)
    )
    t4 = time.perf_counter()
    stage_s["precision"] = t4 - t3

    placement = partitioner.partition(drafts, topology, config)
    t5 = time.perf_counter()
    stage_s["placement"] = t5 - t4

    plan = ShardPlan(
        mode=config.mode,
        tables=placement.tables,
        devices=placement.devices,
        inputs_fingerprint=plan_fingerprint(inputs, topology, config, precision_errors),
        batch_size=config.batch_size,
        optimizer=opt,
        row_alignment_bytes=config.row_alignment_bytes,
    )
    validate_plan(plan, source="planner output")
    sidecars: dict[str, np.ndarray] = {}
    for d in allocation.decisions:
        if d.dedicated_keys:
            _, slot = plan.table_of_feature(d.feature)
            assert slot.dedicated_keys_file is not None
            sidecars[slot.dedicated_keys_file] = np.sort(np.asarray(d.dedicated_keys, np.int64))
    stage_s["total"] = time.perf_counter() - t0
    logger.info(
        "planned %d features into %d tables on %d devices in %.2f s",
        len(inputs.features),
        len(plan.tables),
        topology.world_size,
        stage_s["total"],
    )
    report = PlanReport(
        inputs=inputs,
        topology=topology,
        config=config,
        allocation=allocation,
        merges=merged,
        pruned=pruned_tables,
        precisions=precisions,
        placement=placement,
        stage_s=stage_s,
    )
    return PlanResult(plan=plan, report=report, sidecars=sidecars)
