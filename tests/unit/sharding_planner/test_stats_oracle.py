"""compute_stats against a slow, obvious pandas oracle on small hand-made logs.

Every exact field of every feature is compared: int, string, list<int> and list<string> features,
nulls, empty lists, null list items, several files with different schemas (a feature's rows count
only the files that have it), timestamp[ms] and int-seconds timestamps, and a file without one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mmh3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sharding_planner import FeatureStats, IdKind, StatsConfig, compute_stats

WINDOW_S = 3_600
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


# ----------------------------------------------------------------------------- the oracle


def oracle_key(value: Any) -> int:
    """The id key of a raw id, computed independently of adrank.hashing."""
    if isinstance(value, str):
        return mmh3.hash64(value.encode("utf-8"), 0)[0]
    return int(np.array(value, dtype=np.uint64 if value >= 2**63 else np.int64).view(np.int64))


def _row_ts(table: pa.Table, ts_col: str | None) -> list[int | None]:
    if ts_col is None:
        return [None] * table.num_rows
    col = table.column(ts_col)
    if pa.types.is_timestamp(col.type):
        per = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[col.type.unit]
        ints = col.cast(pa.int64()).to_pylist()
        return [None if v is None else v // per for v in ints]
    return col.to_pylist()


def oracle_feature(
    files: list[tuple[pa.Table, str | None]], name: str, k: int, window_s: int
) -> dict[str, Any]:
    """Every exact statistic of feature ``name`` by brute force over (table, ts column) pairs."""
    occurrences = []  # (key, ts) per id occurrence
    lengths = []  # ids per present row
    rows = 0
    log_ts: list[int] = []
    raw: dict[int, str] = {}
    for table, ts_col in files:
        if name not in table.column_names:
            continue
        rows += table.num_rows
        ts = _row_ts(table, ts_col)
        log_ts += [t for t in ts if t is not None]
        for value, t in zip(table.column(name).to_pylist(), ts, strict=True):
            items = value if isinstance(value, list) else [value]
            items = [v for v in items if v is not None]
            if items:
                lengths.append(len(items))
            for v in items:
                key = oracle_key(v)
                if isinstance(v, str):
                    raw[key] = v
                occurrences.append((key, t))
    df = pd.DataFrame(occurrences, columns=["key", "ts"]).astype({"ts": "float64"})
    g = df.groupby("key")
    per_id = pd.DataFrame({"count": g.size(), "first": g["ts"].min(), "last": g["ts"].max()})
    per_id = per_id.reset_index().sort_values(["count", "key"], ascending=[False, True])
    counts = per_id["count"].to_numpy()
    distinct, total = len(per_id), len(df)

    def share(p: float) -> float:
        return float(counts[: math.ceil(p * distinct)].sum() / total) if total else 0.0

    def opt(v: float) -> int | None:
        return None if pd.isna(v) else int(v)

    heavy = [
        (int(r.key), int(r.count), opt(r.first), opt(r.last)) for r in per_id.head(k).itertuples()
    ]
    log_end = max(log_ts) if log_ts else None
    known_last = per_id["last"].dropna()
    unseen = (
        None
        if log_end is None or known_last.empty
        else float((known_last < log_end - window_s).mean())
    )
    return {
        "rows": rows,
        "rows_present": len(lengths),
        "coverage": len(lengths) / rows,
        "total_ids": total,
        "distinct": distinct,
        "heavy": heavy,
        "raw": [raw.get(h[0]) for h in heavy],
        "pooling": (
            float(np.mean(lengths)),
            int(np.quantile(lengths, 0.99, method="inverted_cdf")),
            max(lengths),
        ),
        "quantiles": tuple(
            int(np.quantile(counts, q, method="inverted_cdf")) for q in (0.5, 0.9, 0.99)
        )
        + (int(counts.max()),),
        "top1": share(0.01),
        "top10": share(0.10),
        "zipf": oracle_zipf(counts),
        "unseen": unseen,
        "first": opt(df["ts"].min()),
        "last": opt(df["ts"].max()),
        "log_end": log_end,
    }


def oracle_zipf(counts_desc: np.ndarray) -> float | None:
    """The documented rule: fit log(count) on log(rank) at <= 64 geometric integer ranks from 1 to
    the last rank with count >= 2; s = -slope; None with fewer than 3 ranks."""
    usable = np.flatnonzero(counts_desc >= 2)
    if usable.size == 0 or usable[-1] + 1 < 3:
        return None
    ranks = np.unique(np.rint(np.geomspace(1, usable[-1] + 1, 64)))
    if ranks.size < 3:
        return None
    y = np.log(counts_desc[ranks.astype(int) - 1])
    return float(-np.polyfit(np.log(ranks), y, 1)[0])


def assert_matches_oracle(fs: FeatureStats, want: dict[str, Any], *, check_raw: bool) -> None:
    """Every exact field of ``fs`` equals the oracle's."""
    assert fs.distinct_exact and fs.sample_rate == 1.0 and fs.distinct_rse == 0.0
    assert fs.rows == want["rows"]
    assert fs.rows_present == want["rows_present"]
    assert fs.coverage == pytest.approx(want["coverage"], abs=1e-12)
    assert fs.total_ids == want["total_ids"]
    assert fs.distinct == want["distinct"] == fs.distinct_sample_estimate
    got_heavy = [(h.id_key, h.count, h.first_seen_s, h.last_seen_s) for h in fs.heavy_hitters]
    assert got_heavy == want["heavy"]
    assert (
        all(h.max_undercount == 0 for h in fs.heavy_hitters) and fs.heavy_hitter_max_undercount == 0
    )
    if check_raw:
        assert [h.raw_id for h in fs.heavy_hitters] == want["raw"]
    else:
        assert all(h.raw_id is None for h in fs.heavy_hitters)
    assert (fs.pooling.mean, fs.pooling.p99, fs.pooling.max) == pytest.approx(want["pooling"])
    q = fs.count_quantiles
    assert (q.p50, q.p90, q.p99, q.max) == want["quantiles"]
    assert fs.top1pct_traffic_share == pytest.approx(want["top1"], abs=1e-12)
    assert fs.top10pct_traffic_share == pytest.approx(want["top10"], abs=1e-12)
    if want["zipf"] is None:
        assert fs.zipf_exponent is None
    else:
        assert fs.zipf_exponent == pytest.approx(want["zipf"], abs=1e-9)
    if want["unseen"] is None:
        assert fs.unseen_recent_share is None
    else:
        assert fs.unseen_recent_share == pytest.approx(want["unseen"], abs=1e-12)
    assert (fs.first_seen_s, fs.last_seen_s, fs.log_end_s) == (
        want["first"],
        want["last"],
        want["log_end"],
    )


