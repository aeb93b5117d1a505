"""Derived statistics: the rank-frequency curve, Zipf fit, sampled-mode accuracy, pooling."""

from __future__ import annotations

import numpy as np
import pytest

from sharding_planner.stats.sketches import FeatureSketch
from sharding_planner.stats.summarize import (
    RankFrequencyCurve,
    hll_estimate,
    hll_relative_error,
    summarize,
)
from sharding_planner.types import IdKind

DAY_S = 86_400


def sketch_of(
    keys: np.ndarray,
    ts: np.ndarray | None = None,
    *,
    limit: int = 1 << 19,
    keep: int = 400,
    p: int = 14,
) -> FeatureSketch:
    s = FeatureSketch.empty(
        "f", IdKind.INT, False, exact_limit=limit, hll_precision=p, heavy_keep=keep
    )
    for i in range(0, len(keys), 100_000):
        k = np.ascontiguousarray(keys[i : i + 100_000])
        t = None if ts is None else np.ascontiguousarray(ts[i : i + 100_000])
        s.observe(k, ts=t)
        s.add_rows(
            len(k), len(k), None if t is None else int(t.min()), None if t is None else int(t.max())
        )
    return s


def zipf_keys(rng: np.random.Generator, n: int, vocab: int, s: float) -> np.ndarray:
    p = np.arange(1, vocab + 1, dtype=np.float64) ** -s
    ranks = rng.choice(vocab, size=n, p=p / p.sum())
    return ranks.astype(np.int64) * 1_000_003 + 17  # rank r -> id, so the true top ids are known


def test_curve_traffic_on_a_hand_made_curve() -> None:
    # Two exact ids (10, 6) then sampled ids standing for 4 ids each (3, 1).
    c = RankFrequencyCurve(np.array([10, 6, 3, 1]), np.array([1.0, 1.0, 4.0, 4.0]))
    assert list(c.ends) == [1, 2, 6, 10]
    assert c.traffic_up_to(1) == 10
    assert c.traffic_up_to(4) == 10 + 6 + 2 * 3
    assert c.traffic_beyond(4) == 2 * 3 + 4 * 1
    assert list(c.count_at(np.array([1, 2, 3, 6, 7, 10, 11]))) == [10, 6, 3, 3, 1, 1, 1]


@pytest.mark.parametrize("s_true", [0.9, 1.1, 1.3])
def test_zipf_exponent_recovers_the_generating_exponent(s_true: float) -> None:
    rng = np.random.default_rng(int(s_true * 10))
    fs = summarize(sketch_of(zipf_keys(rng, 300_000, 50_000, s_true)), 10, DAY_S)
    assert fs.distinct_exact
    assert fs.zipf_exponent == pytest.approx(s_true, abs=0.1)


def test_zipf_exponent_is_none_with_fewer_than_three_repeated_ids() -> None:
    fs = summarize(sketch_of(np.array([5, 5, 6, 6, 7, 8, 9], dtype=np.int64)), 10, DAY_S)
    assert fs.zipf_exponent is None
    fs = summarize(sketch_of(np.array([5, 5, 5, 6, 6, 7, 7], dtype=np.int64)), 10, DAY_S)
    assert fs.zipf_exponent is not None


def test_uniform_ids_have_a_flat_curve() -> None:
    keys = np.repeat(np.arange(1_000, dtype=np.int64), 5)
    fs = summarize(sketch_of(keys), 10, DAY_S)
    assert fs.zipf_exponent == pytest.approx(0.0, abs=1e-9)
    assert fs.top1pct_traffic_share == pytest.approx(0.01)
    assert fs.top10pct_traffic_share == pytest.approx(0.10)
    assert (fs.count_quantiles.p50, fs.count_quantiles.max) == (5, 5)


def test_empty_sketch_summarizes_to_zeros() -> None:
    s = FeatureSketch.empty("f", IdKind.INT, False, exact_limit=10, hll_precision=10, heavy_keep=4)
    s.add_rows(3, 0, None, None)
    fs = summarize(s, 5, DAY_S)
    assert (fs.rows, fs.rows_present, fs.coverage, fs.distinct, fs.total_ids) == (3, 0, 0.0, 0, 0)
    assert fs.heavy_hitters == () and fs.zipf_exponent is None and fs.unseen_recent_share is None
    assert (fs.pooling.mean, fs.pooling.max) == (0.0, 0)
    assert hll_estimate(s.hll, 10) == 0.0


