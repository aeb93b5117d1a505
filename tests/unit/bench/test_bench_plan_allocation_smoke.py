"""The plan_allocation benchmark runs at its --smoke size (so it does not rot)."""

from __future__ import annotations

from bench.harness import BENCHMARKS, BenchResult
from bench.plan_allocation import DEFAULT_CONFIG, run


def test_plan_allocation_benchmark_smoke() -> None:
    result = run(dict(DEFAULT_CONFIG), smoke=True)
    assert isinstance(result, BenchResult) and result.name == "plan_allocation"
    assert "plan_allocation" in BENCHMARKS
    budgets = result.metrics["budgets"]
    assert [b["budget_fraction"] for b in budgets] == DEFAULT_CONFIG["smoke_budget_fractions"]
    for b in budgets:
        for method in ("planner", "planner_no_prune", "uniform", "distinct_capped"):
            for split in ("holdout", "in_sample"):
                assert 0.0 <= b[f"{method}_{split}"] <= 1.0
            assert b[f"{method}_memory_bytes"] > 0
        # Baselines spend the budget (to within one row per feature); the planner stays near it.
        assert b["uniform_memory_bytes"] <= b["budget_bytes"]
        assert b["distinct_capped_memory_bytes"] <= b["budget_bytes"]
        assert b["planner_memory_bytes"] <= 1.05 * b["budget_bytes"]
        # On these Zipf logs the planner beats both baselines at equal memory, measured by hashing.
        assert b["planner_holdout"] < min(b["uniform_holdout"], b["distinct_capped_holdout"])
    assert set(result.targets) == {
        f"holdout_beats_baselines_at_{f:g}" for f in DEFAULT_CONFIG["smoke_budget_fractions"]
    }
