"""Typed values that cross package boundaries.

Anything passed between stages is a frozen, slotted dataclass or an Enum. Types used inside one
package live in that package's ``types.py``.
"""

from __future__ import annotations

import dataclasses
import enum

from adrank.constants import (
    DEFAULT_PLAN_BATCH_SIZE,
    DEFAULT_ROW_ALIGNMENT_BYTES,
    FORMAT_VERSION_PLAN,
    QUANT_SCALE_BIAS_BYTES,
    ROWWISE_ADAGRAD_STATE_BYTES_PER_ROW,
)

__all__ = [
    "ColumnRole",
    "DevicePlan",
    "DeviceSpec",
    "FeatureSlot",
    "OptimizerStateKind",
    "PlanMode",
    "PoolingType",
    "Precision",
    "PruningAction",
    "PruningPolicy",
    "ShardPlan",
    "ShardSpec",
    "ShardingType",
    "TablePlan",
    "Topology",
    "shard_memory_bytes",
]


class ColumnRole(enum.Enum):
    """What a column of a log or snapshot table is for.

    Logs written by ``adrank synth`` and ``adrank import`` record each column's role in the parquet
    schema metadata (see :mod:`adrank.data.schema`); for other files roles are inferred from types.
    """

    SPARSE = "sparse"
    """Categorical id feature: an int or string column (one id per row) or a list of them
    (multi-hot, e.g. a behaviour sequence). Gets an embedding table."""
    DENSE = "dense"
    """Numeric feature fed to the model as a value (float or a fixed-size float list)."""
    LABEL = "label"
    """Training target, e.g. click (0/1)."""
    TIMESTAMP = "timestamp"
    """Event time of the row."""
    KEY = "key"
    """Join or grouping key that is not a model feature, e.g. ``request_id``."""


# --------------------------------------------------------------------------------------------------
# The shard plan: written by sharding_planner, read by pruning and embed_store.
# --------------------------------------------------------------------------------------------------


