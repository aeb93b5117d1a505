"""The kv_get benchmark runs at its --smoke size (so it does not rot): the adrank part always, the
Feast part when .venv-peers exists (skipped with a reported reason otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.harness import BenchResult
from bench.kv_get import DEFAULT_CONFIG, feature_names, make_requests, run


def test_kv_get_benchmark_smoke() -> None:
    result = run(dict(DEFAULT_CONFIG), smoke=True)
    assert isinstance(result, BenchResult) and result.name == "kv_get"
    m = result.metrics
    assert m["requests"] == DEFAULT_CONFIG["smoke_requests"]
    assert m["candidates"] == DEFAULT_CONFIG["smoke_candidates"]
    assert m["store_rows"] == DEFAULT_CONFIG["smoke_users"] + DEFAULT_CONFIG["smoke_ads"]
    assert 0 < m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"]
    assert m["qps"] > 0 and m["qps_concurrent"] > 0 and m["get_features_ads_only_p50_ms"] > 0
    assert {"p50_ms", "p99_ms"} <= set(result.targets)
    assert result.targets["p50_ms"]["max"] == 3.0 and result.targets["p99_ms"]["max"] == 10.0
    if Path(DEFAULT_CONFIG["peers_python"]).exists():
        assert m["feast_values_match"] is True, result.notes
        assert m["feast_p50_ms"] > 0 and m["ratio_vs_feast_p50"] == pytest.approx(
            m["feast_p50_ms"] / m["p50_ms"]
        )
        assert result.targets["ratio_vs_feast_p50"]["min"] == 20.0
    else:
        assert ".venv-peers" in m["feast_skipped"] and "Feast part skipped" in result.notes


def test_feast_part_is_skipped_with_a_reason_when_peers_are_absent(tmp_path: Path) -> None:
    config = dict(DEFAULT_CONFIG, peers_python=str(tmp_path / "no-python"))
    result = run(config, smoke=True)
    assert "no-python is absent" in result.metrics["feast_skipped"]
    assert "ratio_vs_feast_p50" not in result.targets and result.metrics["p50_ms"] > 0


def test_requests_are_seeded_and_distinct() -> None:
    import numpy as np

    a = make_requests(10, 100, 20, 5, np.random.default_rng(3))
    b = make_requests(10, 100, 20, 5, np.random.default_rng(3))
    assert a == b
    for req in a:
        assert 1 <= req["user"] <= 10 and len(set(req["ads"])) == 20
        assert all(1 <= x <= 100 for x in req["ads"])
    assert feature_names("a", 3) == ["a_f00", "a_f01", "a_f02"]
