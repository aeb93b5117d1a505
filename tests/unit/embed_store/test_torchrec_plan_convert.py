"""Plan -> TorchRec conversion without processes: configs, exact shard specs, refusals."""

from __future__ import annotations

import dataclasses

import pytest
from torchrec.distributed.types import ShardingType as TorchrecShardingType
from torchrec.modules.embedding_configs import DataType
from torchrec.modules.embedding_configs import PoolingType as TorchrecPoolingType

from adrank.errors import PlanError, PlanErrorKind
from adrank.types import PoolingType, Precision, ShardingType, ShardSpec
from embed_store import (
    CpuEmbeddingBagCollectionSharder,
    build_sharded_ebc,
    check_placements,
    embedding_bag_configs,
    local_world_size,
    parameter_shardings,
    sharding_spec_placements,
    torchrec_sharding_plan,
)
from tests.plan_builders import feature, make_plan, table

ST = ShardingType


def _plan(world: int = 4, per_host: int = 2):
    return make_plan(
        [
            table("t_tw", [feature("a", 1, 10)], 10, 8, ST.TABLE_WISE, [(3, 0, 10, 0, 8)]),
            # ceil(10 / 4) = 3: rows 3, 3, 3, 1 on ranks 0..3.
            table(
                "t_rw",
                [feature("b", 1, 10), feature("c", 2, 10)],
                10,
                8,
                ST.ROW_WISE,
                [(0, 0, 3, 0, 8), (1, 3, 3, 0, 8), (2, 6, 3, 0, 8), (3, 9, 1, 0, 8)],
                precision=Precision.FP16,
            ),
            table(
                "t_cw",
                [feature("d", 1, 6)],
                6,
                12,
                ST.COLUMN_WISE,
                [(2, 0, 6, 0, 4), (0, 0, 6, 4, 8)],
            ),
            # host1 = ranks 2, 3: rows 3 + 2.
            table(
                "t_twrw",
                [feature("e", 1, 5)],
                5,
                4,
                ST.TABLE_ROW_WISE,
                [(2, 0, 3, 0, 4), (3, 3, 2, 0, 4)],
            ),
        ],
        world,
        ranks_per_host=per_host,
    )


def test_embedding_bag_configs() -> None:
    configs = {c.name: c for c in embedding_bag_configs(_plan())}
    assert sorted(configs) == ["t_cw", "t_rw", "t_tw", "t_twrw"]
    rw = configs["t_rw"]
    assert (rw.num_embeddings, rw.embedding_dim, rw.feature_names) == (10, 8, ["b", "c"])
    assert rw.data_type is DataType.FP16 and rw.pooling is TorchrecPoolingType.SUM


def test_sharding_plan_places_exactly_the_plans_shards() -> None:
    plan = _plan()
    sp = torchrec_sharding_plan(plan, module_path="sparse.ebc")
    module_plan = sp.plan["sparse.ebc"]
    assert sorted(module_plan) == ["t_cw", "t_rw", "t_tw", "t_twrw"]
    for t in plan.tables:
        ps = module_plan[t.name]
        assert ps.sharding_type == t.sharding_type.value
        assert ps.compute_kernel == "fused"
        got = sharding_spec_placements(ps)
        assert got == tuple(sorted(t.shards, key=lambda s: (s.row_offset, s.col_offset, s.rank)))
    assert module_plan["t_tw"].ranks == [3]
    assert module_plan["t_rw"].ranks == [0, 1, 2, 3]
    assert module_plan["t_twrw"].ranks == [2, 3]
    cw = module_plan["t_cw"]
    assert cw.sharding_type == TorchrecShardingType.COLUMN_WISE.value and cw.ranks == [2, 0]
    assert [str(m.placement) for m in cw.sharding_spec.shards] == ["rank:2/cpu", "rank:0/cpu"]


def test_cuda_placements_use_the_device_index_on_the_host() -> None:
    module_plan = torchrec_sharding_plan(_plan(), device_type="cuda").plan[""]
    assert [str(m.placement) for m in module_plan["t_tw"].sharding_spec.shards] == ["rank:3/cuda:1"]
    rw = [str(m.placement) for m in module_plan["t_rw"].sharding_spec.shards]
    assert rw == ["rank:0/cuda:0", "rank:1/cuda:1", "rank:2/cuda:0", "rank:3/cuda:1"]


def test_local_world_size_and_bad_hosts() -> None:
    assert local_world_size(_plan()) == 2
    plan = _plan()
    hosts = ["h0", "h1", "h0", "h1"]  # not consecutive blocks
    odd = dataclasses.replace(
        plan,
        devices=tuple(
            dataclasses.replace(d, host=h) for d, h in zip(plan.devices, hosts, strict=True)
        ),
    )
    with pytest.raises(PlanError) as e:
        local_world_size(odd)
    assert e.value.kind is PlanErrorKind.PLAN_MISMATCH and "consecutive" in str(e.value)


def _replace_table(plan, name, **changes):
    return dataclasses.replace(
        plan,
        tables=tuple(
            dataclasses.replace(t, **changes) if t.name == name else t for t in plan.tables
        ),
    )


def _rw_plan(shards, rows=10, world=4):
    return make_plan([table("t_rw", [feature("b", 1, rows)], rows, 8, ST.ROW_WISE, shards)], world)


