"""Placement: exact shards and bytes per rank on hand-built cases; invariants under hypothesis."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrank.errors import PlanError, PlanErrorKind
from adrank.planfile import validate_plan
from adrank.types import (
    DeviceSpec,
    FeatureSlot,
    PlanMode,
    PoolingType,
    Precision,
    PruningPolicy,
    ShardingType,
    ShardPlan,
    Topology,
)
from sharding_planner.partitioners import GreedyCostPartitioner
from sharding_planner.placement import split_cols, split_rows, split_rows_in_blocks
from sharding_planner.topology import uniform_topology
from sharding_planner.types import (
    MergedTable,
    MergeKind,
    PlacementConfig,
    PlannerConfig,
    PrecisionDecision,
    PrunedTable,
    TableDraft,
)

FP32_ALIGN1 = PlannerConfig(default_precision=Precision.FP32, row_alignment_bytes=1)


def _draft(
    name: str, rows: int, dim: int, pf: float = 1.0, precision: Precision = Precision.FP32
) -> TableDraft:
    slot = FeatureSlot(name, seed=1, hash_size=rows, pooling_factor=pf)
    merged = MergedTable(name, (slot,), dim, PoolingType.SUM, rows, MergeKind.SINGLE, "test")
    pruned = PrunedTable(merged, rows, None, PruningPolicy(), "test")
    return TableDraft(pruned, PrecisionDecision(name, precision, None, "test"), pf)


def _plan(placement, config: PlannerConfig = FP32_ALIGN1) -> ShardPlan:  # type: ignore[no-untyped-def]
    plan = ShardPlan(
        mode=PlanMode.INFERENCE,
        tables=placement.tables,
        devices=placement.devices,
        inputs_fingerprint="sha256:t",
        batch_size=config.batch_size,
        row_alignment_bytes=config.row_alignment_bytes,
    )
    validate_plan(plan)
    return plan


def _config(**overrides: ShardingType) -> PlannerConfig:
    return dataclasses.replace(FP32_ALIGN1, placement=PlacementConfig(sharding_overrides=overrides))


def test_split_helpers() -> None:
    assert split_rows(10, [1, 1, 1]) == [4, 3, 3]
    assert split_rows(100, [3, 1]) == [75, 25]
    assert split_cols(64, 2) == [32, 32]
    assert split_cols(40, 3) == [16, 12, 12]
    assert sum(split_cols(30, 4)) == 30


def test_two_equal_tables_go_to_different_ranks() -> None:
    tables = (_draft("a", 100, 8), _draft("b", 100, 8))
    placement = GreedyCostPartitioner().partition(tables, uniform_topology(2, 10_000), FP32_ALIGN1)
    plan = _plan(placement)
    assert [(t.name, t.sharding_type, t.shards[0].rank) for t in plan.tables] == [
        ("a", ShardingType.TABLE_WISE, 0),
        ("b", ShardingType.TABLE_WISE, 1),
    ]
    assert [d.used_bytes for d in plan.devices] == [3_200, 3_200]  # 100 rows x 8 x 4 B


def test_row_wise_override_splits_rows_evenly() -> None:
    placement = GreedyCostPartitioner().partition(
        (_draft("a", 101, 4),), uniform_topology(2, 10_000), _config(a=ShardingType.ROW_WISE)
    )
    t = _plan(placement).tables[0]
    assert t.sharding_type is ShardingType.ROW_WISE
    assert [(s.rank, s.row_offset, s.num_rows, s.col_offset, s.num_cols) for s in t.shards] == [
        (0, 0, 51, 0, 4),
        (1, 51, 50, 0, 4),
    ]
    assert [d.used_bytes for d in placement.devices] == [51 * 16, 50 * 16]


def test_column_wise_override_splits_columns() -> None:
    placement = GreedyCostPartitioner().partition(
        (_draft("a", 10, 64),), uniform_topology(2, 10_000), _config(a=ShardingType.COLUMN_WISE)
    )
    t = _plan(placement).tables[0]
    assert [(s.rank, s.row_offset, s.num_rows, s.col_offset, s.num_cols) for s in t.shards] == [
        (0, 0, 10, 0, 32),
        (1, 0, 10, 32, 32),
    ]
    assert [d.used_bytes for d in placement.devices] == [1_280, 1_280]


def test_int8_column_shards_each_carry_scale_and_bias() -> None:
    cfg = dataclasses.replace(_config(a=ShardingType.COLUMN_WISE), row_alignment_bytes=1)
    placement = GreedyCostPartitioner().partition(
        (_draft("a", 10, 64, precision=Precision.INT8),), uniform_topology(2, 10_000), cfg
    )
    assert [d.used_bytes for d in placement.devices] == [10 * 36, 10 * 36]  # 32 + 4 per row


def test_table_row_wise_stays_on_one_host() -> None:
    topo = uniform_topology(4, 10_000, devices_per_host=2)
    placement = GreedyCostPartitioner().partition(
        (_draft("a", 100, 4),), topo, _config(a=ShardingType.TABLE_ROW_WISE)
    )
    t = _plan(placement).tables[0]
    assert t.sharding_type is ShardingType.TABLE_ROW_WISE
    assert [(s.rank, s.num_rows) for s in t.shards] == [(0, 50), (1, 50)]


def test_big_table_is_row_wise_in_torchrec_blocks_when_they_fit() -> None:
    # TorchRec's training runtime routes id i to rank i // ceil(rows / ranks): only that split
    # can be served, so it wins whenever every rank has room for its block.
    topo = Topology(devices=(DeviceSpec(0, "h", 30_000), DeviceSpec(1, "h", 10_000)))
    placement = GreedyCostPartitioner().partition((_draft("big", 1_000, 4),), topo, FP32_ALIGN1)
    t = _plan(placement).tables[0]
    assert t.sharding_type is ShardingType.ROW_WISE
    assert [(s.rank, s.row_offset, s.num_rows) for s in t.shards] == [(0, 0, 500), (1, 500, 500)]
    assert [d.used_bytes for d in placement.devices] == [8_000, 8_000]


def test_row_wise_falls_back_to_free_memory_when_a_block_does_not_fit() -> None:
    # A 500-row block (8,000 B) does not fit rank 1's 6,000 B: split by free memory instead.
    topo = Topology(devices=(DeviceSpec(0, "h", 30_000), DeviceSpec(1, "h", 6_000)))
    placement = GreedyCostPartitioner().partition((_draft("big", 1_000, 4),), topo, FP32_ALIGN1)
    t = _plan(placement).tables[0]
    assert t.sharding_type is ShardingType.ROW_WISE
    assert [(s.rank, s.num_rows) for s in t.shards] == [(0, 833), (1, 167)]
    assert [d.used_bytes for d in placement.devices] == [13_328, 2_672]


def test_split_rows_in_blocks_matches_torchrec() -> None:
    assert split_rows_in_blocks(10, 2) == [5, 5]
    assert split_rows_in_blocks(10, 4) == [3, 3, 3, 1]
    assert split_rows_in_blocks(4, 3) == [2, 2, 0]
    assert split_rows_in_blocks(5_927_051 * 8 - 3, 8)[-1] == 5_927_051 * 8 - 3 - 7 * 5_927_051


def test_heterogeneous_devices_fill_by_fair_share() -> None:
    topo = Topology(devices=(DeviceSpec(0, "h", 40_000), DeviceSpec(1, "h", 10_000)))
    tables = tuple(_draft(f"t{i}", 100, 8, pf=0.001) for i in range(5))  # 3,200 B each
    placement = GreedyCostPartitioner().partition(tables, topo, FP32_ALIGN1)
    _plan(placement)
    per_rank = [sum(1 for t in placement.tables if t.shards[0].rank == r) for r in (0, 1)]
    assert per_rank == [4, 1]


def test_too_little_memory_raises_with_per_device_numbers() -> None:
    tables = (_draft("a", 100, 8), _draft("b", 100, 8))
    with pytest.raises(PlanError) as err:
        GreedyCostPartitioner().partition(tables, uniform_topology(2, 3_000), FP32_ALIGN1)
    e = err.value
    assert e.kind is PlanErrorKind.INSUFFICIENT_MEMORY and e.exit_code == 2
    msg = str(e)
    assert "rank 0" in msg and "rank 1" in msg and "6,400 bytes" in msg
    assert "--devices" in msg and "--memory-budget" in msg


def test_table_row_wise_that_fits_no_host_raises_naming_the_table() -> None:
    topo = uniform_topology(4, 1_000, devices_per_host=2)
    with pytest.raises(PlanError, match="'a'") as err:
        GreedyCostPartitioner().partition(
            (_draft("a", 200, 4),), topo, _config(a=ShardingType.TABLE_ROW_WISE)
        )
    assert err.value.kind is PlanErrorKind.INSUFFICIENT_MEMORY


@settings(max_examples=60, deadline=None)
@given(
    tables=st.lists(
        st.tuples(
            st.integers(1, 3_000),
            st.sampled_from([4, 8, 16, 64, 128]),
            st.floats(0.1, 20.0),
            st.sampled_from(list(Precision)),
        ),
        min_size=1,
        max_size=12,
    ),
    mems=st.lists(st.integers(2_000, 400_000), min_size=1, max_size=6),
    per_host=st.integers(1, 3),
)
def test_plan_covers_every_row_once_within_memory(
    tables: list[tuple[int, int, float, Precision]], mems: list[int], per_host: int
) -> None:
    drafts = tuple(_draft(f"t{i}", r, d, pf, p) for i, (r, d, pf, p) in enumerate(tables))
    topo = Topology(
        devices=tuple(DeviceSpec(i, f"h{i // per_host}", m) for i, m in enumerate(mems))
    )
    cfg = PlannerConfig(row_alignment_bytes=16)
    try:
        placement = GreedyCostPartitioner().partition(drafts, topo, cfg)
    except PlanError as exc:
        assert exc.kind is PlanErrorKind.INSUFFICIENT_MEMORY
        return
    plan = _plan(placement, cfg)  # validate_plan: exact tiling, no rank over capacity, bytes match
    assert sorted(t.name for t in plan.tables) == sorted(d.name for d in drafts)
    for d in plan.devices:
        assert d.used_bytes <= d.memory_bytes


@settings(max_examples=60, deadline=None)
@given(
    tables=st.lists(
        # Memory and cost disagree (big rarely-read tables, small hot ones): greedy placement,
        # which balances both, leaves cost peaks that single moves remove.
        st.tuples(st.integers(10, 100_000), st.sampled_from([8, 16, 32]), st.floats(0.1, 50.0)),
        min_size=3,
        max_size=30,
    ),
    world=st.integers(2, 6),
)
def test_refinement_leaves_no_single_move_that_lowers_a_peak(
    tables: list[tuple[int, int, float]], world: int
) -> None:
    """After placement, no table-wise shard on the costliest rank can move to another rank with
    room (memory within the current memory peak) and lower the larger of the two ranks' costs,
    and none on the rank with the most memory can move and lower the pair's memory without
    raising a cost above the cost peak: the refinement ran to a local optimum."""
    from sharding_planner.costs import shard_cost_ms

    drafts = tuple(_draft(f"t{i}", r, d, pf) for i, (r, d, pf) in enumerate(tables))
    topo = uniform_topology(world, 100_000_000)
    cfg = _config(**{d.name: ShardingType.TABLE_WISE for d in drafts})
    plan = _plan(GreedyCostPartitioner().partition(drafts, topo, cfg), cfg)
    by_name = {d.name: d for d in drafts}
    used = [d.used_bytes for d in plan.devices]
    cost = [d.est_cost_ms for d in plan.devices]
    fair = max(1.0, sum(used) / world)
    mem_peak = max(used) / fair
    cost_peak = max(cost)
    tol = 1e-9 * max(cost_peak, 1e-12)

    def shard_cost(t: object, s: object, rank: int) -> float:
        return shard_cost_ms(
            by_name[t.name],  # type: ignore[attr-defined]
            t.sharding_type,  # type: ignore[attr-defined]
            s.num_rows,  # type: ignore[attr-defined]
            s.num_cols,  # type: ignore[attr-defined]
            topo.devices[rank],
            topo,
            cfg,
        )

    by_cost = max(range(world), key=lambda r: (cost[r], -r))
    by_mem = max(range(world), key=lambda r: (used[r], -r))
    for t in plan.tables:
        (s,) = t.shards
        b = plan.shard_bytes(t, s)
        c = shard_cost(t, s, s.rank)
        for dst in range(world):
            if dst == s.rank:
                continue
            if s.rank == by_cost and (used[dst] + b) / fair <= mem_peak:
                assert max(cost[by_cost] - c, cost[dst] + c) >= cost_peak - tol, (t.name, dst)
            if s.rank == by_mem and cost[dst] + c <= cost_peak:
                pair = max(used[by_mem] - b, used[dst] + b) / fair
                assert pair >= mem_peak - 1e-9, (t.name, dst)