class Precision(enum.Enum):
    """Storage precision of an embedding table's weights.

    Row bytes follow FBGEMM's table-batched-embedding row layout
    (``fbgemm_gpu.split_table_batched_embeddings_ops_inference.rounded_row_size_in_bytes``)::

        unpadded(dim) = dim * 4                       fp32
                        dim * 2                       fp16
                        dim + 4                       int8  (fp16 scale + fp16 bias per row)
                        dim // 2 + 4                  int4  (two values per byte + scale/bias)
        row_bytes(dim) = round_up(unpadded(dim), row_alignment_bytes)

    The plan records the ``row_alignment_bytes`` it assumed (default 16, FBGEMM's GPU default; its
    CPU kernels use 1). Example: dim 64 -> fp32 256, fp16 128, int8 80 (68 padded to 80),
    int4 48 (36 padded to 48) bytes per row.
    """

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT4 = "int4"

    @property
    def bits(self) -> int:
        """Bits per stored value (scale and bias not counted)."""
        return _PRECISION_BITS[self]

    @property
    def is_quantized(self) -> bool:
        """True for the integer precisions, whose rows carry a scale and bias."""
        return self in (Precision.INT8, Precision.INT4)

    @property
    def dim_multiple(self) -> int:
        """Dims (and column-shard widths) must be a multiple of this: FBGEMM 1.8's row-wise
        quantizer packs int8 rows in pairs and int4 rows in fours of values (checked on CPU:
        int8 fails at odd dims, int4 unless the dim divides by 4)."""
        return {Precision.INT8: 2, Precision.INT4: 4}.get(self, 1)

    def supports_dim(self, dim: int) -> bool:
        """True when rows of ``dim`` values can be stored at this precision."""
        return dim >= 1 and dim % self.dim_multiple == 0

    def row_bytes(self, dim: int, row_alignment_bytes: int = DEFAULT_ROW_ALIGNMENT_BYTES) -> int:
        """Bytes one stored row of ``dim`` values takes, padding included.

        Args:
            dim: Values per row (for a column-wise shard: the shard's columns); >= 1, even for int4.
            row_alignment_bytes: Rows are padded to a multiple of this (>= 1).

        Returns:
            Bytes per row.

        Raises:
            ValueError: ``dim`` < 1, odd ``dim`` with int4, or ``row_alignment_bytes`` < 1.
        """
        if dim < 1 or row_alignment_bytes < 1:
            raise ValueError(
                f"dim and row_alignment_bytes must be >= 1, got {dim}, {row_alignment_bytes}"
            )
        if not self.supports_dim(dim):
            raise ValueError(
                f"{self.value} rows need a dim that is a multiple of {self.dim_multiple} "
                f"(FBGEMM's row-wise quantizer), got {dim}"
            )
        unpadded = dim * self.bits // 8 + (QUANT_SCALE_BIAS_BYTES if self.is_quantized else 0)
        return -(-unpadded // row_alignment_bytes) * row_alignment_bytes


_PRECISION_BITS = {Precision.FP32: 32, Precision.FP16: 16, Precision.INT8: 8, Precision.INT4: 4}


class ShardingType(enum.Enum):
    """How a table is cut into shards. Values are TorchRec's ``ShardingType`` strings.

    * TABLE_WISE: one shard, the whole table, on one rank.
    * ROW_WISE: contiguous row ranges (all columns), one per rank, on any ranks.
    * COLUMN_WISE: contiguous column ranges (all rows), on any ranks.
    * TABLE_ROW_WISE: contiguous row ranges on the ranks of one host (all-to-all stays in the host).
    """

    TABLE_WISE = "table_wise"
    ROW_WISE = "row_wise"
    COLUMN_WISE = "column_wise"
    TABLE_ROW_WISE = "table_row_wise"


class PoolingType(enum.Enum):
    """How a bag of looked-up rows is reduced. Values are TorchRec's ``PoolingType`` names."""

    SUM = "SUM"
    MEAN = "MEAN"
    NONE = "NONE"
    """No pooling: one embedding per id (sequence features, TorchRec's EmbeddingCollection)."""


class PlanMode(enum.Enum):
    """What the plan is for: serving only weights, or training (weights + optimizer state)."""

    INFERENCE = "inference"
    TRAINING = "training"


class OptimizerStateKind(enum.Enum):
    """Optimizer state that training keeps beside each table (counted in the plan's bytes).

    * NONE: inference; no state.
    * ROWWISE_ADAGRAD: one fp32 accumulator per row: ``+ 4 bytes x rows``. FBGEMM's and TorchRec's
      default for embedding tables, and the planner's default in training mode.
    * ADAGRAD: one fp32 accumulator per value: ``+ 4 bytes x rows x dim`` (twice an fp32 table).
    """

    NONE = "none"
    ROWWISE_ADAGRAD = "rowwise_adagrad"
    ADAGRAD = "adagrad"

    def state_bytes(self, num_rows: int, num_cols: int) -> int:
        """Optimizer-state bytes of a block of ``num_rows`` x ``num_cols`` values."""
        if self is OptimizerStateKind.ROWWISE_ADAGRAD:
            return num_rows * ROWWISE_ADAGRAD_STATE_BYTES_PER_ROW
        if self is OptimizerStateKind.ADAGRAD:
            return num_rows * num_cols * 4
        return 0


def shard_memory_bytes(
    precision: Precision,
    num_rows: int,
    num_cols: int,
    optimizer: OptimizerStateKind = OptimizerStateKind.NONE,
    row_alignment_bytes: int = DEFAULT_ROW_ALIGNMENT_BYTES,
) -> int:
    """Device bytes of one shard: its rows (FBGEMM layout, :class:`Precision`) + optimizer state.

    A column-wise shard stores rows of ``num_cols`` values, each with its own scale and bias when
    quantized, so column shards of a quantized table sum to more than the whole table.

    Args:
        precision: Storage precision.
        num_rows: Rows in the shard.
        num_cols: Columns (values per row) in the shard.
        optimizer: Optimizer state kept per shard (training).
        row_alignment_bytes: Row padding.

    Returns:
        Bytes.
    """
    return num_rows * precision.row_bytes(num_cols, row_alignment_bytes) + optimizer.state_bytes(
        num_rows, num_cols
    )


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One accelerator (or CPU process) that holds shards.

    Attributes:
        rank: Global rank, 0..world_size-1.
        host: Host name; ranks on one host talk over the fast intra-host link.
        memory_bytes: Memory available for embedding shards (the plan never exceeds it).
        memory_bandwidth_bytes_per_s: Device memory bandwidth (None: the planner's default).
        comm_bandwidth_bytes_per_s: This device's link to its host peers (None: default).
    """

    rank: int
    host: str
    memory_bytes: int
    memory_bandwidth_bytes_per_s: float | None = None
    comm_bandwidth_bytes_per_s: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Topology:
    """The devices a plan is made for.

    Example (two hosts, two devices each, one with less memory)::

        Topology(devices=(DeviceSpec(0, "a", 16 << 30), DeviceSpec(1, "a", 16 << 30),
                          DeviceSpec(2, "b", 16 << 30), DeviceSpec(3, "b", 8 << 30)))
        world_size == 4, hosts == ("a", "b")

    Attributes:
        devices: One per rank, ordered by rank (ranks are exactly 0..n-1).
        inter_host_bandwidth_bytes_per_s: Bandwidth between hosts (None: the planner's default).
    """

    devices: tuple[DeviceSpec, ...]
    inter_host_bandwidth_bytes_per_s: float | None = None

    @property
    def world_size(self) -> int:
        """Number of ranks."""
        return len(self.devices)

    @property
    def hosts(self) -> tuple[str, ...]:
        """Host names in order of their first rank."""
        return tuple(dict.fromkeys(d.host for d in self.devices))

    def ranks_on(self, host: str) -> tuple[int, ...]:
        """Ranks of the devices on ``host``, ascending."""
        return tuple(d.rank for d in self.devices if d.host == host)


@dataclasses.dataclass(frozen=True, slots=True)
class ShardSpec:
    """One rectangular block of a table stored on one rank: rows ``[row_offset, row_offset +
    num_rows)`` x columns ``[col_offset, col_offset + num_cols)`` (TorchRec's ``ShardMetadata``
    with ``shard_offsets=[row_offset, col_offset]``, ``shard_sizes=[num_rows, num_cols]``).

    Attributes:
        rank: Rank that stores it.
        row_offset: First table ``row`` in the shard; ``local_row = row - row_offset``.
        num_rows: Rows in the shard (>= 1).
        col_offset: First column.
        num_cols: Columns (>= 1).
    """

    rank: int
    row_offset: int
    num_rows: int
    col_offset: int
    num_cols: int


class PruningAction(enum.Enum):
    """What the pruning package does with a table's hashed rows."""

    KEEP_ALL = "keep_all"
    """No pruning: ``row == hashed_id``, no remap."""
    DROP_DEAD = "drop_dead"
    """Rows whose ids were all unseen in the last ``unseen_window_s`` of the logs (or accessed fewer
    than ``min_count`` times) get no row; their hashed ids map to ``fallback_row`` (or -1)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PruningPolicy:
    """The planner's instruction to the pruning package for one table (the seam between the two).

    The planner sizes the table for the rows it expects to keep; ``pruning`` later counts accesses
    per hashed row over the logs and builds the remap (``hashed_id -> row``, length
    ``TablePlan.hashed_rows``) that keeps at most ``TablePlan.num_rows`` rows (the fallback row
    included): a row is dead when no access in the last ``unseen_window_s`` hit it or it was hit
    fewer than ``min_count`` times; if more rows are live than fit, the least-accessed live rows
    are dropped too and reported. Dedicated heavy-hitter rows are never pruned.

    Example: hashed_rows 1000, expected_pruned_rows 300, fallback row kept -> num_rows 701.

    Attributes:
        action: Keep all rows, or drop dead ones.
        unseen_window_s: Recency window (None: counts only).
        min_count: Rows hit fewer times than this are dead (0: no count threshold).
        expected_pruned_rows: The planner's estimate of dead hashed rows (from the stats'
            ``unseen_recent_share``): ``hashed_rows - num_rows + (1 if fallback_row is not None)``.
        expected_pruned_traffic_share: Estimated share of the table's lookups whose ids are dead
            (they will read the fallback row).
    """

    action: PruningAction = PruningAction.KEEP_ALL
    unseen_window_s: int | None = None
    min_count: int = 0
    expected_pruned_rows: int = 0
    expected_pruned_traffic_share: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class FeatureSlot:
    """How one feature's ids map into its table (the ``id_key -> hashed_id`` step).

    For an id key ``k`` of this feature::

        if k is one of the dedicated keys (sorted int64 array in ``dedicated_keys_file``):
            hashed_id = dedicated_row_offset + (position of k in that sorted array)
        else:
            hashed_id = row_offset + murmur3_64(k, seed) % hash_size

    Example: a feature alone in its table with 2 heavy hitters and 998 hashed rows has
    ``row_offset=0, hash_size=998, dedicated_row_offset=998, num_dedicated_rows=2`` and the table
    has ``hashed_rows == 1000``. Two features sharing a salted range of 5000 rows both have
    ``row_offset=0, hash_size=5000`` and different ``seed``s; features concatenated in one table
    have disjoint ``[row_offset, row_offset + hash_size)`` ranges.

    Attributes:
        name: Feature (log column) name; unique across the plan.
        seed: uint32 seed for :func:`adrank.hashing.murmur3_64` (distinct within a table).
        hash_size: Rows the feature's non-dedicated ids are hashed into (>= 1).
        row_offset: Table ``hashed_id`` where that range starts.
        num_dedicated_rows: Heavy hitters with their own collision-free row (0: none).
        dedicated_row_offset: Table ``hashed_id`` of the first dedicated row.
        dedicated_keys_file: Sidecar ``.npy`` (sorted int64 id keys, length ``num_dedicated_rows``)
            relative to the plan's directory; None when there are no dedicated rows.
        pooling: How the feature's bag is reduced.
        pooling_factor: Mean ids per example (lookup traffic per example).
        traffic_share: The feature's share of all the plan's lookups (ids seen), in [0, 1].
        expected_collision_rate: Planner's estimate of the share of the feature's lookups that read
            a row shared with another id (its own or another feature's), in [0, 1].
        expected_pruned_rows: This feature's part of the table's ``expected_pruned_rows``.
    """

    name: str
    seed: int
    hash_size: int
    row_offset: int = 0
    num_dedicated_rows: int = 0
    dedicated_row_offset: int = 0
    dedicated_keys_file: str | None = None
    pooling: PoolingType = PoolingType.SUM
    pooling_factor: float = 1.0
    traffic_share: float = 0.0
    expected_collision_rate: float = 0.0
    expected_pruned_rows: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class TablePlan:
    """One embedding table: its features, size, precision and shards.

    Id spaces (DESIGN.md "The id spaces")::

        raw_id --adrank.hashing--> id_key --FeatureSlot--> hashed_id in [0, hashed_rows)
               --remap (or identity)--> row in [0, num_rows) --ShardSpec--> local_row

    ``row = remap[hashed_id]`` when ``remap_file`` is set (``-1`` entries are pruned: they read
    ``fallback_row`` if it is set, else contribute nothing, as FBGEMM's pruned lookups do), else
    ``row = hashed_id`` (then ``num_rows == hashed_rows``). The shard holding ``row`` at column
    ``c`` is the one with ``row_offset <= row < row_offset + num_rows`` and
    ``col_offset <= c < col_offset + num_cols``; there ``local_row = row - shard.row_offset``.

    Attributes:
        name: Table name; unique in the plan.
        features: Features looked up in this table (one or more).
        num_rows: Physical rows (after pruning): what is stored and sharded.
        dim: Embedding dim (values per row).
        precision: Storage precision.
        pooling: Pooling of the table's features.
        sharding_type: How the shards cut the table.
        shards: Blocks covering every (row, column) exactly once.
        hashed_rows: Size of the ``hashed_id`` space (>= ``num_rows``).
        fallback_row: Row that pruned hashed ids read (None: pruned ids contribute nothing).
        remap_file: ``.npy`` remap (int64, length ``hashed_rows``) relative to the plan's directory,
            written by the pruning package; None before pruning or without it.
        pruning: What the pruning package must do with this table.
    """

    name: str
    features: tuple[FeatureSlot, ...]
    num_rows: int
    dim: int
    precision: Precision
    pooling: PoolingType
    sharding_type: ShardingType
    shards: tuple[ShardSpec, ...]
    hashed_rows: int
    fallback_row: int | None = None
    remap_file: str | None = None
    pruning: PruningPolicy = PruningPolicy()


@dataclasses.dataclass(frozen=True, slots=True)
class DevicePlan:
    """What the plan puts on one rank.

    Attributes:
        rank: Global rank.
        host: Host of the rank.
        memory_bytes: Capacity (from the topology).
        used_bytes: Bytes of the shards placed there (weights + optimizer state).
        est_cost_ms: Estimated lookup time per batch (memory reads plus communication), in ms.
    """

    rank: int
    host: str
    memory_bytes: int
    used_bytes: int
    est_cost_ms: float


@dataclasses.dataclass(frozen=True, slots=True)
class ShardPlan:
    """A complete plan: every table, its shards, and the load per device.

    Attributes:
        mode: Inference or training.
        tables: Tables, sorted by name.
        devices: One per rank, ordered by rank.
        inputs_fingerprint: Hash of the stats (or tables file), topology and planner config; the
            runtime refuses a plan whose fingerprint does not match its inputs.
        batch_size: Examples per device per step that the cost model assumed.
        optimizer: Optimizer state counted in the bytes (NONE for inference).
        row_alignment_bytes: Row padding assumed in the bytes (see :class:`Precision`).
        format_version: Layout version of the plan file this corresponds to.
    """

    mode: PlanMode
    tables: tuple[TablePlan, ...]
    devices: tuple[DevicePlan, ...]
    inputs_fingerprint: str
    batch_size: int = DEFAULT_PLAN_BATCH_SIZE
    optimizer: OptimizerStateKind = OptimizerStateKind.NONE
    row_alignment_bytes: int = DEFAULT_ROW_ALIGNMENT_BYTES
    format_version: int = FORMAT_VERSION_PLAN

    def table(self, name: str) -> TablePlan:
        """The table called ``name``.

        Raises:
            KeyError: No such table.
        """
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    def table_of_feature(self, feature: str) -> tuple[TablePlan, FeatureSlot]:
        """The table holding ``feature`` and the feature's slot in it.

        Raises:
            KeyError: No table holds the feature.
        """
        for t in self.tables:
            for f in t.features:
                if f.name == feature:
                    return t, f
        raise KeyError(feature)

    def shard_bytes(self, table: TablePlan, shard: ShardSpec) -> int:
        """Device bytes of ``shard`` of ``table`` under this plan's optimizer and alignment."""
        return shard_memory_bytes(
            table.precision,
            shard.num_rows,
            shard.num_cols,
            self.optimizer,
            self.row_alignment_bytes,
        )
