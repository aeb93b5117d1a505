"""Turns feature statistics into a shard plan.

Stages (one module each): stats from click logs -> hash-size allocation -> unified tables ->
precision -> placement -> plan file. Pure Python + numpy + numba: this package never imports torch,
torchrec, fbgemm, grpc or embed_store (a test checks ``sys.modules``).
"""

from sharding_planner.stats import compute_stats, merge_stats, read_stats, write_stats
from sharding_planner.types import (
    CountQuantiles,
    FeatureStats,
    HeavyHitter,
    IdKind,
    InputFileInfo,
    PoolingStats,
    StatsConfig,
    StatsReport,
    StatsTimings,
)

__all__ = [
    "CountQuantiles",
    "FeatureStats",
    "HeavyHitter",
    "IdKind",
    "InputFileInfo",
    "PoolingStats",
    "StatsConfig",
    "StatsReport",
    "StatsTimings",
    "compute_stats",
    "merge_stats",
    "read_stats",
    "write_stats",
]
