"""Turns feature statistics into a shard plan.

Stages (one module each): stats from click logs -> hash-size allocation -> unified tables ->
dead-row pruning policy -> precision -> placement -> plan file. :func:`plan_shards` (in
``planner.py``) is the one place that knows the order. Pure Python + numpy + numba: this package
never imports torch, torchrec, fbgemm, grpc or embed_store (a test checks ``sys.modules``).
"""

from sharding_planner.allocation import LagrangianAllocator
from sharding_planner.inputs import load_plan_inputs, read_tables_file
from sharding_planner.partitioners import GreedyCostPartitioner
from sharding_planner.planner import plan_shards
from sharding_planner.report import explain_feature, write_plan_dir
from sharding_planner.stats import compute_stats, merge_stats, read_stats, write_stats
from sharding_planner.stats.inputs import plan_inputs
from sharding_planner.topology import read_topology, uniform_topology
from sharding_planner.types import (
    Allocation,
    AllocationConfig,
    CountQuantiles,
    FeatureSpec,
    FeatureStats,
    HashSizeDecision,
    HeavyHitter,
    IdKind,
    InputFileInfo,
    MergeConfig,
    MergedTable,
    MergeKind,
    PlacementConfig,
    PlanInputs,
    PlannerConfig,
    PlanReport,
    PlanResult,
    PoolingStats,
    PruningConfig,
    StatsConfig,
    StatsReport,
    StatsTimings,
)

__all__ = [
    "Allocation",
    "AllocationConfig",
    "CountQuantiles",
    "FeatureSpec",
    "FeatureStats",
    "GreedyCostPartitioner",
    "LagrangianAllocator",
    "HashSizeDecision",
    "HeavyHitter",
    "IdKind",
    "InputFileInfo",
    "MergeConfig",
    "MergeKind",
    "MergedTable",
    "PlacementConfig",
    "PlanInputs",
    "PlanReport",
    "PlanResult",
    "PlannerConfig",
    "PoolingStats",
    "PruningConfig",
    "StatsConfig",
    "StatsReport",
    "StatsTimings",
    "compute_stats",
    "explain_feature",
    "load_plan_inputs",
    "plan_inputs",
    "merge_stats",
    "plan_shards",
    "read_stats",
    "read_tables_file",
    "read_topology",
    "uniform_topology",
    "write_plan_dir",
    "write_stats",
]
