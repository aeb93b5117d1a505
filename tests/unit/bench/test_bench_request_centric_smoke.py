"""The request_centric benchmark runs at its --smoke size (so it does not rot) and reports the
metrics the README and issue 6 read: speedup per candidate count, the fitted exponent, equality."""

from __future__ import annotations

import pytest

from bench.harness import BENCHMARKS, BenchResult
from bench.request_centric import DEFAULT_CONFIG, SMOKE, fit_exponent, run


def test_request_centric_benchmark_smoke() -> None:
    result = run(dict(DEFAULT_CONFIG), smoke=True)
    assert isinstance(result, BenchResult) and result.name == "request_centric"
    assert "request_centric" in BENCHMARKS
    m = result.metrics
    counts = [str(c) for c in SMOKE["candidates"]]
    assert sorted(m["speedup"]) == sorted(counts)
    assert all(s > 0 for s in m["speedup"].values())
    assert isinstance(m["exponent"], float) and isinstance(m["exponent_per_candidate"], float)
    assert m["outputs_match"] is True
    for c in counts:
        row = m["per_count"][c]
        for side in ("request_centric", "per_candidate"):
            assert 0 < row[side]["p50_ms"] <= row[side]["p99_ms"]
            assert row[side]["candidates_per_s"] == pytest.approx(
                int(c) / (row[side]["p50_ms"] / 1e3), rel=1e-6
            )
        assert row["speedup"] == m["speedup"][c]
        assert row["per_candidate"]["gflops"] > row["request_centric"]["gflops"]
    assert {"outputs_match", "exponent", "speedup_at_64"} <= set(result.targets)
    assert result.targets["speedup_at_64"]["min"] == DEFAULT_CONFIG["target_speedup"]


def test_fit_exponent_recovers_a_power_law() -> None:
    counts = [10, 100, 1000]
    assert fit_exponent(counts, [2e-3 * c**0.5 for c in counts]) == pytest.approx(0.5)
    assert fit_exponent(counts, [1e-4 * c for c in counts]) == pytest.approx(1.0)
