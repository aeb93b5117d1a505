"""Small hand-built shard plans for tests of the plan's consumers (pruning, embed_store).

``make_plan`` fills in what validation derives (device bytes from the shards), so a test states
only its tables and shards.
"""

from __future__ import annotations

from collections.abc import Sequence

from adrank.types import (
    DevicePlan,
    FeatureSlot,
    PlanMode,
    PoolingType,
    Precision,
    PruningAction,
    PruningPolicy,
    ShardingType,
    ShardPlan,
    ShardSpec,
    TablePlan,
)

GIB = 1 << 30


def feature(name: str, seed: int, hash_size: int, **kw: object) -> FeatureSlot:
    """A feature slot (keyword arguments override FeatureSlot's defaults)."""
    return FeatureSlot(name=name, seed=seed, hash_size=hash_size, **kw)  # type: ignore[arg-type]


def table(
    name: str,
    features: Sequence[FeatureSlot],
    num_rows: int,
    dim: int,
    sharding: ShardingType,
    shards: Sequence[tuple[int, int, int, int, int]],
    *,
    hashed_rows: int | None = None,
    precision: Precision = Precision.FP32,
    pooling: PoolingType = PoolingType.SUM,
    fallback_row: int | None = None,
    pruning: PruningPolicy | None = None,
) -> TablePlan:
    """A table; ``shards`` are ``(rank, row_offset, num_rows, col_offset, num_cols)`` tuples."""
    hashed = num_rows if hashed_rows is None else hashed_rows
    if pruning is None:
        pruning = (
            PruningPolicy()
            if hashed == num_rows
            else PruningPolicy(
                action=PruningAction.DROP_DEAD,
                expected_pruned_rows=hashed - num_rows + (1 if fallback_row is not None else 0),
            )
        )
    return TablePlan(
        name=name,
        features=tuple(features),
        num_rows=num_rows,
        dim=dim,
        precision=precision,
        pooling=pooling,
        sharding_type=sharding,
        shards=tuple(ShardSpec(*s) for s in shards),
        hashed_rows=hashed,
        fallback_row=fallback_row,
        pruning=pruning,
    )


def make_plan(
    tables: Sequence[TablePlan],
    world_size: int,
    *,
    ranks_per_host: int | None = None,
    memory_bytes: int = GIB,
    fingerprint: str = "sha256:test",
    mode: PlanMode = PlanMode.INFERENCE,
) -> ShardPlan:
    """A plan over ``world_size`` ranks (hosts of ``ranks_per_host`` consecutive ranks; default
    one host), with each device's ``used_bytes`` computed from its shards."""
    per_host = ranks_per_host or world_size
    skeleton = ShardPlan(
        mode=mode,
        tables=tuple(sorted(tables, key=lambda t: t.name)),
        devices=(),
        inputs_fingerprint=fingerprint,
    )
    used = [0] * world_size
    for t in skeleton.tables:
        for s in t.shards:
            used[s.rank] += skeleton.shard_bytes(t, s)
    devices = tuple(
        DevicePlan(
            rank=r,
            host=f"host{r // per_host}",
            memory_bytes=memory_bytes,
            used_bytes=used[r],
            est_cost_ms=0.0,
        )
        for r in range(world_size)
    )
    return ShardPlan(
        mode=mode,
        tables=skeleton.tables,
        devices=devices,
        inputs_fingerprint=fingerprint,
    )


def mixed_plan(*, precision: Precision = Precision.FP32) -> ShardPlan:
    """Every sharding type the planner emits, over 2 ranks on one host.

    ``t_tw`` table-wise on rank 1; ``t_rw`` row-wise and MEAN-pooled with two features (``f_rw``,
    ``f_rw_user``: use the second as a request-level feature); ``t_cw`` column-wise with its
    columns on ranks 1 then 0; ``t_twrw`` table-row-wise with an uneven split (21 + 20 rows).
    """
    return make_plan(
        [
            table(
                "t_tw",
                [feature("f_tw", 1, 100)],
                100,
                8,
                ShardingType.TABLE_WISE,
                [(1, 0, 100, 0, 8)],
                precision=precision,
            ),
            table(
                "t_rw",
                [
                    feature("f_rw", 2, 60, pooling=PoolingType.MEAN),
                    feature("f_rw_user", 3, 60, pooling=PoolingType.MEAN),
                ],
                60,
                8,
                ShardingType.ROW_WISE,
                [(0, 0, 30, 0, 8), (1, 30, 30, 0, 8)],
                pooling=PoolingType.MEAN,
                precision=precision,
            ),
            table(
                "t_cw",
                [feature("f_cw", 4, 50)],
                50,
                16,
                ShardingType.COLUMN_WISE,
                [(1, 0, 50, 0, 8), (0, 0, 50, 8, 8)],
                precision=precision,
            ),
            table(
                "t_twrw",
                [feature("f_twrw", 5, 41)],
                41,
                4,
                ShardingType.TABLE_ROW_WISE,
                [(0, 0, 21, 0, 4), (1, 21, 20, 0, 4)],
                precision=precision,
            ),
        ],
        2,
    )


def sequence_plan() -> ShardPlan:
    """Pooled and sequence (unpooled) tables over 2 ranks: ``s_rw`` (row-wise, dim 8, features
    ``hist_ads`` and ``hist_ads_cand``), ``s_cw`` (column-wise 4 + 4, feature ``hist_cats``),
    ``s_tw`` (table-wise on rank 1, dim 4, feature ``hist_geo``), plus pooled ``p_tw``
    (``f_pool``, dim 8, rank 0)."""
    none = PoolingType.NONE
    return make_plan(
        [
            table(
                "p_tw",
                [feature("f_pool", 1, 30)],
                30,
                8,
                ShardingType.TABLE_WISE,
                [(0, 0, 30, 0, 8)],
            ),
            table(
                "s_rw",
                [
                    feature("hist_ads", 2, 70, pooling=none),
                    feature("hist_ads_cand", 3, 70, pooling=none),
                ],
                70,
                8,
                ShardingType.ROW_WISE,
                [(0, 0, 35, 0, 8), (1, 35, 35, 0, 8)],
                pooling=none,
            ),
            table(
                "s_cw",
                [feature("hist_cats", 4, 20, pooling=none)],
                20,
                8,
                ShardingType.COLUMN_WISE,
                [(1, 0, 20, 0, 4), (0, 0, 20, 4, 4)],
                pooling=none,
            ),
            table(
                "s_tw",
                [feature("hist_geo", 5, 12, pooling=none)],
                12,
                4,
                ShardingType.TABLE_WISE,
                [(1, 0, 12, 0, 4)],
                pooling=none,
            ),
        ],
        2,
    )
