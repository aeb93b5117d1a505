"""Sharded embedding tables: checkpoint format, plan loading, the multi-process lookup runtime on
TorchRec/FBGEMM over torch.distributed, and the gRPC Lookup service.

So far: an adrank :class:`~adrank.types.ShardPlan` converted into TorchRec's terms
(``EmbeddingBagConfig`` per table, a ``ShardingPlan`` placing exactly the plan's shards, a sharder
that offers row-wise sharding on CPU) and an ``EmbeddingBagCollection`` sharded by it.
"""

from embed_store.sharded_ebc import build_sharded_ebc, load_full_weights
from embed_store.sharders import ALL_SHARDING_TYPES, CpuEmbeddingBagCollectionSharder
from embed_store.torchrec_plan import (
    check_placements,
    embedding_bag_configs,
    local_world_size,
    parameter_shardings,
    sharded_placements,
    sharding_spec_placements,
    torchrec_sharding_plan,
)

__all__ = [
    "ALL_SHARDING_TYPES",
    "CpuEmbeddingBagCollectionSharder",
    "build_sharded_ebc",
    "check_placements",
    "embedding_bag_configs",
    "load_full_weights",
    "local_world_size",
    "parameter_shardings",
    "sharded_placements",
    "sharding_spec_placements",
    "torchrec_sharding_plan",
]
