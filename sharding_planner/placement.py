"""Sharding-type choice and shard geometry: which way each table is cut, before ranks are chosen.

Rules, in order (a table's or any of its features' entry in ``sharding_overrides`` wins):

1. One device: table-wise.
2. A table bigger than ``row_wise_min_share`` of the smallest device's memory, or bigger than the
   mean bytes per device (all tables' bytes / devices): row-wise across all devices, or
   table-row-wise inside one host when there are several hosts (keeps the per-lookup all-to-all
   inside the host's fast links). Placed whole, it would unbalance its device's memory.
3. A table whose lookup cost exceeds ``column_wise_hot_share`` x the mean cost per device, with at
   least ``2 x column_wise_min_cols`` columns: column-wise into ``k`` shards (``k`` <= devices,
   each a multiple of 4 columns, at least ``column_wise_min_cols``), so its work spreads.
4. Otherwise table-wise.

Row splits are proportional to weights (free memory) by largest remainder; column splits are even
in units of 4 columns (2 or 1 when the dim is not a multiple of 4, never below what the precision
needs: ``Precision.dim_multiple``).
"""

from __future__ import annotations

import math

from adrank.types import ShardingType, Topology
from sharding_planner.types import PlannerConfig, TableDraft

__all__ = ["choose_sharding", "split_cols", "split_rows", "split_rows_in_blocks"]


def split_rows(num_rows: int, weights: list[float]) -> list[int]:
    """Split ``num_rows`` proportionally to ``weights`` (largest remainder, ties to lower index).

    Returns:
        Non-negative counts summing to ``num_rows``.
    """
    total = sum(weights)
    if total <= 0:
        weights, total = [1.0] * len(weights), float(len(weights))
    exact = [num_rows * w / total for w in weights]
    counts = [math.floor(x) for x in exact]
    short = num_rows - sum(counts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:short]:
        counts[i] += 1
    return counts


def split_rows_in_blocks(num_rows: int, k: int) -> list[int]:
    """TorchRec's row-wise split: ``ceil(num_rows / k)`` rows per rank, the remainder on the last.

    TorchRec's training input distribution routes id ``i`` to rank ``i // ceil(rows / k)``
    whatever the shard sizes say, so only this split can be served by its sharded runtime
    (see embed_store/torchrec_plan.py). Trailing ranks may get 0 rows.

    Returns:
        ``k`` counts summing to ``num_rows``.
    """
    block = -(-num_rows // k) if k else 0
    counts = []
    left = num_rows
    for _ in range(k):
        n = min(block, left)
        counts.append(n)
        left -= n
    return counts


def split_cols(dim: int, k: int, unit: int = 4, min_unit: int = 1) -> list[int]:
    """Split ``dim`` columns into ``k`` near-equal chunks that are multiples of ``unit``.

    Args:
        dim: Columns.
        k: Chunks wanted.
        unit: Preferred width multiple (4: aligned rows).
        min_unit: Width multiple the precision needs (``Precision.dim_multiple``: int8 2, int4
            4); ``dim`` is a multiple of it.

    Returns:
        ``k`` widths summing to ``dim`` (fewer chunks if ``dim`` is too narrow for ``k``).
    """
    if dim % unit:
        unit = max(min_unit, 2 if dim % 2 == 0 else 1)
    units = dim // unit
    k = max(1, min(k, units))
    base, extra = divmod(units, k)
    return [(base + (1 if i < extra else 0)) * unit for i in range(k)]


def choose_sharding(
    draft: TableDraft,
    table_bytes: int,
    table_cost_ms: float,
    mean_cost_ms: float,
    mean_bytes: float,
    topology: Topology,
    config: PlannerConfig,
) -> tuple[ShardingType, int, str]:
    """Choose how to cut one table.

    Args:
        draft: The table.
        table_bytes: Its bytes as one shard.
        table_cost_ms: Its cost as one shard on an average device.
        mean_cost_ms: Total cost of all tables divided by the number of devices.
        mean_bytes: Total bytes of all tables divided by the number of devices.
        topology: The devices.
        config: Placement settings.

    Returns:
        ``(sharding type, column shards (1 unless column-wise), reason)``.
    """
    pc = config.placement
    names = [draft.name] + [f.name for f in draft.pruned.table.features]
    for n in names:
        if n in pc.sharding_overrides:
            st = pc.sharding_overrides[n]
            k = (
                _cw_shards(draft, topology.world_size, config)
                if st is ShardingType.COLUMN_WISE
                else 1
            )
            return st, max(1, k), f"{st.value}: forced by the sharding override for {n!r}"
    if topology.world_size == 1:
        return ShardingType.TABLE_WISE, 1, "table_wise: one device"
    smallest = min(d.memory_bytes for d in topology.devices)
    limit = min(pc.row_wise_min_share * smallest, mean_bytes)
    if table_bytes > limit:
        multi_host = len(topology.hosts) > 1
        st = ShardingType.TABLE_ROW_WISE if multi_host else ShardingType.ROW_WISE
        where = "inside one host" if multi_host else "across all devices"
        basis = (
            f"{pc.row_wise_min_share:.0%} of the smallest device ({smallest:,} bytes)"
            if pc.row_wise_min_share * smallest <= mean_bytes
            else f"the mean bytes per device ({mean_bytes:,.0f})"
        )
        return st, 1, f"{st.value}: {table_bytes:,} bytes > {basis}, so rows are split {where}"
    dim = draft.pruned.table.dim
    if (
        mean_cost_ms > 0
        and table_cost_ms > pc.column_wise_hot_share * mean_cost_ms
        and dim >= 2 * pc.column_wise_min_cols
    ):
        k = _cw_shards(draft, topology.world_size, config, math.ceil(table_cost_ms / mean_cost_ms))
        if k >= 2:
            return (
                ShardingType.COLUMN_WISE,
                k,
                (
                    f"column_wise x{k}: its lookup cost {table_cost_ms:.3g} ms is "
                    f"{table_cost_ms / mean_cost_ms:.1f}x the mean per device "
                    f"({mean_cost_ms:.3g} ms)"
                ),
            )
    return ShardingType.TABLE_WISE, 1, "table_wise: fits one device and is not a hot spot"


def _cw_shards(
    draft: TableDraft, world: int, config: PlannerConfig, want: int | None = None
) -> int:
    dim = draft.pruned.table.dim
    k = min(world, max(1, dim // config.placement.column_wise_min_cols))
    if want is not None:
        k = min(k, want)
    return len(split_cols(dim, max(1, k), min_unit=draft.precision.precision.dim_multiple))
