"""The plan-vs-TorchRec benchmark runs at its --smoke size (so it does not rot) and reports the
same figures for both planners, evaluated with one cost model."""

from __future__ import annotations

import pytest

from bench.harness import BENCHMARKS, BenchResult
from bench.plan_vs_torchrec import (
    CRITEO_1TB_CARDINALITIES,
    CRITEO_1TB_POOLING_FACTORS,
    DEFAULT_CONFIG,
    run,
)


def test_criteo_constants_are_the_published_ones() -> None:
    assert len(CRITEO_1TB_CARDINALITIES) == len(CRITEO_1TB_POOLING_FACTORS) == 26
    assert sum(CRITEO_1TB_CARDINALITIES) == 204_184_588
    assert max(CRITEO_1TB_CARDINALITIES) == 40_000_000
    assert "plan_vs_torchrec" in BENCHMARKS


@pytest.mark.timeout(300)
def test_plan_vs_torchrec_smoke() -> None:
    config = dict(DEFAULT_CONFIG, adrank_repeats=2, smoke_synthetic_tables=30)
    result = run(config, smoke=True)
    assert isinstance(result, BenchResult) and result.name == "plan_vs_torchrec"
    m = result.metrics
    for key, tables, devices in (
        ("criteo_1tb", 26, 8),
        ("synthetic", 30, DEFAULT_CONFIG["smoke_synthetic_devices"]),
    ):
        s = m[key]
        assert (s["tables"], s["devices"]) == (tables, devices)
        for planner in ("adrank", "torchrec"):
            p = s[planner]
            assert p["plan_s"] > 0
            # Every table's bytes land on some device, in both plans.
            assert p["memory_bytes"]["mean"] * devices == pytest.approx(s["total_table_bytes"])
            for what in ("memory_bytes", "cost_ms"):
                summ = p[what]
                assert summ["max"] >= summ["mean"] > 0
                assert summ["imbalance"] == pytest.approx(summ["max"] / summ["mean"])
            assert sum(p["sharding_types"].values()) == tables
        assert s["torchrec"]["own_perf_ms"]["max"] > 0
        assert s["speedup"] == pytest.approx(s["torchrec"]["plan_s"] / s["adrank"]["plan_s"])
        assert {f"{key}.speedup", f"{key}.cost_ms_imbalance", f"{key}.memory_bytes_imbalance"} <= (
            set(result.targets)
        )
    # The 26 Criteo tables: 204,184,588 rows x 128 fp32 values.
    assert m["criteo_1tb"]["total_table_bytes"] == 204_184_588 * 128 * 4
    assert "cost model" in result.notes
    # Criteo's adrank plan converts to a TorchRec ShardingPlan (TorchRec's even row-wise layout).
    assert m["criteo_1tb"]["adrank"]["torchrec_expressible"] is True
