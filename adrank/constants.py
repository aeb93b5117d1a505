"""Defaults shared across packages. Quantities carry their unit in the name."""

from __future__ import annotations

FORMAT_VERSION_STATS = 1
"""Version of the stats.json layout written by ``adrank stats``."""

STRING_ID_SEED = 0
"""mmh3 seed that turns a string raw id into its int64 id key (see :mod:`adrank.hashing`)."""

DEFAULT_EXACT_DISTINCT_LIMIT = 1 << 19
"""Distinct ids per feature counted exactly; beyond it stats switch to sketches (524,288 ids)."""

DEFAULT_HLL_PRECISION = 14
"""HyperLogLog precision p: 2**p registers, relative standard error 1.04 / sqrt(2**p) ~ 0.81%."""

DEFAULT_HEAVY_HITTERS = 100
"""Heavy hitters reported per feature."""

DEFAULT_RECENT_WINDOW_S = 86_400
"""Ids not seen in the last this-many seconds of the logs count as dead-row candidates (1 day)."""

DEFAULT_BATCH_ROWS = 262_144
"""Rows per streamed record batch when reading parquet."""

FORMAT_VERSION_PLAN = 1
"""Version of the plan.json layout written by ``adrank plan``."""

FORMAT_VERSION_PRECISION_ERRORS = 1
"""Version of the measured precision-errors file (written by embed_store's calibration)."""

DEFAULT_ROW_ALIGNMENT_BYTES = 16
"""Bytes each stored embedding row is padded to: FBGEMM's GPU inference TBE default
(``row_alignment = 1 if use_cpu else 16``); fp32/fp16 rows of dims that are multiples of 8 need no
padding."""

QUANT_SCALE_BIAS_BYTES = 4
"""Bytes of the fp16 scale + fp16 bias that FBGEMM stores in every int8/int4 row
(``DEFAULT_SCALE_BIAS_SIZE_IN_BYTES``)."""

ROWWISE_ADAGRAD_STATE_BYTES_PER_ROW = 4
"""Optimizer state of row-wise Adagrad: one fp32 accumulator per row (FBGEMM's default)."""

DEFAULT_PLAN_BATCH_SIZE = 512
"""Batch size (examples per device per step) the planner's lookup-cost model assumes."""

DEFAULT_EMBEDDING_DIM = 64
"""Embedding dim of a feature without a per-feature override."""

DEFAULT_HBM_BANDWIDTH_BYTES_PER_S = 897e9
"""Device memory bandwidth assumed when a topology does not give one (TorchRec's HBM_MEM_BW)."""

DEFAULT_INTRA_HOST_BANDWIDTH_BYTES_PER_S = 600e9
"""Device-to-device bandwidth inside a host when not given (TorchRec's INTRA_NODE_BANDWIDTH)."""

DEFAULT_INTER_HOST_BANDWIDTH_BYTES_PER_S = 12.5e9
"""Bandwidth between hosts when not given (TorchRec's CROSS_NODE_BANDWIDTH)."""

REMAP_BYTES_PER_HASHED_ROW = 4
"""Device bytes of a pruning remap per hashed id: FBGEMM keeps ``index_remappings`` as int32 on the
device. The allocation charges it for pruned features (the plan's shard bytes do not include it)."""
