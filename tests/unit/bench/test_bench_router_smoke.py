"""`bench router --smoke` runs the whole pipeline at a tiny size and reports the issue's keys."""

import pytest

from bench.router import DEFAULT_CONFIG, run


@pytest.mark.integration
def test_router_bench_smoke_reports_cost_and_auc_gap() -> None:
    result = run(dict(DEFAULT_CONFIG), smoke=True)
    m = result.metrics
    assert len(m["runs"]) == 1
    assert set(m["auc"]) == {"small", "medium", "large", "routed"}
    routed = m["runs"][0]["routed"]
    assert m["cost_ratio_vs_large"] == pytest.approx(1.0 / routed["relative_cost"])
    assert m["auc_gap_vs_large"] == pytest.approx(
        m["runs"][0]["tiers"]["large"]["auc"] - routed["auc"]
    )
    assert set(result.targets) == {"cost_ratio_vs_large", "auc_gap_vs_large"}