# ----------------------------------------------------------------------------- hand-made logs


def make_logs(
    tmp_path: Path, seed: int = 0, n: int = 600
) -> list[tuple[Path, pa.Table, str | None]]:
    """Three files with different schemas: (path, table, timestamp column)."""
    rng = np.random.default_rng(seed)

    def zipf(size: int, vocab: int) -> np.ndarray:
        return (rng.zipf(1.3, size) - 1) % vocab

    def with_nulls(values: list[Any], p: float) -> list[Any]:
        return [None if rng.random() < p else v for v in values]

    def id_lists(size: int, vocab: int, as_str: bool) -> list[Any]:
        out: list[Any] = []
        for _ in range(size):
            r = rng.random()
            if r < 0.1:
                out.append(None)
            elif r < 0.2:
                out.append([])
            else:
                items: list[Any] = [
                    (f"t{v}" if as_str else int(v)) for v in zipf(int(rng.integers(1, 6)), vocab)
                ]
                if rng.random() < 0.1:
                    items.insert(int(rng.integers(0, len(items) + 1)), None)
                out.append(items)
        return out

    # Impressions: timestamp[ms] (some null), int + string + list features, a label and a float.
    ts_ms = T0 * 1000 + np.sort(rng.integers(0, 3 * 3_600_000, n))
    impressions = pa.table(
        {
            "ts": pa.array(with_nulls([int(v) for v in ts_ms], 0.05), pa.timestamp("ms", tz="UTC")),
            "ad_id": pa.array(with_nulls([int(v) for v in zipf(n, 200)], 0.1), pa.int64()),
            "ad_domain": pa.array(with_nulls([f"d{v}.com" for v in zipf(n, 50)], 0.2), pa.string()),
            "hist": pa.array(id_lists(n, 80, False), pa.list_(pa.int64())),
            "tags": pa.array(id_lists(n, 30, True), pa.list_(pa.string())),
            "click": pa.array(rng.integers(0, 2, n), pa.int8()),
            "price": pa.array(rng.random(n)),
        }
    )
    # Requests: int epoch seconds, a narrower int type, the shared ad_id and tags features.
    m = n // 2
    requests = pa.table(
        {
            "ts": pa.array(T0 + 3 * 3_600 + np.sort(rng.integers(0, 7_200, m)), pa.int64()),
            "user_id": pa.array(zipf(m, 40).astype(np.int32)),
            "ad_id": pa.array(zipf(m, 200), pa.int64()),
            "tags": pa.array(id_lists(m, 30, True), pa.large_list(pa.large_string())),
        }
    )
    # A file without a timestamp, with uint64 ids (some beyond 2**63).
    big = np.array([2**63 + 5, 7, 2**64 - 1, 7], dtype=np.uint64)
    untimed = pa.table({"ad_id": pa.array(np.concatenate([big, zipf(96, 200).astype(np.uint64)]))})
    out = []
    for name, table, ts_col in (
        ("impressions", impressions, "ts"),
        ("requests", requests, "ts"),
        ("untimed", untimed, None),
    ):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path, row_group_size=97)
        out.append((path, table, ts_col))
    return out