@pytest.fixture(scope="module")
def churned_logs() -> tuple[np.ndarray, np.ndarray]:
    """Zipf(1.0) ids over 10 days; a random 30% of the vocabulary stops after day 5."""
    rng = np.random.default_rng(7)
    n, vocab = 600_000, 120_000
    keys = zipf_keys(rng, n, vocab, 1.0)
    dead = rng.random(vocab) < 0.3
    rank = (keys - 17) // 1_000_003
    span = np.where(dead[rank], 5 * DAY_S, 10 * DAY_S)
    ts = (rng.random(n) * span).astype(np.int64)
    order = np.argsort(ts, kind="stable")  # logs arrive in time order
    return keys[order], ts[order]


def test_sampled_mode_estimates_are_close_to_the_exact_statistics(churned_logs) -> None:
    keys, ts = churned_logs
    exact = summarize(sketch_of(keys, ts), 50, DAY_S)
    sampled_sketch = sketch_of(keys, ts, limit=6_000)
    sampled = summarize(sampled_sketch, 50, DAY_S)
    assert exact.distinct_exact and not sampled.distinct_exact
    assert sampled.sample_rate < 0.1
    assert sampled.distinct_rse == pytest.approx(hll_relative_error(14))
    # Distinct: HLL within 3 stated errors; the sample's own estimate within ~3 sigma of binomial.
    assert abs(sampled.distinct / exact.distinct - 1) < 3 * sampled.distinct_rse
    assert abs(sampled.distinct_sample_estimate / exact.distinct - 1) < 3 / np.sqrt(6_000 / 2)
    # Traffic shares, dead-row share and the Zipf fit, from the sampled curve.
    assert sampled.top1pct_traffic_share == pytest.approx(exact.top1pct_traffic_share, rel=0.15)
    assert sampled.top10pct_traffic_share == pytest.approx(exact.top10pct_traffic_share, rel=0.05)
    assert sampled.unseen_recent_share == pytest.approx(exact.unseen_recent_share, abs=0.05)
    assert exact.unseen_recent_share > 0.2
    assert sampled.zipf_exponent == pytest.approx(exact.zipf_exponent, abs=0.1)
    assert sampled.count_quantiles.max == exact.count_quantiles.max
    # Exact counters stay exact.
    assert (sampled.total_ids, sampled.rows_present) == (exact.total_ids, exact.rows_present)


def test_sampled_heavy_hitters_hold_the_true_top_ids_within_the_bound(churned_logs) -> None:
    keys, ts = churned_logs
    true_counts = dict(zip(*np.unique(keys, return_counts=True), strict=True))
    top = sorted(true_counts, key=lambda k: (-true_counts[k], k))
    sampled = summarize(sketch_of(keys, ts, limit=6_000, keep=100), 25, DAY_S)
    bound = sampled.heavy_hitter_max_undercount
    assert 0 < bound <= len(keys) / 101
    got = [h.id_key for h in sampled.heavy_hitters]
    # Every id whose count exceeds the bound is tracked; the clear top ids are all reported.
    assert set(top[:10]) <= set(got)
    for h in sampled.heavy_hitters:
        assert h.count <= true_counts[h.id_key] <= h.count + h.max_undercount
        assert h.max_undercount <= bound
        assert h.first_seen_s is not None and h.last_seen_s is not None
    assert [h.count for h in sampled.heavy_hitters] == sorted(
        (h.count for h in sampled.heavy_hitters), reverse=True
    )


def test_pooling_comes_from_the_exact_length_histogram() -> None:
    s = FeatureSketch.empty("f", IdKind.INT, True, exact_limit=100, hll_precision=10, heavy_keep=4)
    lengths = np.array([0, 1, 1, 2, 7, 0, 3] * 50 + [40])
    s.add_list_rows(len(lengths), lengths, None, None)
    fs = summarize(s, 5, DAY_S)
    present = lengths[lengths > 0]
    assert fs.rows == len(lengths) and fs.rows_present == len(present)
    assert fs.pooling.mean == pytest.approx(present.mean())
    assert fs.pooling.p99 == int(np.quantile(present, 0.99, method="inverted_cdf")) == 7
    assert fs.pooling.max == 40
    assert fs.total_ids == present.sum()
