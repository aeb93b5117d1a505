"""Who computes what in a lookup: the plan's shards grouped into kernels per rank, and where every
partial output lands in the pooled result.

Every rank derives the same :class:`LookupLayout` from the same plan (no negotiation at run time).
The *wire* is the batch as every rank sees it: all pooled features of the plan in a fixed order
(tables by name, then their features), ``batch`` bags each, ids already mapped to ``row`` (after
the pruning remap). A rank's shards are its *units*; a unit gets the bags of each feature of its
table (a *pair*), with ids outside its row range replaced by ``-1`` (FBGEMM skips them), so a
row-wise shard returns a partial sum that the combine step adds up. Column-wise shards return
their column slice. Units are split into ``threads_per_rank`` kernel groups (one FBGEMM module
each) because the CPU kernel runs a module on one thread.

Sequence (unpooled, ``PoolingType.NONE``) features travel in the same wire after the pooled ones.
Their units go into *sequence groups* (one FBGEMM module per dim: the unpooled kernel needs one
dim per module) that return one row per id, zero for ids another shard holds; the combine adds
(row splits) or places (column splits) those rows into each feature's ``[ids, dim]`` matrix.

Output columns: pooled feature ``f`` occupies ``[col_offset[f], col_offset[f] + dim[f])`` of the
pooled ``[batch, total_cols]`` result; pair ``p`` writes its ``num_cols`` columns at
``out_col = col_offset[f] + shard.col_offset``.
"""

from __future__ import annotations

import dataclasses
import heapq

import torch

from adrank.errors import PlanError, PlanErrorKind
from adrank.types import PoolingType, Precision, ShardPlan, ShardSpec, TablePlan

__all__ = ["KernelGroup", "LookupLayout", "Pair", "RankLayout", "ShardUnit"]


@dataclasses.dataclass(frozen=True, slots=True)
class ShardUnit:
    """One shard of one table, held by one rank.

    Attributes:
        table: Table name.
        shard: The block (rows and columns of the table).
        precision: Storage precision of the table.
        covers_all_rows: True when the shard has every row (ids pass through unchanged).
    """

    table: str
    shard: ShardSpec
    precision: Precision
    covers_all_rows: bool

    @property
    def label(self) -> str:
        """Unique name in a kernel, e.g. ``ads@r1000c0``."""
        return f"{self.table}@r{self.shard.row_offset}c{self.shard.col_offset}"


@dataclasses.dataclass(frozen=True, slots=True)
class Pair:
    """One feature's bags fed to one unit (one input group of a kernel).

    Attributes:
        unit: Index of the unit in its kernel group.
        feature: Index of the feature in the wire order.
        row_offset: First table row the unit holds (ids are shifted by it).
        num_rows: Rows the unit holds (ids outside become -1 unless ``covers_all_rows``).
        covers_all_rows: Ids pass through unchanged.
        out_col: First column of the pooled result this pair writes.
        num_cols: Columns it writes (the shard's columns).
    """

    unit: int
    feature: int
    row_offset: int
    num_rows: int
    covers_all_rows: bool
    out_col: int
    num_cols: int


@dataclasses.dataclass(frozen=True, slots=True)
class KernelGroup:
    """Units computed by one FBGEMM module call.

    Attributes:
        units: The shards in the module, in its table order.
        pairs: The module's features (input groups), in its feature order.
        num_cols: Output columns of the module (sum of the pairs' columns).
    """

    units: tuple[ShardUnit, ...]
    pairs: tuple[Pair, ...]
    num_cols: int


@dataclasses.dataclass(frozen=True, slots=True)
class RankLayout:
    """What one rank computes.

    Attributes:
        rank: The rank.
        groups: Its kernel groups; their outputs are concatenated in this order.
        num_cols: Columns of the rank's partial output ``[batch, num_cols]``.
        out_cols: int64 ``[num_cols]``: pooled-result column of each partial column.
    """

    rank: int
    groups: tuple[KernelGroup, ...]
    num_cols: int
    out_cols: torch.Tensor
    sequence_groups: tuple[KernelGroup, ...] = ()

    def sequence_elems(self, ids_per_feature: list[int]) -> int:
        """float32 values the rank's sequence groups return for a batch with these id counts."""
        return sum(
            sum(ids_per_feature[p.feature] for p in g.pairs) * g.units[0].shard.num_cols
            for g in self.sequence_groups
        )