EXPECTED_KINDS = {
    "ad_id": (IdKind.INT, False),
    "ad_domain": (IdKind.STRING, False),
    "hist": (IdKind.INT, True),
    "tags": (IdKind.STRING, True),
    "user_id": (IdKind.INT, False),
}


@pytest.mark.parametrize("batch_rows", [64, 100_000])
def test_every_exact_field_matches_the_oracle(tmp_path: Path, batch_rows: int) -> None:
    logs = make_logs(tmp_path)
    config = StatsConfig(heavy_hitters=7, recent_window_s=WINDOW_S, batch_rows=batch_rows)
    report = compute_stats([p for p, _, _ in logs], config)
    assert sorted(report.features) == sorted(EXPECTED_KINDS)  # roles: click label, price dense
    files = [(t, ts) for _, t, ts in logs]
    for name, fs in report.features.items():
        assert (fs.id_kind, fs.multi_hot) == EXPECTED_KINDS[name]
        want = oracle_feature(files, name, 7, WINDOW_S)
        assert_matches_oracle(fs, want, check_raw=fs.id_kind is IdKind.STRING)
    # Files with different schemas: rows count only the files that have the column.
    assert report.features["user_id"].rows == logs[1][1].num_rows
    assert report.features["ad_id"].rows == sum(t.num_rows for _, t, _ in logs)
    assert [i.rows for i in report.inputs] == [t.num_rows for _, t, _ in logs]


def test_untimed_logs_give_null_time_fields(tmp_path: Path) -> None:
    path = tmp_path / "criteo.parquet"
    pq.write_table(pa.table({"C1": pa.array([3, 3, 4, None], pa.int64())}), path)
    fs = compute_stats([path]).features["C1"]
    assert fs.unseen_recent_share is None
    assert (fs.first_seen_s, fs.last_seen_s, fs.log_end_s) == (None, None, None)
    assert [(h.id_key, h.count, h.first_seen_s) for h in fs.heavy_hitters] == [
        (3, 2, None),
        (4, 1, None),
    ]
    assert fs.coverage == 0.75


def test_explicit_features_include_non_sparse_roles_and_dictionary_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "request_id": pa.array([10, 11, 11, 12], pa.int64()),  # role KEY, id-typed
            "cat": pa.array(["a", "b", None, "a"]).dictionary_encode(),
            "ts": pa.array([T0, T0 + 10, T0 + 20, T0 + 30], pa.timestamp("s")),
        }
    )
    path = tmp_path / "x.parquet"
    pq.write_table(table, path)
    report = compute_stats([path], StatsConfig(features=("request_id", "cat"), heavy_hitters=3))
    assert sorted(report.features) == ["cat", "request_id"]
    cat = report.features["cat"]
    assert cat.id_kind is IdKind.STRING
    assert [(h.id_key, h.count, h.raw_id) for h in cat.heavy_hitters] == [
        (oracle_key("a"), 2, "a"),
        (oracle_key("b"), 1, "b"),
    ]
    assert cat.heavy_hitters[0].first_seen_s == T0 and cat.heavy_hitters[0].last_seen_s == T0 + 30
    assert report.features["request_id"].heavy_hitters[0].id_key == 11


def test_unseen_recent_share_and_times_on_a_tiny_case(tmp_path: Path) -> None:
    # id 1 last seen at +100 s, id 2 at +5000 s, id 3 at +7200 s; the logs end at +7200 s.
    table = pa.table(
        {
            "ts": pa.array([T0, T0 + 100, T0 + 5_000, T0 + 7_200, T0 + 7_200], pa.int64()),
            "x": pa.array([1, 1, 2, 3, None], pa.int64()),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    fs = compute_stats([path], StatsConfig(recent_window_s=3_600)).features["x"]
    assert fs.unseen_recent_share == pytest.approx(1 / 3)  # only id 1 is older than +3600 s
    assert fs.heavy_hitters[0].first_seen_s == T0 and fs.heavy_hitters[0].last_seen_s == T0 + 100
    assert (fs.first_seen_s, fs.last_seen_s, fs.log_end_s) == (T0, T0 + 7_200, T0 + 7_200)