def test_row_wise_that_torchrec_cannot_express_is_a_plan_mismatch() -> None:
    # Balanced 3, 3, 2, 2 is not TorchRec's ceil layout 3, 3, 3, 1.
    plan = _rw_plan([(0, 0, 3, 0, 8), (1, 3, 3, 0, 8), (2, 6, 2, 0, 8), (3, 8, 2, 0, 8)])
    with pytest.raises(PlanError) as e:
        torchrec_sharding_plan(plan)
    assert e.value.kind is PlanErrorKind.PLAN_MISMATCH
    assert "'t_rw'" in str(e.value) and "TorchRec would place" in str(e.value)
    # Row-wise over a subset of the ranks is refused too.
    subset = _rw_plan([(0, 0, 5, 0, 8), (1, 5, 5, 0, 8)])
    with pytest.raises(PlanError, match="'t_rw'"):
        parameter_shardings(subset)


@pytest.mark.parametrize(
    "shards",
    [
        [(0, 0, 7, 0, 8), (1, 7, 3, 0, 8)],
        [(0, 0, 3, 0, 8), (1, 3, 7, 0, 8)],
        # Shards listed out of rank order: still refused, not reordered into TorchRec's layout.
        [(1, 0, 7, 0, 8), (0, 7, 3, 0, 8)],
    ],
)
def test_uneven_row_wise_split_is_refused_with_the_routing_reason(shards) -> None:
    # TorchRec 1.8's training input dist routes ids by blocks of ceil(10 / 2) = 5 rows whatever
    # the shard sizes (a 2-rank gloo run of 7+3 looked up wrong rows), so the split is refused.
    plan = _rw_plan(shards, world=2)
    with pytest.raises(PlanError) as e:
        torchrec_sharding_plan(plan)
    assert e.value.kind is PlanErrorKind.PLAN_MISMATCH
    assert "'t_rw'" in str(e.value) and "ceil(10 / 2) = 5" in str(e.value)
    # TorchRec's own 5 + 5 split of the same table converts with exact placements.
    even = _rw_plan([(0, 0, 5, 0, 8), (1, 5, 5, 0, 8)], world=2)
    got = sharding_spec_placements(parameter_shardings(even)["t_rw"])
    assert got == (ShardSpec(0, 0, 5, 0, 8), ShardSpec(1, 5, 5, 0, 8))


def test_uneven_table_row_wise_split_names_the_host_block() -> None:
    plan = make_plan(
        [
            table(
                "t_twrw",
                [feature("e", 1, 5)],
                5,
                4,
                ST.TABLE_ROW_WISE,
                [(2, 0, 2, 0, 4), (3, 2, 3, 0, 4)],
            )
        ],
        4,
        ranks_per_host=2,
    )
    with pytest.raises(PlanError) as e:
        parameter_shardings(plan)
    assert "'t_twrw'" in str(e.value) and "ceil(5 / 2) = 3" in str(e.value)


def test_row_wise_mean_beside_table_wise_is_refused() -> None:
    plan = make_plan(
        [
            table("t_tw", [feature("a", 1, 4)], 4, 4, ST.TABLE_WISE, [(0, 0, 4, 0, 4)]),
            table(
                "t_rw",
                [feature("b", 1, 4, pooling=PoolingType.MEAN)],
                4,
                4,
                ST.ROW_WISE,
                [(0, 0, 2, 0, 4), (1, 2, 2, 0, 4)],
                pooling=PoolingType.MEAN,
            ),
        ],
        2,
    )
    with pytest.raises(PlanError) as e:
        parameter_shardings(plan)
    assert e.value.kind is PlanErrorKind.PLAN_MISMATCH
    assert "t_rw" in str(e.value) and "t_tw" in str(e.value) and "MEAN" in str(e.value)


def test_empty_row_wise_group_is_refused_on_cpu_only() -> None:
    # One row on two ranks: rank 1's only row-wise group is empty.
    plan = _rw_plan([(0, 0, 1, 0, 8)], rows=1, world=2)
    with pytest.raises(PlanError, match=r"ranks \[1\]"):
        parameter_shardings(plan)
    assert set(parameter_shardings(plan, device_type="cuda")) == {"t_rw"}


def test_pooling_none_cannot_be_a_bag() -> None:
    plan = _replace_table(_plan(), "t_tw", pooling=PoolingType.NONE)
    plan = dataclasses.replace(
        plan,
        tables=tuple(
            dataclasses.replace(
                t,
                features=tuple(
                    dataclasses.replace(f, pooling=PoolingType.NONE) for f in t.features
                ),
            )
            if t.name == "t_tw"
            else t
            for t in plan.tables
        ),
    )
    with pytest.raises(PlanError, match="'t_tw' has pooling NONE"):
        embedding_bag_configs(plan)


def test_fingerprint_is_checked() -> None:
    with pytest.raises(PlanError) as e:
        torchrec_sharding_plan(_plan(), expected_fingerprint="sha256:other")
    assert e.value.kind is PlanErrorKind.PLAN_MISMATCH and "sha256:other" in str(e.value)


def test_check_placements_names_each_difference() -> None:
    plan = _plan()
    good = {t.name: t.shards for t in plan.tables}
    check_placements(plan, good)
    bad = dict(good, t_tw=(ShardSpec(1, 0, 10, 0, 8),), extra=())
    del bad["t_cw"]
    with pytest.raises(PlanError) as e:
        check_placements(plan, bad)
    text = str(e.value)
    assert "'t_tw'" in text and "'t_cw' is not in" in text and "'extra'" in text


def test_sharder_offers_row_wise_on_cpu() -> None:
    types = CpuEmbeddingBagCollectionSharder().sharding_types("cpu")
    assert {"row_wise", "table_row_wise", "table_wise", "column_wise"} <= set(types)


def test_build_needs_a_process_group() -> None:
    with pytest.raises(PlanError, match="not initialised"):
        build_sharded_ebc(_plan())
