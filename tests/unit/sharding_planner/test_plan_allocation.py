"""Hash-size allocation and its collision model."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrank.errors import PlanError, PlanErrorKind
from adrank.types import PoolingType
from sharding_planner.allocation import LagrangianAllocator, occupied_rows
from sharding_planner.collision import feature_collision_rate, shared_row_probability
from sharding_planner.types import AllocationConfig, FeatureSpec, PlanInputs


def _spec(
    name: str,
    live: int,
    pf: float = 1.0,
    heavy: tuple[tuple[int, float], ...] = (),
    importance: float = 1.0,
) -> FeatureSpec:
    return FeatureSpec(
        name=name,
        dim=8,
        pooling=PoolingType.SUM,
        pooling_factor=pf,
        num_ids=live,
        live_ids=live,
        heavy_hitters=heavy,
        importance=importance,
    )


def _inputs(*specs: FeatureSpec) -> PlanInputs:
    return PlanInputs(
        features=tuple(sorted(specs, key=lambda s: s.name)),
        source_fingerprint="sha256:x",
        recent_window_s=None,
        source="test",
    )


def test_shared_row_probability_exact_values() -> None:
    assert shared_row_probability(0, 10) == 0.0
    assert shared_row_probability(1, 2) == pytest.approx(0.5)
    assert shared_row_probability(3, 1) == 1.0
    assert shared_row_probability(99, 100) == pytest.approx(1 - 0.99**99)


def test_feature_collision_rate_counts_only_the_tail() -> None:
    spec = _spec("f", 11, heavy=((1, 0.5), (2, 0.2)))
    # 2 dedicated: 30% of traffic in the tail, 9 tail ids in 4 rows.
    assert feature_collision_rate(spec, 4, 2) == pytest.approx(0.3 * (1 - 0.75**8))
    assert feature_collision_rate(_spec("g", 1), 1, 0) == 0.0


def test_everything_fits_gives_each_feature_its_cap() -> None:
    specs = (_spec("a", 100), _spec("b", 5, heavy=tuple((k, 0.2) for k in range(5))))
    alloc = LagrangianAllocator().allocate(_inputs(*specs), {"a": 10, "b": 10}, 10**9)
    a, b = alloc.decision("a"), alloc.decision("b")
    assert a.num_rows == 100 and a.capped
    # Every id of b is a known heavy hitter: 4 dedicated rows + 1 hashed row, no collisions.
    assert (b.hash_size, len(b.dedicated_keys), b.expected_collision_rate) == (1, 4, 0.0)
    assert alloc.used_bytes == 105 * 10


def test_more_traffic_gets_more_rows() -> None:
    specs = (_spec("hot", 10_000, pf=9.0), _spec("cold", 10_000, pf=1.0))
    alloc = LagrangianAllocator().allocate(_inputs(*specs), {"hot": 4, "cold": 4}, 4 * 8_000)
    assert alloc.decision("hot").num_rows > alloc.decision("cold").num_rows
    assert alloc.used_bytes <= 4 * 8_000


def test_importance_weights_shift_rows() -> None:
    specs = (_spec("a", 10_000, importance=5.0), _spec("b", 10_000))
    alloc = LagrangianAllocator().allocate(_inputs(*specs), {"a": 4, "b": 4}, 4 * 6_000)
    assert alloc.decision("a").num_rows > alloc.decision("b").num_rows


def test_heavy_hitters_get_dedicated_rows_under_pressure() -> None:
    heavy = tuple((k, 0.1 / (k + 1)) for k in range(20))  # 36% of the traffic
    spec = _spec("f", 50_000, heavy=heavy)
    alloc = LagrangianAllocator().allocate(_inputs(spec), {"f": 1}, 1_000)
    d = alloc.decision("f")
    assert len(d.dedicated_keys) == 20 and d.dedicated_keys[:2] == (0, 1)
    # 50,000 tail ids collide in 1,000 rows as surely as in 1: extra hashed rows buy nothing.
    assert d.hash_size == 1 and d.memory_bytes == 21
    no_ded = LagrangianAllocator(AllocationConfig(max_dedicated_per_feature=0)).allocate(
        _inputs(spec), {"f": 1}, 1_000
    )
    assert d.expected_collision_rate < no_ded.decision("f").expected_collision_rate


def test_budget_too_small_for_one_row_each_is_insufficient_memory() -> None:
    with pytest.raises(PlanError) as err:
        LagrangianAllocator().allocate(
            _inputs(_spec("a", 10), _spec("b", 10)), {"a": 100, "b": 100}, 150
        )
    assert err.value.kind is PlanErrorKind.INSUFFICIENT_MEMORY
    assert "150" in str(err.value) and "--memory-budget" in str(err.value)


def _uniform_loss(specs: tuple[FeatureSpec, ...], rows_each: int) -> float:
    total = sum(s.pooling_factor for s in specs)
    return sum(
        s.pooling_factor / total * feature_collision_rate(s, max(1, rows_each)) for s in specs
    )


def test_greedy_beats_uniform_on_the_model_without_pruning() -> None:
    # Non-convex case: "a" is hopeless at this budget, so its rows are better spent elsewhere.
    specs = (_spec("a", 100_000, pf=1.0), _spec("b", 1_000, pf=5.0), _spec("c", 30_000, pf=2.0))
    budget_rows = 30_000
    alloc = LagrangianAllocator().allocate(_inputs(*specs), dict.fromkeys("abc", 1), budget_rows)
    capped_uniform = sum(
        s.pooling_factor / 8.0 * feature_collision_rate(s, min(s.live_ids, budget_rows // 3))
        for s in specs
    )
    assert alloc.expected_collision_rate < capped_uniform
    assert alloc.decision("a").hash_size < 100


def test_pruned_features_pay_only_for_rows_live_ids_hit() -> None:
    specs = (_spec("a", 100_000, pf=1.0), _spec("b", 1_000, pf=5.0), _spec("c", 30_000, pf=2.0))
    rb = dict.fromkeys("abc", 64)
    budget = 64 * 30_000
    alloc = LagrangianAllocator().allocate(_inputs(*specs), rb, budget, frozenset("abc"))
    assert alloc.used_bytes <= budget
    b = alloc.decision("b")
    # A large hashed range for the small feature: few collisions, stored rows below its live ids.
    assert b.pruned and b.hash_size > 10 * 1_000 and b.expected_stored_rows <= 1_000
    assert b.expected_stored_rows == pytest.approx(occupied_rows(b.hash_size, 1_000))
    assert b.memory_bytes == math.ceil(64 * b.expected_stored_rows + 4 * b.hash_size)
    # Beats a uniform split of the same bytes without pruning.
    assert alloc.expected_collision_rate < _uniform_loss(specs, 30_000 // 3)


@settings(max_examples=60, deadline=None)
@given(
    lives=st.lists(st.integers(1, 5_000), min_size=1, max_size=6),
    pfs=st.lists(st.floats(0.0, 10.0), min_size=6, max_size=6),
    row_bytes=st.lists(st.integers(1, 64), min_size=6, max_size=6),
    budget_share=st.floats(0.05, 1.5),
    n_heavy=st.integers(0, 8),
    pruned_mask=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_allocation_respects_budget_and_caps(
    lives: list[int],
    pfs: list[float],
    row_bytes: list[int],
    budget_share: float,
    n_heavy: int,
    pruned_mask: list[bool],
) -> None:
    specs = tuple(
        _spec(
            f"f{i}",
            live,
            pf=pfs[i],
            heavy=tuple((k, 0.5 / (k + 2)) for k in range(min(n_heavy, live))),
        )
        for i, live in enumerate(lives)
    )
    rb = {s.name: row_bytes[i] for i, s in enumerate(specs)}
    pruned = frozenset(s.name for i, s in enumerate(specs) if pruned_mask[i])
    floor = sum(rb.values()) + 8 * len(specs)
    need = sum(s.live_ids * rb[s.name] for s in specs)
    budget = max(floor, math.floor(need * budget_share))
    cfg = AllocationConfig()
    alloc = LagrangianAllocator(cfg).allocate(_inputs(*specs), rb, budget, pruned)
    assert alloc.used_bytes == sum(d.memory_bytes for d in alloc.decisions) <= budget
    assert [d.feature for d in alloc.decisions] == sorted(s.name for s in specs)
    for s, d in zip(specs, alloc.decisions, strict=True):
        assert d.hash_size >= 1
        assert d.expected_stored_rows <= max(1, s.live_ids) + 1e-9
        if d.pruned:
            assert d.hash_size <= math.ceil(cfg.max_hash_per_live_id * s.live_ids)
        else:
            assert d.num_rows <= max(1, s.live_ids)  # never more rows than live ids
        assert len(set(d.dedicated_keys)) == len(d.dedicated_keys) <= len(s.heavy_hitters)
        assert 0.0 <= d.expected_collision_rate <= 1.0
