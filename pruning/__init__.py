"""Dead-row pruning: row liveness from access counts and recency, remap arrays (hashed_id -> row)
that FBGEMM's pruned lookups take, and compaction of trained tables. numpy + numba, never torch.

Stages: :func:`count_accesses` (parquet logs hashed with a plan; or
:func:`access_counts_from_hashed`) -> :func:`prune_plan` (each table's
:class:`~adrank.types.PruningPolicy` picks live rows, a :class:`~adrank.remap.RowRemap` gives each
one a row) -> :func:`write_pruned_plan` (remaps as ``.npy`` + manifest beside ``plan.json``) ->
:func:`compact_rows` on trained weights;
:func:`evaluate_pruning` measures the traffic that a later window sends to pruned rows.
"""

from adrank.remap import RowRemap, fbgemm_index_remappings
from pruning.compaction import compact_npy, compact_rows
from pruning.counts import (
    access_counts_from_hashed,
    count_accesses,
    empty_access_counts,
    merge_access_counts,
)
from pruning.policy import select_live_rows
from pruning.prune import protected_rows, prune_plan, prune_table, write_pruned_plan
from pruning.quality import evaluate_pruning, pruned_traffic_share
from pruning.remapping import build_remap
from pruning.report import render_pruning_report
from pruning.types import (
    NEVER_ACCESSED_S,
    AccessCounts,
    FallbackInit,
    LiveRows,
    PruneConfig,
    PruningQuality,
    PruningReport,
    PruningResult,
    TablePruningReport,
)

__all__ = [
    "NEVER_ACCESSED_S",
    "AccessCounts",
    "FallbackInit",
    "LiveRows",
    "PruneConfig",
    "PruningQuality",
    "PruningReport",
    "PruningResult",
    "RowRemap",
    "TablePruningReport",
    "access_counts_from_hashed",
    "build_remap",
    "compact_npy",
    "compact_rows",
    "count_accesses",
    "empty_access_counts",
    "evaluate_pruning",
    "fbgemm_index_remappings",
    "merge_access_counts",
    "protected_rows",
    "prune_plan",
    "prune_table",
    "pruned_traffic_share",
    "render_pruning_report",
    "select_live_rows",
    "write_pruned_plan",
]
