"""FeatureSketch: sampled-table invariants, Misra-Gries bounds, HLL error, merge == whole, JSON."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adrank.errors import InputError
from sharding_planner.stats import kernels as K
from sharding_planner.stats.sketches import FeatureSketch, decode_int64, encode_int64
from sharding_planner.stats.summarize import hll_estimate, hll_relative_error
from sharding_planner.types import IdKind

HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def new_sketch(limit: int = 1 << 19, p: int = 10, keep: int = 8) -> FeatureSketch:
    return FeatureSketch.empty(
        "f", IdKind.INT, False, exact_limit=limit, hll_precision=p, heavy_keep=keep
    )


def feed(sketch: FeatureSketch, keys: np.ndarray, ts: np.ndarray, chunk: int) -> FeatureSketch:
    for i in range(0, len(keys), chunk):
        k, t = keys[i : i + chunk], ts[i : i + chunk]
        sketch.observe(np.ascontiguousarray(k), ts=np.ascontiguousarray(t))
        sketch.add_rows(len(k), len(k), int(t.min()), int(t.max()))
    return sketch


def truth(keys: np.ndarray, ts: np.ndarray) -> dict[int, tuple[int, int, int]]:
    out: dict[int, list[int]] = {}
    for k, t in zip(keys.tolist(), ts.tolist(), strict=True):
        c = out.setdefault(k, [0, t, t])
        c[0] += 1
        c[1] = min(c[1], t)
        c[2] = max(c[2], t)
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def below(keys: np.ndarray, level: int) -> np.ndarray:
    """Mask of keys kept at ``level``: sampling hash < 2**(64 - level)."""
    if level == 0:
        return np.ones(len(keys), dtype=bool)
    return (K.sample_hash(np.ascontiguousarray(keys, dtype=np.int64)) >> np.uint64(64 - level)) == 0


streams = st.integers(0, 2**32 - 1).flatmap(
    lambda seed: st.tuples(
        st.just(seed),
        st.integers(1, 3_000),  # stream length
        st.sampled_from([10, 300, 5_000, 2**62]),  # id universe
        st.integers(1, 200),  # exact limit
        st.integers(1, 700),  # chunk size
    )
)


def draw_stream(seed: int, n: int, universe: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = (
        (rng.zipf(1.2, n) % universe).astype(np.int64)
        if universe < 2**62
        else rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    )
    ts = rng.integers(0, 10_000, n).astype(np.int64)
    return keys, ts


@HYP
@given(streams)
def test_sampled_table_keeps_exactly_the_ids_below_the_threshold_with_exact_counts(case) -> None:
    seed, n, universe, limit, chunk = case
    keys, ts = draw_stream(seed, n, universe)
    s = feed(new_sketch(limit=limit), keys, ts, chunk)
    want = truth(keys, ts)
    entries = s.sample_entries()
    distinct = np.array(sorted(want), dtype=np.int64)
    # The kept set is exactly the distinct ids whose sampling hash is below the threshold...
    assert set(entries[:, K.COL_KEY].tolist()) == set(distinct[below(distinct, s.level)].tolist())
    assert s.sample_size == len(entries) <= limit
    # ...at the smallest level whose kept set fits the limit.
    if s.level > 0:
        assert below(distinct, s.level - 1).sum() > limit
    # Kept ids have exact counts and first/last times.
    for key, count, first, last in entries.tolist():
        assert (count, first, last) == want[key]
    assert s.is_exact == (len(want) <= limit)


@HYP
@given(streams)
def test_heavy_hitter_counts_are_within_the_misra_gries_bound(case) -> None:
    seed, n, universe, limit, chunk = case
    keys, ts = draw_stream(seed, n, universe)
    keep = 5
    s = feed(new_sketch(limit=limit, keep=keep), keys, ts, chunk)
    want = truth(keys, ts)
    if not s.heavy_active:
        assert s.is_exact and s.heavy_undercount == 0
        return
    err = s.heavy_undercount
    assert err <= n / (keep + 1)
    tracked = {row[0]: row for row in s.heavy_entries().tolist()}
    assert len(tracked) < 2 * keep
    for key, (count, first, last) in want.items():
        if key in tracked:
            _, c, f, lt, e = tracked[key]
            assert c <= count <= c + e and e <= err
            # Times cover the occurrences since the id was last (re)inserted.
            assert first <= f <= lt <= last
        else:
            assert count <= err


@HYP
@given(streams, st.floats(0.0, 1.0))
def test_merge_of_two_halves_equals_the_sketch_of_the_whole(case, split: float) -> None:
    seed, n, universe, limit, chunk = case
    keys, ts = draw_stream(seed, n, universe)
    cut = int(split * n)
    whole = feed(new_sketch(limit=limit), keys, ts, chunk)
    a = feed(new_sketch(limit=limit), keys[:cut], ts[:cut], chunk)
    b = feed(new_sketch(limit=limit), keys[cut:], ts[cut:], chunk)
    merged = a.merge(b)
    assert np.array_equal(merged.sample_entries(), whole.sample_entries())
    assert merged.level == whole.level
    assert np.array_equal(merged.hll, whole.hll)
    assert np.array_equal(merged.pooling_hist, whole.pooling_hist)
    assert merged.rows_seen == whole.rows_seen == n
    assert (merged.first_seen_s, merged.last_seen_s) == (whole.first_seen_s, whole.last_seen_s)
    assert (merged.log_start_s, merged.log_end_s) == (whole.log_start_s, whole.log_end_s)
    # The merged heavy-hitter summary keeps the Misra-Gries guarantee.
    assert merged.heavy_active == (not merged.is_exact)
    want = truth(keys, ts) if merged.heavy_active else {}
    tracked = {row[0]: row for row in merged.heavy_entries().tolist()}
    for key, (count, _, _) in want.items():
        if key in tracked:
            assert tracked[key][1] <= count <= tracked[key][1] + tracked[key][4]
        else:
            assert count <= merged.heavy_undercount
    # Inputs are unchanged by the merge.
    assert a.rows_seen == cut and b.rows_seen == n - cut


def test_exact_mode_grows_the_table_and_keeps_every_count() -> None:
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 60_000, 200_000).astype(np.int64)
    ts = np.arange(200_000, dtype=np.int64)
    s = feed(new_sketch(), keys, ts, 65_536)
    counts = collections.Counter(keys.tolist())
    entries = s.sample_entries()
    assert s.is_exact and len(entries) == len(counts)
    assert dict(zip(entries[:, 0].tolist(), entries[:, 1].tolist(), strict=True)) == counts
    assert s.table.shape[0] >= 2 * len(counts)  # load factor <= 1/2


@pytest.mark.parametrize("kind", ["sequential", "random", "strings"])
def test_hll_within_three_stated_errors_on_a_million_distinct_ids(kind: str) -> None:
    n = 1_000_000
    if kind == "sequential":
        keys = np.arange(n, dtype=np.int64)
    elif kind == "random":
        keys = np.unique(np.random.default_rng(2).integers(-(2**63), 2**63 - 1, n, dtype=np.int64))
    else:
        from adrank.hashing import string_id_keys

        keys = string_id_keys([f"user-{i}" for i in range(n)])
    s = new_sketch(limit=1_000, p=14)
    s.observe(keys)
    s.observe(keys[: n // 3])  # repeats do not change the estimate
    rel = abs(hll_estimate(s.hll, 14) / len(keys) - 1)
    assert rel < 3 * hll_relative_error(14)


@pytest.mark.parametrize("p", [8, 12, 14])
@pytest.mark.parametrize("n", [0, 1, 7, 100, 1_000, 20_000, 150_000])
def test_hll_within_stated_error_across_the_range(p: int, n: int) -> None:
    # Mid-range counts (around 2.5 * 2**p) are where the classic estimator is biased.
    s = new_sketch(p=p)
    s.observe(np.arange(n, dtype=np.int64) * 7 + 3)
    est = hll_estimate(s.hll, p)
    if n == 0:
        assert est == 0.0
    else:
        assert abs(est / n - 1) < 3 * hll_relative_error(p)


def test_to_dict_and_from_dict_round_trip_a_sampling_sketch() -> None:
    rng = np.random.default_rng(3)
    keys = (rng.zipf(1.1, 20_000) % 5_000).astype(np.int64)
    s = feed(
        new_sketch(limit=300, keep=16), keys, rng.integers(0, 99, 20_000).astype(np.int64), 3_000
    )
    s.raw_ids = {int(keys[0]): "x"}
    back = FeatureSketch.from_dict("f", s.to_dict(), "test")
    assert back.level == s.level > 0 and back.heavy_active
    assert np.array_equal(back.sample_entries(), s.sample_entries())
    assert np.array_equal(back.heavy_entries(), s.heavy_entries())
    assert np.array_equal(back.hll, s.hll) and np.array_equal(back.pooling_hist, s.pooling_hist)
    assert back.heavy_undercount == s.heavy_undercount and back.raw_ids == s.raw_ids
    assert back.to_dict() == s.to_dict()
    # A restored sketch keeps working.
    back.observe(keys[:100])
    assert back.sample_size >= 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=200))
def test_int64_arrays_round_trip_through_text(values: list[int]) -> None:
    a = np.array(values, dtype=np.int64)
    assert np.array_equal(decode_int64(encode_int64(a), len(a)), a)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("hll"),
        lambda d: d["hll"].update(registers="not base64!"),
        lambda d: d["sample"].update(size=d["sample"]["size"] + 1),
        lambda d: d.update(id_kind="float"),
        lambda d: d["hll"].update(precision=30),
    ],
)
def test_malformed_sketch_is_an_input_error_naming_its_source(damage) -> None:
    s = new_sketch()
    s.observe(np.array([1, 2, 2], dtype=np.int64))
    d = s.to_dict()
    damage(d)
    with pytest.raises(InputError) as exc:
        FeatureSketch.from_dict("f", d, "stats.json:features.f.sketch")
    assert "stats.json:features.f.sketch" in str(exc.value)


def test_merge_refuses_different_id_kinds() -> None:
    a = new_sketch()
    b = FeatureSketch.empty(
        "f", IdKind.STRING, False, exact_limit=1 << 19, hll_precision=10, heavy_keep=8
    )
    with pytest.raises(InputError, match="'f'"):
        a.merge(b)
