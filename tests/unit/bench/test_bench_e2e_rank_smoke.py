"""The e2e_rank benchmark runs at its --smoke size (so it does not rot): the whole pipeline built,
both servers in process, held-out requests replayed through RankClient, and the metrics the README
and issue 6 read (p50/p99, stage timings, QPS, tier mix, always-large) reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.e2e_rank import DEFAULT_CONFIG, SMOKE, held_out_requests, run
from bench.harness import BENCHMARKS, BenchResult


def test_e2e_rank_benchmark_smoke() -> None:
    result = run(dict(DEFAULT_CONFIG), smoke=True)
    assert isinstance(result, BenchResult) and result.name == "e2e_rank"
    assert "e2e_rank" in BENCHMARKS
    m = result.metrics
    assert m["requests"] == SMOKE["requests"] and m["candidates"] == SMOKE["candidates"]
    assert 0 < m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"]
    for stage in ("features", "lookup", "score", "total"):
        assert 0 < m[f"server_{stage}_p50_ms"] <= m[f"server_{stage}_p99_ms"]
    assert m["server_total_p50_ms"] <= m["p50_ms"] * 1.5  # the server's part of the call
    assert m["qps"] > 0 and m["qps_concurrent"] > 0
    assert sum(m["tier_mix"].values()) == pytest.approx(1.0)
    assert set(m["tier_mix"]) <= {"small", "medium", "large"}
    assert m["always_large"]["tier_mix"] == {"large": 1.0}
    assert m["always_large"]["reasons"] == {"forced": 1.0}
    # The server counted every call: warm-up (3 forced + 1 routed each), routed, always-large,
    # and the throughput pass.
    calls = SMOKE["warmup"] * 4 + SMOKE["requests"] + SMOKE["large_requests"]
    assert sum(m["server_requests_by_tier"].values()) == calls + SMOKE["throughput_requests"]
    assert m["p99_ratio_vs_always_large"] > 0 and m["plan_fingerprint"].startswith("sha256:")
    assert result.targets["p99_ms"]["max"] == DEFAULT_CONFIG["target_p99_ms"] == 50.0


def test_held_out_requests_are_padded_seeded_and_distinct(tmp_path: Path) -> None:
    from adrank.cli import main

    logs = tmp_path / "logs"
    assert main(["-q", "synth", "-o", str(logs), "--rows", "10000", "--days", "4"]) == 0
    a = held_out_requests(logs, 1.0, 50, 5, seed=3)
    b = held_out_requests(logs, 1.0, 50, 5, seed=3)
    assert [r.request_id for r in a] == [r.request_id for r in b]
    assert all(np.array_equal(x.ad_ids, y.ad_ids) for x, y in zip(a, b, strict=True))
    for r in a:
        assert len(r.ad_ids) == 50 and len(np.unique(r.ad_ids)) == 50
        assert {"device", "user_clicked_ads", "history_len"} <= set(r.context)
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    imps = pq.read_table(logs / "impressions.parquet", columns=["request_id", "ad_id"])
    first = a[0]
    logged = imps.filter(pc.equal(imps.column("request_id"), first.request_id))
    own = logged.column("ad_id").to_numpy()
    assert np.array_equal(first.ad_ids[: len(own)], own)  # logged candidates first, in order
