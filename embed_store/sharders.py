"""TorchRec sharders that offer every sharding type an adrank plan uses, on CPU too.

TorchRec's stock ``EmbeddingBagCollectionSharder`` offers only data_parallel, table_wise,
column_wise and table_column_wise when the compute device is not CUDA, although row_wise,
table_row_wise and grid_shard run correctly on CPU over gloo (checked numerically against an
unsharded module; see ``tests/multiprocess/test_torchrec_plan.py``). DistributedModelParallel
refuses a plan whose sharding type the sharder does not list, so CPU runs of row-wise plans need
this subclass.
"""

from __future__ import annotations

from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.types import ShardingType

__all__ = ["ALL_SHARDING_TYPES", "CpuEmbeddingBagCollectionSharder"]

ALL_SHARDING_TYPES: tuple[str, ...] = (
    ShardingType.DATA_PARALLEL.value,
    ShardingType.TABLE_WISE.value,
    ShardingType.ROW_WISE.value,
    ShardingType.COLUMN_WISE.value,
    ShardingType.TABLE_ROW_WISE.value,
    ShardingType.TABLE_COLUMN_WISE.value,
    ShardingType.GRID_SHARD.value,
)
"""TorchRec sharding type values this module's sharders offer on every device type."""


class CpuEmbeddingBagCollectionSharder(EmbeddingBagCollectionSharder):
    """``EmbeddingBagCollectionSharder`` that offers row-wise and table-row-wise on CPU too.

    Example::

        sharder = CpuEmbeddingBagCollectionSharder()
        model = DistributedModelParallel(ebc, plan=sharding_plan, sharders=[sharder], device=cpu)
    """

    def sharding_types(self, compute_device_type: str) -> list[str]:
        """Every sharding type, whatever the compute device.

        Args:
            compute_device_type: "cpu", "cuda", "mtia" (ignored).

        Returns:
            TorchRec ``ShardingType`` values.
        """
        return list(ALL_SHARDING_TYPES)
