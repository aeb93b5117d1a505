"""Estimated lookup cost of a shard on a device, per training/inference step (milliseconds).

For a global batch ``B = batch_size x world_size`` and a table read ``L = B x lookups_per_example``
times per step, a shard holding a share ``phi`` of the table's rows (1 for table- and column-wise
shards; ids hash uniformly over rows) and ``c`` of its columns costs::

    compute = L * phi * row_bytes(c) / memory_bandwidth          (reading the rows)
    comm    = (L * phi * 8                                        ids in (int64)
               + B * c * 4)                                       pooled fp32 outputs out
              / link bandwidth                                    (x pooling factor without pooling)

Row-wise shards send partial sums of all ``dim`` columns. Traffic to ranks on other hosts (the
share ``(world - host ranks) / world``) goes over the inter-host link; table-row-wise shards
reduce inside their host first and send only ``1 / host ranks`` of the outputs across hosts. This
is the shape of TorchRec's perf model (``EmbeddingPerfEstimator``) reduced to what the plan needs
to balance devices; its absolute values are estimates, not measurements.
"""

from __future__ import annotations

from adrank.constants import (
    DEFAULT_HBM_BANDWIDTH_BYTES_PER_S,
    DEFAULT_INTER_HOST_BANDWIDTH_BYTES_PER_S,
    DEFAULT_INTRA_HOST_BANDWIDTH_BYTES_PER_S,
)
from adrank.types import DeviceSpec, PoolingType, ShardingType, Topology
from sharding_planner.types import PlannerConfig, TableDraft

__all__ = ["ID_BYTES", "OUTPUT_VALUE_BYTES", "shard_cost_ms"]

ID_BYTES = 8
"""Bytes per id sent to the shard (int64)."""
OUTPUT_VALUE_BYTES = 4
"""Bytes per output value sent back (fp32)."""


def shard_cost_ms(
    draft: TableDraft,
    sharding_type: ShardingType,
    num_rows: int,
    num_cols: int,
    device: DeviceSpec,
    topology: Topology,
    config: PlannerConfig,
) -> float:
    """Estimated milliseconds per step that one shard adds to ``device``.

    Args:
        draft: The table.
        sharding_type: How it is sharded.
        num_rows: Rows in the shard.
        num_cols: Columns in the shard.
        device: Where it would go.
        topology: All devices (for host sizes and the inter-host link).
        config: Batch size, alignment and optimizer.

    Returns:
        Compute plus communication time in ms.
    """
    t = draft.pruned
    world = topology.world_size
    global_batch = config.batch_size * world
    lookups = global_batch * draft.lookups_per_example
    phi = num_rows / t.num_rows if t.num_rows else 0.0
    row_bytes = draft.precision.precision.row_bytes(num_cols, config.row_alignment_bytes)
    mem_bw = device.memory_bandwidth_bytes_per_s or DEFAULT_HBM_BANDWIDTH_BYTES_PER_S
    compute_s = lookups * phi * row_bytes / mem_bw
    out_cols = (
        t.table.dim
        if sharding_type in (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE)
        else num_cols
    )
    if t.table.pooling is PoolingType.NONE:
        out_bytes = lookups * phi * out_cols * OUTPUT_VALUE_BYTES
    else:
        out_bytes = global_batch * out_cols * OUTPUT_VALUE_BYTES
    comm_bytes = lookups * phi * ID_BYTES + out_bytes
    if world == 1:
        return compute_s * 1e3
    intra_bw = device.comm_bandwidth_bytes_per_s or DEFAULT_INTRA_HOST_BANDWIDTH_BYTES_PER_S
    inter_bw = topology.inter_host_bandwidth_bytes_per_s or DEFAULT_INTER_HOST_BANDWIDTH_BYTES_PER_S
    host_ranks = len(topology.ranks_on(device.host))
    remote = (world - host_ranks) / world
    if sharding_type is ShardingType.TABLE_ROW_WISE:
        comm_s = comm_bytes / intra_bw + out_bytes * remote / host_ranks / inter_bw
    else:
        comm_s = comm_bytes * (1 - remote) / intra_bw + comm_bytes * remote / inter_bw
    return (compute_s + comm_s) * 1e3
