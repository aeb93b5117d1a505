"""Merging, dead-row pruning and precision stages on hand-built inputs."""

from __future__ import annotations

import math

import pytest

from adrank.errors import InputError
from adrank.types import PlanMode, PoolingType, Precision, PruningAction
from sharding_planner.collision import shared_row_probability
from sharding_planner.dead_rows import (
    dead_rows_variance,
    expected_dead_rows,
    plan_pruning,
    prunable_features,
)
from sharding_planner.merging import feature_seed, merge_tables
from sharding_planner.precision import choose_precision, validate_precision_config
from sharding_planner.types import (
    Allocation,
    FeatureSpec,
    HashSizeDecision,
    MergeConfig,
    MergeKind,
    PlanInputs,
    PlannerConfig,
    PruningConfig,
)


def _spec(
    name: str, live: int, dim: int = 8, num_ids: int | None = None, dead_traffic: float = 0.0
) -> FeatureSpec:
    return FeatureSpec(
        name=name,
        dim=dim,
        pooling=PoolingType.SUM,
        pooling_factor=1.0,
        num_ids=num_ids or live,
        live_ids=live,
        dead_traffic_share=dead_traffic,
        from_stats=True,
    )


def _decision(
    spec: FeatureSpec, hash_size: int, dedicated: tuple[int, ...] = ()
) -> HashSizeDecision:
    n_tail = spec.live_ids - len(dedicated)
    return HashSizeDecision(
        feature=spec.name,
        hash_size=hash_size,
        dedicated_keys=dedicated,
        row_bytes=32,
        pruned=False,
        expected_stored_rows=hash_size + len(dedicated),
        memory_bytes=32 * (hash_size + len(dedicated)),
        expected_collision_rate=shared_row_probability(n_tail - 1, hash_size),
        traffic_share=0.5,
        live_ids=spec.live_ids,
        capped=False,
    )


def _setup(
    specs: list[FeatureSpec], sizes: list[int], window: int | None = 86_400
) -> tuple[PlanInputs, Allocation]:
    inputs = PlanInputs(tuple(specs), "sha256:x", window, "test")
    decs = tuple(
        _decision(s, h, (100 + i,) if i == 0 else ())
        for i, (s, h) in enumerate(zip(specs, sizes, strict=True))
    )
    return inputs, Allocation(decs, 10**9, sum(d.memory_bytes for d in decs), 0.0)


def test_concat_layout_has_disjoint_ranges_and_dedicated_rows_after_each() -> None:
    inputs, alloc = _setup([_spec("a", 100), _spec("b", 50)], [100, 50])
    tables = merge_tables(
        inputs, alloc, dict.fromkeys("ab", Precision.FP16), MergeConfig(max_collision_increase=0.0)
    )
    assert len(tables) == 1
    t = tables[0]
    assert t.kind is MergeKind.CONCAT and t.hashed_rows == 151
    a, b = t.features
    assert (a.row_offset, a.hash_size, a.dedicated_row_offset, a.num_dedicated_rows) == (
        0,
        100,
        100,
        1,
    )
    assert (b.row_offset, b.hash_size, b.num_dedicated_rows) == (101, 50, 0)
    assert a.dedicated_keys_file is not None and b.dedicated_keys_file is None
    assert a.seed == feature_seed("a") and a.seed != b.seed


def test_salted_sharing_saves_rows_within_the_collision_bound() -> None:
    inputs, alloc = _setup([_spec("a", 100), _spec("b", 100)], [1_000, 1_000])
    t = merge_tables(
        inputs, alloc, dict.fromkeys("ab", Precision.FP16), MergeConfig(max_collision_increase=0.05)
    )[0]
    assert t.kind is MergeKind.SALTED
    shared = t.features[0].hash_size
    assert all(f.row_offset == 0 and f.hash_size == shared for f in t.features)
    assert shared < 2_000 and t.rows_saved == 2_000 - shared
    assert 0 < t.collision_increase <= 0.05
    assert t.hashed_rows == shared + 1  # plus a's dedicated row
    assert "salted" in t.reason and "saves" in t.reason


def test_big_features_and_other_dims_stay_alone() -> None:
    inputs, alloc = _setup(
        [_spec("a", 100), _spec("b", 100, dim=16), _spec("c", 10**6)], [100, 100, 10**6]
    )
    tables = merge_tables(inputs, alloc, dict.fromkeys("abc", Precision.FP16), MergeConfig())
    assert [(t.name, t.kind) for t in tables] == [
        ("t_a", MergeKind.SINGLE),
        ("t_b", MergeKind.SINGLE),
        ("t_c", MergeKind.SINGLE),
    ]
    assert "merge limit" in tables[2].reason


def test_expected_dead_rows_formula() -> None:
    assert expected_dead_rows(100, 0) == 100
    assert expected_dead_rows(1_000, 1_000) == pytest.approx(1_000 * 0.999**1_000)