@dataclasses.dataclass(frozen=True, slots=True)
class LookupLayout:
    """The whole lookup: wire features, output columns and each rank's part.

    Attributes:
        features: Pooled features in wire order.
        tables: Table of each wire feature.
        dims: Dim of each wire feature.
        mean_pooled: Whether each wire feature is MEAN-pooled (divided by its bag length after
            the partial sums are added).
        col_offsets: First pooled-result column of each wire feature.
        total_cols: Columns of the pooled result.
        ranks: One per rank, in rank order.
        sequence: Whether each wire feature is a sequence (unpooled) feature; those come after
            the pooled ones, and their ``col_offsets`` are 0 (each has its own matrix).
        overlapping: True when some result column is written by several ranks or pairs
            (row-wise shards): the combine adds instead of copying.
    """

    features: tuple[str, ...]
    tables: tuple[str, ...]
    dims: tuple[int, ...]
    mean_pooled: tuple[bool, ...]
    col_offsets: tuple[int, ...]
    total_cols: int
    ranks: tuple[RankLayout, ...]
    overlapping: bool
    sequence: tuple[bool, ...] = ()

    @property
    def num_pooled(self) -> int:
        """Pooled wire features (the first ones)."""
        return len(self.features) - sum(self.sequence)

    @property
    def world_size(self) -> int:
        """Ranks taking part."""
        return len(self.ranks)

    def feature_index(self) -> dict[str, int]:
        """Feature name -> wire index."""
        return {f: i for i, f in enumerate(self.features)}

    @classmethod
    def from_plan(cls, plan: ShardPlan, *, threads_per_rank: int = 1) -> LookupLayout:
        """The layout of ``plan`` as sharded across its devices.

        Args:
            plan: The plan.
            threads_per_rank: Kernel groups per rank (cores each rank may use).

        Raises:
            PlanError: A shard on a rank outside the plan's devices, or columns no shard holds.
        """
        return cls._build(plan, plan.tables, len(plan.devices), threads_per_rank)

    @classmethod
    def single_device(cls, plan: ShardPlan, *, threads: int = 1) -> LookupLayout:
        """The same tables unsharded on one device (each table whole): the parity reference."""
        whole = tuple(
            dataclasses.replace(
                t,
                sharding_type=t.sharding_type,
                shards=(
                    ShardSpec(
                        rank=0, row_offset=0, num_rows=t.num_rows, col_offset=0, num_cols=t.dim
                    ),
                ),
            )
            for t in plan.tables
        )
        return cls._build(plan, whole, 1, threads)

    @classmethod
    def _build(
        cls, plan: ShardPlan, tables: tuple[TablePlan, ...], world: int, threads: int
    ) -> LookupLayout:
        if threads < 1:
            raise ValueError(f"threads per rank must be >= 1, got {threads}")
        ordered = sorted(tables, key=lambda x: x.name)
        # Wire order: pooled tables' features, then sequence tables' features.
        wire = [t for t in ordered if t.pooling is not PoolingType.NONE] + [
            t for t in ordered if t.pooling is PoolingType.NONE
        ]
        features: list[str] = []
        feature_tables: list[str] = []
        dims: list[int] = []
        mean: list[bool] = []
        sequence: list[bool] = []
        col_offsets: list[int] = []
        col = 0
        table_features: dict[str, list[int]] = {}
        for t in wire:
            is_seq = t.pooling is PoolingType.NONE
            for f in t.features:
                table_features.setdefault(t.name, []).append(len(features))
                features.append(f.name)
                feature_tables.append(t.name)
                dims.append(t.dim)
                mean.append(t.pooling is PoolingType.MEAN)
                sequence.append(is_seq)
                col_offsets.append(0 if is_seq else col)
                col += 0 if is_seq else t.dim
        per_rank_units: list[list[tuple[ShardUnit, float]]] = [[] for _ in range(world)]
        per_rank_seq: list[list[ShardUnit]] = [[] for _ in range(world)]
        for t in tables:
            pooling = sum(f.pooling_factor for f in t.features)
            for s in t.shards:
                if not 0 <= s.rank < world:
                    raise PlanError(
                        f"table {t.name!r} has a shard on rank {s.rank}, outside 0..{world - 1}",
                        kind=PlanErrorKind.PLAN_MISMATCH,
                    )
                if s.num_rows == 0 or s.num_cols == 0:
                    continue  # an empty shard holds nothing and computes nothing
                unit = ShardUnit(
                    table=t.name,
                    shard=s,
                    precision=t.precision,
                    covers_all_rows=s.row_offset == 0 and s.num_rows == t.num_rows,
                )
                if t.pooling is PoolingType.NONE:
                    per_rank_seq[s.rank].append(unit)
                    continue
                # Cost ~ ids read x bytes per id read (a row-sharded unit still scans every id).
                cost = max(pooling, 1e-3) * s.num_cols * t.precision.bits / 8
                per_rank_units[s.rank].append((unit, cost))
        coverage: dict[int, int] = {}
        seq_coverage: dict[tuple[int, int], int] = {}
        ranks = []
        for r in range(world):
            # fp32 units run on torch's embedding_bag, which uses every thread inside one call;
            # quantized units on FBGEMM's kernel, one thread per call: split those into groups.
            fp32 = [(u, c) for u, c in per_rank_units[r] if u.precision is Precision.FP32]
            quant = [(u, c) for u, c in per_rank_units[r] if u.precision is not Precision.FP32]
            groups = ([[u for u, _ in fp32]] if fp32 else []) + _split_groups(quant, threads)
            kernel_groups = []
            out_cols: list[int] = []
            for units in groups:
                pairs = _pairs(units, table_features, col_offsets)
                for p in pairs:
                    for c in range(p.out_col, p.out_col + p.num_cols):
                        coverage[c] = coverage.get(c, 0) + 1
                    out_cols.extend(range(p.out_col, p.out_col + p.num_cols))
                kernel_groups.append(
                    KernelGroup(
                        units=tuple(units),
                        pairs=tuple(pairs),
                        num_cols=sum(p.num_cols for p in pairs),
                    )
                )
            seq_groups = []
            by_width: dict[int, list[ShardUnit]] = {}
            for u in per_rank_seq[r]:
                by_width.setdefault(u.shard.num_cols, []).append(u)
            for width in sorted(by_width):
                units = by_width[width]
                pairs = _pairs(units, table_features, col_offsets)
                for p in pairs:
                    for c in range(p.out_col, p.out_col + p.num_cols):
                        key = (p.feature, c)
                        seq_coverage[key] = seq_coverage.get(key, 0) + 1
                seq_groups.append(
                    KernelGroup(units=tuple(units), pairs=tuple(pairs), num_cols=width)
                )
            ranks.append(
                RankLayout(
                    rank=r,
                    groups=tuple(kernel_groups),
                    num_cols=len(out_cols),
                    out_cols=torch.tensor(out_cols, dtype=torch.int64),
                    sequence_groups=tuple(seq_groups),
                )
            )
        seq_missing = [
            features[i]
            for i, is_seq in enumerate(sequence)
            if is_seq and any(seq_coverage.get((i, c), 0) == 0 for c in range(dims[i]))
        ]
        if seq_missing:
            raise PlanError(
                f"sequence features {seq_missing} have columns no shard holds",
                kind=PlanErrorKind.PLAN_MISMATCH,
            )
        missing = [c for c in range(col) if coverage.get(c, 0) == 0]
        if missing:
            raise PlanError(
                f"{len(missing)} output columns are held by no shard (first: {missing[0]}); the "
                "plan's shards do not cover its tables",
                kind=PlanErrorKind.PLAN_MISMATCH,
            )
        return cls(
            features=tuple(features),
            tables=tuple(feature_tables),
            dims=tuple(dims),
            mean_pooled=tuple(mean),
            col_offsets=tuple(col_offsets),
            total_cols=col,
            ranks=tuple(ranks),
            overlapping=any(v > 1 for v in coverage.values()),
            sequence=tuple(sequence),
        )


