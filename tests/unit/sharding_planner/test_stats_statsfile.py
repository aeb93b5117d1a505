"""Stats files (write/read) and merge_stats: merge of the halves == stats of the whole."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adrank.constants import FORMAT_VERSION_STATS
from adrank.errors import InputError, NotFoundError
from sharding_planner import (
    FeatureStats,
    StatsConfig,
    compute_stats,
    merge_stats,
    read_stats,
    write_stats,
)

T0 = 1_767_225_600
# Fields that depend only on exact state (counters, HLL registers, the sampled table), so they are
# equal for a merge even when a feature samples. Heavy hitters and the curve's head come from the
# Misra-Gries summary, whose content depends on how the logs were split.
EXACT_PARTS = (
    "rows",
    "rows_present",
    "coverage",
    "total_ids",
    "distinct",
    "distinct_exact",
    "distinct_rse",
    "distinct_sample_estimate",
    "sample_rate",
    "pooling",
    "unseen_recent_share",
    "first_seen_s",
    "last_seen_s",
    "log_end_s",
    "id_kind",
    "multi_hot",
)


def logs_table(rng: np.random.Generator, n: int, vocab: int) -> pa.Table:
    ids = (rng.zipf(1.2, n) % vocab).astype(np.int64)
    lists = [list(map(int, rng.integers(0, vocab, rng.integers(0, 4)))) or None for _ in range(n)]
    return pa.table(
        {
            "ts": pa.array(T0 + np.sort(rng.integers(0, 86_400, n)), pa.int64()),
            "ad_id": pa.array(ids),
            "domain": pa.array([f"d{v}" for v in ids % 97]),
            "hist": pa.array(lists, pa.list_(pa.int64())),
        }
    )


def split_files(tmp: Path, table: pa.Table, cut: int) -> tuple[Path, Path]:
    a, b = tmp / "part-a.parquet", tmp / "part-b.parquet"
    pq.write_table(table.slice(0, cut), a)
    pq.write_table(table.slice(cut), b)
    return a, b


def assert_exact_parts_equal(got: FeatureStats, want: FeatureStats) -> None:
    for field in EXACT_PARTS:
        assert getattr(got, field) == getattr(want, field), field


@pytest.mark.parametrize("limit", [1 << 19, 150])
def test_merge_of_two_halves_equals_stats_of_the_whole(tmp_path: Path, limit: int) -> None:
    table = logs_table(np.random.default_rng(0), 4_000, 3_000)
    a, b = split_files(tmp_path, table, 1_700)
    config = StatsConfig(exact_distinct_limit=limit, heavy_hitters=10, recent_window_s=3_600)
    whole = compute_stats([a, b], config)
    for part, path in (("a", a), ("b", b)):
        write_stats(compute_stats([path], config), tmp_path / f"{part}.json")
    merged = merge_stats([read_stats(tmp_path / "a.json"), read_stats(tmp_path / "b.json")])
    assert merged.inputs_fingerprint == whole.inputs_fingerprint
    assert [i.fingerprint for i in merged.inputs] == [i.fingerprint for i in whole.inputs]
    for name, fs in whole.features.items():
        sk_m, sk_w = merged.sketches[name], whole.sketches[name]
        assert np.array_equal(sk_m.sample_entries(), sk_w.sample_entries())
        assert np.array_equal(sk_m.hll, sk_w.hll)
        if fs.distinct_exact:
            assert merged.features[name] == fs  # every field, heavy hitters included
        else:
            assert_exact_parts_equal(merged.features[name], fs)
    assert not whole.features["ad_id"].distinct_exact or limit > 3_000


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 400),
    cut=st.floats(0.0, 1.0),
    limit=st.sampled_from([20, 1 << 19]),
)
def test_merge_equals_whole_property(
    tmp_path_factory, seed: int, n: int, cut: float, limit: int
) -> None:
    tmp = tmp_path_factory.mktemp("merge")
    table = logs_table(np.random.default_rng(seed), n, 60)
    a, b = split_files(tmp, table, int(cut * n))
    config = StatsConfig(exact_distinct_limit=limit, heavy_hitters=5)
    whole = compute_stats([a, b], config)
    merged = merge_stats([compute_stats([a], config), compute_stats([b], config)])
    assert merged.inputs_fingerprint == whole.inputs_fingerprint
    for name, fs in whole.features.items():
        assert_exact_parts_equal(merged.features[name], fs)
        if fs.distinct_exact:
            assert merged.features[name].heavy_hitters == fs.heavy_hitters
            assert merged.features[name].count_quantiles == fs.count_quantiles
            assert merged.features[name].top1pct_traffic_share == fs.top1pct_traffic_share


def test_write_then_read_gives_the_same_report(tmp_path: Path) -> None:
    table = logs_table(np.random.default_rng(1), 2_000, 500)
    pq.write_table(table, tmp_path / "logs.parquet")
    report = compute_stats([tmp_path / "logs.parquet"], StatsConfig(exact_distinct_limit=100))
    write_stats(report, tmp_path / "s.json")
    back = read_stats(tmp_path / "s.json")
    assert back == dataclasses.replace(report, config=back.config)
    assert back.config.result_config() == report.config.result_config()
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["kind"] == "adrank.stats" and doc["format_version"] == FORMAT_VERSION_STATS
    f = doc["features"]["domain"]
    for key in (
        "rows",
        "coverage",
        "distinct",
        "distinct_exact",
        "heavy_hitters",
        "pooling",
        "zipf_exponent",
        "top1pct_traffic_share",
        "unseen_recent_share",
    ):
        assert key in f
    assert f["heavy_hitters"][0] == [
        back.features["domain"].heavy_hitters[0].id_key,
        back.features["domain"].heavy_hitters[0].count,
    ]
    assert f["heavy_hitter_raw"][0].startswith("d")
    assert set(f["pooling"]) == {"mean", "p99", "max"}
    # Merging a read-back report with nothing else reproduces it.
    assert merge_stats([back]).features == back.features


def _report(tmp_path: Path, name: str, seed: int, **config) -> Path:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(logs_table(np.random.default_rng(seed), 300, 50), path)
    out = tmp_path / f"{name}.json"
    write_stats(compute_stats([path], StatsConfig(**config)), out)
    return out


def test_merge_refuses_different_settings(tmp_path: Path) -> None:
    a = _report(tmp_path, "a", 1, heavy_hitters=5)
    b = _report(tmp_path, "b", 2, heavy_hitters=6)
    with pytest.raises(InputError) as exc:
        merge_stats([read_stats(a), read_stats(b)], sources=[str(a), str(b)])
    assert str(b) in str(exc.value) and "heavy_hitters" in str(exc.value)


def test_merge_refuses_overlapping_inputs(tmp_path: Path) -> None:
    a = _report(tmp_path, "a", 1)
    with pytest.raises(InputError) as exc:
        merge_stats([read_stats(a), read_stats(a)], sources=[str(a), str(a)])
    assert "a.parquet" in str(exc.value) and "twice" in str(exc.value)


def test_merge_refuses_a_feature_with_different_id_kinds(tmp_path: Path) -> None:
    a_path, b_path = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"x": pa.array([1, 2])}), a_path)
    pq.write_table(pa.table({"x": pa.array(["1", "2"])}), b_path)
    with pytest.raises(InputError) as exc:
        merge_stats(
            [compute_stats([a_path]), compute_stats([b_path])], sources=["A.json", "B.json"]
        )
    assert "B.json:features.x" in str(exc.value)


def test_features_of_one_report_only_are_kept(tmp_path: Path) -> None:
    a_path, b_path = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"x": pa.array([1, 2]), "y": pa.array([5, 5])}), a_path)
    pq.write_table(pa.table({"x": pa.array([2, 3, 3])}), b_path)
    merged = merge_stats([compute_stats([a_path]), compute_stats([b_path])])
    assert merged.features["x"].rows == 5 and merged.features["x"].distinct == 3
    assert merged.features["y"].rows == 2 and merged.features["y"].heavy_hitters[0].count == 2


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(format_version=99), "format_version"),
        (lambda d: d.update(kind="adrank.plan"), "kind"),
        (lambda d: d.pop("inputs"), "malformed"),
        (lambda d: d["features"]["x"].pop("pooling"), "malformed"),
        (lambda d: d["config"].update(hll_precision="many"), "malformed"),
        (lambda d: d["features"]["x"]["sketch"]["sample"].update(keys="!!"), "features.x.sketch"),
    ],
)
def test_bad_stats_files_are_input_errors(tmp_path: Path, edit, expected: str) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": pa.array([1, 2])}), path)
    out = tmp_path / "s.json"
    write_stats(compute_stats([path]), out)
    doc = json.loads(out.read_text())
    edit(doc)
    out.write_text(json.dumps(doc))
    with pytest.raises(InputError) as exc:
        read_stats(out)
    assert expected in str(exc.value) and str(out) in str(exc.value)


def test_reading_a_missing_stats_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_stats(tmp_path / "nope.json")