def test_pruning_plans_kept_rows_and_fallback() -> None:
    inputs, alloc = _setup([_spec("a", 1_000, num_ids=5_000, dead_traffic=0.04)], [4_000])
    tables = merge_tables(inputs, alloc, {"a": Precision.FP16}, MergeConfig())
    (p,) = plan_pruning(tables, inputs, PruningConfig())
    dead = expected_dead_rows(4_000, 999)
    planned = math.floor(dead - 3 * math.sqrt(dead_rows_variance(4_000, 999)))
    assert p.pruning.action is PruningAction.DROP_DEAD
    assert p.pruning.expected_pruned_rows == planned
    assert p.num_rows == 4_001 - planned + 1 and p.fallback_row == p.num_rows - 1
    assert p.pruning.unseen_window_s == 86_400
    assert 0 < p.pruning.expected_pruned_traffic_share < 0.04


def test_pruning_refused_when_unseen_ids_still_carry_traffic() -> None:
    # Half the lookups went to ids unseen in the recent window: they are not dead, and pruning
    # them would send that traffic to the fallback row.
    inputs, alloc = _setup([_spec("a", 1_000, num_ids=5_000, dead_traffic=0.5)], [4_000])
    tables = merge_tables(inputs, alloc, {"a": Precision.FP16}, MergeConfig())
    (p,) = plan_pruning(tables, inputs, PruningConfig(max_pruned_traffic_share=0.05))
    assert p.pruning.action is not PruningAction.DROP_DEAD
    assert p.fallback_row is None and p.num_rows == p.table.hashed_rows
    assert "a" in p.reason and "50%" in p.reason
    assert prunable_features(inputs, PruningConfig(max_pruned_traffic_share=0.05)) == frozenset()
    assert prunable_features(inputs, PruningConfig(max_pruned_traffic_share=0.6)) == {"a"}


def test_no_pruning_without_recency_or_when_disabled() -> None:
    inputs, alloc = _setup([_spec("a", 10, num_ids=50)], [1_000], window=None)
    tables = merge_tables(inputs, alloc, {"a": Precision.FP16}, MergeConfig())
    (p,) = plan_pruning(tables, inputs, PruningConfig())
    assert p.pruning.action is PruningAction.KEEP_ALL and p.num_rows == p.table.hashed_rows
    inputs2, alloc2 = _setup([_spec("a", 10, num_ids=50)], [1_000])
    (q,) = plan_pruning(
        merge_tables(inputs2, alloc2, {"a": Precision.FP16}, MergeConfig()),
        inputs2,
        PruningConfig(enabled=False),
    )
    assert q.num_rows == q.table.hashed_rows and "disabled" in q.reason


def test_precision_fewest_bits_within_threshold() -> None:
    errors = {"t": {Precision.INT4: 0.2, Precision.INT8: 0.005, Precision.FP16: 0.0001}}
    d = choose_precision("t", ["f"], 64, errors, PlannerConfig(max_precision_error=0.01))
    assert d.precision is Precision.INT8 and d.measured_error == 0.005 and "int4" in d.reason
    d = choose_precision("t", ["f"], 64, errors, PlannerConfig(max_precision_error=0.3))
    assert d.precision is Precision.INT4
    d = choose_precision("t", ["f"], 64, errors, PlannerConfig(max_precision_error=0.00001))
    assert d.precision is Precision.FP32


def test_precision_features_combine_worst_case_and_default_otherwise() -> None:
    errors = {"a": {Precision.INT8: 0.001}, "b": {Precision.INT8: 0.05, Precision.FP16: 0.001}}
    d = choose_precision("u", ["a", "b"], 64, errors, PlannerConfig())
    assert d.precision is Precision.FP32  # fp16 not measured for a; int8 too lossy for b
    d = choose_precision("u", ["a", "c"], 64, errors, PlannerConfig())
    assert d.precision is Precision.FP16 and d.measured_error is None


def test_training_uses_float_precisions_only() -> None:
    errors = {"t": {Precision.INT8: 0.0, Precision.FP16: 0.001}}
    cfg = PlannerConfig(mode=PlanMode.TRAINING)
    assert choose_precision("t", [], 64, errors, cfg).precision is Precision.FP16
    assert choose_precision("x", [], 64, None, cfg).precision is Precision.FP32
    with pytest.raises(InputError, match="--default-precision"):
        validate_precision_config(
            PlannerConfig(mode=PlanMode.TRAINING, default_precision=Precision.INT8)
        )


def test_int4_needs_even_dim() -> None:
    errors = {"t": {Precision.INT4: 0.0}}
    assert choose_precision("t", [], 7, errors, PlannerConfig()).precision is Precision.FP32


def test_int4_default_widens_to_what_fbgemm_can_store_at_that_dim() -> None:
    config = PlannerConfig(default_precision=Precision.INT4)
    d6 = choose_precision("t", [], 6, None, config)  # int4 needs a multiple of 4, int8 of 2
    assert d6.precision is Precision.INT8 and "multiple of 4" in d6.reason
    d7 = choose_precision("t", [], 7, None, config)
    assert d7.precision is Precision.FP16
    assert choose_precision("t", [], 8, None, config).precision is Precision.INT4
