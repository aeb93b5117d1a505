"""The planner end to end on hand-built features: invariants, sidecars, id mapping, plan dir."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrank.errors import PlanError, PlanErrorKind
from adrank.idmap import id_keys_to_hashed, id_keys_to_rows, load_dedicated_keys
from adrank.planfile import read_plan
from adrank.types import DeviceSpec, PlanMode, PoolingType, Precision, ShardingType, Topology
from sharding_planner import plan_shards, uniform_topology, write_plan_dir
from sharding_planner.report import explain_feature, render_markdown
from sharding_planner.types import (
    FeatureSpec,
    MergeConfig,
    PlacementConfig,
    PlanInputs,
    PlannerConfig,
    PruningConfig,
)


def _spec(
    name: str,
    live: int,
    *,
    num_ids: int | None = None,
    dim: int = 8,
    pf: float = 1.0,
    heavy: int = 0,
    stats: bool = True,
    dead_traffic: float = 0.04,
) -> FeatureSpec:
    return FeatureSpec(
        name=name,
        dim=dim,
        pooling=PoolingType.SUM,
        pooling_factor=pf,
        num_ids=num_ids or live,
        live_ids=live,
        heavy_hitters=tuple((1000 + k, 0.3 / (k + 2)) for k in range(min(heavy, live))),
        dead_traffic_share=dead_traffic if (num_ids or live) > live else 0.0,
        from_stats=stats,
    )


def _inputs(*specs: FeatureSpec, window: int | None = 86_400) -> PlanInputs:
    return PlanInputs(tuple(sorted(specs, key=lambda s: s.name)), "sha256:in", window, "test")


def test_exact_small_plan_from_a_tables_like_input() -> None:
    inputs = _inputs(_spec("a", 100, stats=False), _spec("b", 100, stats=False), window=None)
    cfg = PlannerConfig(
        default_precision=Precision.FP32, row_alignment_bytes=1, merging=MergeConfig(enabled=False)
    )
    result = plan_shards(inputs, uniform_topology(2, 100_000), cfg)
    plan = result.plan
    assert [
        (t.name, t.num_rows, t.hashed_rows, t.sharding_type, t.shards[0].rank) for t in plan.tables
    ] == [
        ("t_a", 100, 100, ShardingType.TABLE_WISE, 0),
        ("t_b", 100, 100, ShardingType.TABLE_WISE, 1),
    ]
    assert [d.used_bytes for d in plan.devices] == [3_200, 3_200]
    assert result.report.allocation.used_bytes == 6_400


def test_heavy_hitters_map_to_their_dedicated_rows(tmp_path: Path) -> None:
    inputs = _inputs(_spec("a", 5_000, heavy=10), _spec("b", 50, heavy=50))
    result = plan_shards(
        inputs, uniform_topology(2, 1 << 20), PlannerConfig(memory_budget_bytes=200_000)
    )
    write_plan_dir(result, tmp_path / "plan", png=False)
    plan = read_plan(tmp_path / "plan" / "plan.json")
    assert plan == result.plan
    table, slot = plan.table_of_feature("a")
    keys = load_dedicated_keys(tmp_path / "plan", slot)
    assert keys is not None and len(keys) == slot.num_dedicated_rows > 0
    hashed = id_keys_to_hashed(slot, keys, keys)
    assert sorted(hashed.tolist()) == list(
        range(slot.dedicated_row_offset, slot.dedicated_row_offset + len(keys))
    )
    other = id_keys_to_hashed(slot, np.arange(10_000, 10_100, dtype=np.int64), keys)
    assert ((other >= slot.row_offset) & (other < slot.row_offset + slot.hash_size)).all()
    if table.num_rows < table.hashed_rows:  # pruned: the runtime needs pruning's remap
        remap = np.full(table.hashed_rows, -1, dtype=np.int64)
        remap[: table.num_rows - 1] = np.arange(table.num_rows - 1)
        rows = id_keys_to_rows(table, "a", keys, keys, remap)
        assert ((rows >= 0) & (rows < table.num_rows)).all()


def test_plan_dir_is_replaced_atomically_and_failures_leave_nothing(tmp_path: Path) -> None:
    inputs = _inputs(_spec("a", 100))
    out = tmp_path / "plan"
    result = plan_shards(inputs, uniform_topology(1, 1 << 20))
    write_plan_dir(result, out)
    assert {p.name for p in out.iterdir()} >= {"plan.json", "report.md", "report.png"}
    (out / "stale.txt").write_text("old")
    write_plan_dir(result, out, png=False)
    assert not (out / "stale.txt").exists() and not (out / "report.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["plan"]  # no temp dirs left behind


def test_report_and_explain_name_the_decisions() -> None:
    inputs = _inputs(_spec("a", 100, heavy=3), _spec("b", 10, num_ids=40))
    result = plan_shards(inputs, uniform_topology(2, 1 << 20))
    md = render_markdown(result)
    for section in (
        "## Devices",
        "## Hash-size allocation",
        "## Unified tables",
        "## Dead-row pruning",
        "## Tables",
    ):
        assert section in md
    text = explain_feature(result, "a")
    table, _ = result.plan.table_of_feature("a")
    assert table.name in text and "rank" in text and "precision" in text and "rows:" in text
    with pytest.raises(KeyError):
        explain_feature(result, "nope")


def test_fingerprint_changes_with_config_and_topology() -> None:
    inputs = _inputs(_spec("a", 100))
    base = plan_shards(inputs, uniform_topology(2, 1 << 20)).plan.inputs_fingerprint
    assert plan_shards(inputs, uniform_topology(2, 1 << 20)).plan.inputs_fingerprint == base
    assert plan_shards(inputs, uniform_topology(3, 1 << 20)).plan.inputs_fingerprint != base
    cfg = PlannerConfig(default_precision=Precision.FP32)
    assert plan_shards(inputs, uniform_topology(2, 1 << 20), cfg).plan.inputs_fingerprint != base


def test_training_mode_counts_rowwise_adagrad_state() -> None:
    inputs = _inputs(_spec("a", 100, stats=False), window=None)
    cfg = PlannerConfig(mode=PlanMode.TRAINING, row_alignment_bytes=1)
    plan = plan_shards(inputs, uniform_topology(1, 1 << 20), cfg).plan
    assert plan.tables[0].precision is Precision.FP32
    assert plan.devices[0].used_bytes == 100 * (8 * 4 + 4)


def test_devices_too_small_raise_insufficient_memory() -> None:
    inputs = _inputs(_spec("a", 10_000, stats=False), window=None)
    cfg = PlannerConfig(memory_budget_bytes=10**9, merging=MergeConfig(enabled=False))
    with pytest.raises(PlanError) as err:
        plan_shards(inputs, Topology((DeviceSpec(0, "h", 1_000), DeviceSpec(1, "h", 2_000))), cfg)
    assert err.value.kind is PlanErrorKind.INSUFFICIENT_MEMORY
    assert "rank 0" in str(err.value) and "rank 1" in str(err.value)


@settings(max_examples=40, deadline=None)
@given(
    feats=st.lists(
        st.tuples(
            st.integers(1, 20_000),
            st.integers(0, 3),
            st.sampled_from([4, 8, 16]),
            st.floats(0.1, 5.0),
            st.integers(0, 20),
            st.booleans(),
        ),
        min_size=1,
        max_size=10,
    ),
    mems=st.lists(st.integers(50_000, 2_000_000), min_size=1, max_size=5),
    budget_share=st.floats(0.05, 0.9),
    prune=st.booleans(),
    salted=st.booleans(),
    cw=st.booleans(),
)
def test_planner_invariants(
    feats: list[tuple[int, int, int, float, int, bool]],
    mems: list[int],
    budget_share: float,
    prune: bool,
    salted: bool,
    cw: bool,
) -> None:
    specs = [
        _spec(f"f{i}", live, num_ids=live * (1 + dead), dim=dim, pf=pf, heavy=heavy, stats=stats)
        for i, (live, dead, dim, pf, heavy, stats) in enumerate(feats)
    ]
    inputs = _inputs(*specs)
    topo = Topology(tuple(DeviceSpec(i, f"h{i % 2}", m) for i, m in enumerate(mems)))
    budget = int(sum(mems) * budget_share)
    overrides = {"f0": ShardingType.COLUMN_WISE} if cw else {}
    cfg = PlannerConfig(
        memory_budget_bytes=budget,
        merging=MergeConfig(max_collision_increase=0.02 if salted else 0.0),
        pruning=PruningConfig(enabled=prune),
        placement=PlacementConfig(sharding_overrides=overrides),
    )
    try:
        result = plan_shards(inputs, topo, cfg)  # validate_plan runs inside
    except PlanError as exc:
        assert exc.kind is PlanErrorKind.INSUFFICIENT_MEMORY
        return
    plan = result.plan
    names = [f.name for t in plan.tables for f in t.features]
    assert sorted(names) == sorted(s.name for s in specs)  # every feature in exactly one table
    assert result.report.allocation.used_bytes <= budget
    for t in plan.tables:
        covered = np.zeros((t.num_rows, t.dim), dtype=np.int32)
        for s in t.shards:
            covered[
                s.row_offset : s.row_offset + s.num_rows, s.col_offset : s.col_offset + s.num_cols
            ] += 1
        assert (covered == 1).all()  # every row (and column) of every table in exactly one shard
    used = [0] * len(mems)
    for t in plan.tables:
        for s in t.shards:
            used[s.rank] += plan.shard_bytes(t, s)
    assert used == [d.used_bytes for d in plan.devices]
    assert all(d.used_bytes <= d.memory_bytes for d in plan.devices)
    assert set(result.sidecars) == {
        f.dedicated_keys_file for t in plan.tables for f in t.features if f.dedicated_keys_file
    }


def test_unknown_override_is_input_error() -> None:
    from adrank.errors import InputError

    cfg = PlannerConfig(placement=PlacementConfig(sharding_overrides={"zz": ShardingType.ROW_WISE}))
    with pytest.raises(InputError, match="--sharding"):
        plan_shards(_inputs(_spec("a", 10)), uniform_topology(1, 1 << 20), cfg)


def test_config_is_not_mutated() -> None:
    cfg = PlannerConfig()
    before = dataclasses.asdict(cfg)
    plan_shards(_inputs(_spec("a", 10)), uniform_topology(1, 1 << 20), cfg)
    assert dataclasses.asdict(cfg) == before


def test_unseen_ids_with_traffic_are_not_pruned_and_get_rows() -> None:
    # 4,000 of 5,000 ids were unseen in the recent window but carried half the lookups: the
    # planner must neither prune them nor size the feature for the 1,000 recent ids only.
    busy = _spec("a", 1_000, num_ids=5_000, dead_traffic=0.5)
    quiet = _spec("b", 1_000, num_ids=5_000, dead_traffic=0.01)
    topo = uniform_topology(1, 1 << 30)
    result = plan_shards(_inputs(busy, quiet), topo, PlannerConfig(memory_budget_bytes=1 << 28))
    a_table, a_slot = result.plan.table_of_feature("a")
    b_table, _ = result.plan.table_of_feature("b")
    assert a_table.fallback_row is None and a_table.remap_file is None
    assert a_slot.hash_size + a_slot.num_dedicated_rows > 1_000  # sized for all 5,000 ids
    assert b_table.fallback_row is not None  # the quiet one is pruned as planned
