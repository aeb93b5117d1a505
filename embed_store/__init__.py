"""Sharded embedding tables: checkpoint format, plan loading, the multi-process lookup runtime on
FBGEMM kernels over torch.distributed, calibration of per-table precision, and the conversion of
an adrank plan into TorchRec's terms (for training under DistributedModelParallel).

Serving path: :func:`~embed_store.checkpoint.open_checkpoint` -> :class:`LookupLayout` (who
computes what) -> :class:`LocalLookup` (one process) or :func:`launch_local` /
:func:`start_from_env` (N ranks, rank 0 takes lookups) -> ``lookup(LookupBatch) -> LookupResult``.
"""

from embed_store.batch import JaggedIds, LookupBatch, LookupResult
from embed_store.calibrate import (
    DEFAULT_CALIBRATION_PRECISIONS,
    CalibrationResult,
    calibrate,
    write_calibration,
)
from embed_store.checkpoint import (
    CHECKPOINT_KIND,
    FORMAT_VERSION_CHECKPOINT,
    MANIFEST_FILE_NAME,
    Checkpoint,
    StoredShard,
    StoredTable,
    init_checkpoint,
    open_checkpoint,
    reshard_checkpoint,
    save_checkpoint,
)
from embed_store.frontend import LookupFrontend, WireBatch, hash_id_keys
from embed_store.layout import LookupLayout
from embed_store.local_lookup import LocalLookup
from embed_store.quantize import TbeTable, build_tbe, dequantize, quantize
from embed_store.sharded_ebc import build_sharded_ebc, load_full_weights
from embed_store.sharded_runtime import (
    RuntimeConfig,
    ShardedLookup,
    launch_local,
    load_remaps,
    start_from_env,
)
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
    "CHECKPOINT_KIND",
    "DEFAULT_CALIBRATION_PRECISIONS",
    "FORMAT_VERSION_CHECKPOINT",
    "MANIFEST_FILE_NAME",
    "CalibrationResult",
    "Checkpoint",
    "CpuEmbeddingBagCollectionSharder",
    "JaggedIds",
    "LocalLookup",
    "LookupBatch",
    "LookupFrontend",
    "LookupLayout",
    "LookupResult",
    "RuntimeConfig",
    "ShardedLookup",
    "StoredShard",
    "StoredTable",
    "TbeTable",
    "WireBatch",
    "build_sharded_ebc",
    "build_tbe",
    "calibrate",
    "check_placements",
    "dequantize",
    "embedding_bag_configs",
    "hash_id_keys",
    "init_checkpoint",
    "launch_local",
    "load_full_weights",
    "load_remaps",
    "local_world_size",
    "open_checkpoint",
    "parameter_shardings",
    "quantize",
    "reshard_checkpoint",
    "save_checkpoint",
    "sharded_placements",
    "sharding_spec_placements",
    "start_from_env",
    "torchrec_sharding_plan",
    "write_calibration",
]