def _pairs(
    units: list[ShardUnit], table_features: dict[str, list[int]], col_offsets: list[int]
) -> list[Pair]:
    """The (unit, feature) input groups of a kernel, in the kernel's feature order."""
    pairs = []
    for ui, u in enumerate(units):
        for fi in table_features[u.table]:
            pairs.append(
                Pair(
                    unit=ui,
                    feature=fi,
                    row_offset=u.shard.row_offset,
                    num_rows=u.shard.num_rows,
                    covers_all_rows=u.covers_all_rows,
                    out_col=col_offsets[fi] + u.shard.col_offset,
                    num_cols=u.shard.num_cols,
                )
            )
    return pairs


def _split_groups(units: list[tuple[ShardUnit, float]], k: int) -> list[list[ShardUnit]]:
    """Split units into at most ``k`` groups of near-equal cost (longest processing time first).

    Units keep plan order inside a group so that the layout is the same on every rank.
    """
    if not units:
        return []
    k = min(k, len(units))
    heap = [(0.0, g) for g in range(k)]
    assignment: dict[int, int] = {}
    for idx in sorted(range(len(units)), key=lambda i: (-units[i][1], i)):
        load, g = heapq.heappop(heap)
        assignment[idx] = g
        heapq.heappush(heap, (load + units[idx][1], g))
    groups: list[list[ShardUnit]] = [[] for _ in range(k)]
    for idx, (unit, _) in enumerate(units):
        groups[assignment[idx]].append(unit)
    return [g for g in groups if g]
