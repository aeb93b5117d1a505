"""Streaming per-feature statistics over parquet click logs: the planner's first stage.

``compute_stats`` streams record batches through one mergeable sketch per sparse feature (exact
counters, HyperLogLog, a hash-sampled exact count table, a Misra-Gries heavy-hitter summary) and
summarizes each into a :class:`~sharding_planner.types.FeatureStats`. Reports are written as
versioned JSON (``write_stats``/``read_stats``) and merged across shards of the logs
(``merge_stats``). The hot loop is one numba kernel per column and batch.
"""

from sharding_planner.stats.collector import compute_stats
from sharding_planner.stats.merge import merge_stats
from sharding_planner.stats.sketches import FeatureSketch
from sharding_planner.stats.statsfile import STATS_KIND, read_stats, write_stats

__all__ = [
    "STATS_KIND",
    "FeatureSketch",
    "compute_stats",
    "merge_stats",
    "read_stats",
    "write_stats",
]
