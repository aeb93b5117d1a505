"""The synthetic log generator: layout, determinism, world properties and the click model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import adrank.data.synth as synth_mod
from adrank.data import SynthConfig, read_roles, synthesize
from adrank.data.synth import (
    ADS_SNAPSHOT_FILE,
    IMPRESSIONS_FILE,
    MANIFEST_FILE,
    REQUESTS_FILE,
    USERS_SNAPSHOT_FILE,
    SynthSummary,
)
from adrank.data.synth_click import CLICK_MODEL, logits_for_tables, sigmoid
from adrank.data.synth_config import SECONDS_PER_DAY, candidate_range, parse_start
from adrank.data.synth_random import HashStream, ZipfSampler, mix_ids
from adrank.data.synth_world import SynthWorld, _AffinePerm, recent_matrix
from adrank.errors import AdrankError, InputError
from adrank.formats import read_json_document
from adrank.types import ColumnRole

PARQUET_FILES = (IMPRESSIONS_FILE, REQUESTS_FILE, USERS_SNAPSHOT_FILE, ADS_SNAPSHOT_FILE)
CONFIG = SynthConfig(num_rows=40_000, seed=5, ad_vocab=100_000, user_vocab=3_000)


@dataclasses.dataclass
class Dataset:
    root: Path
    summary: SynthSummary
    imp: pa.Table
    req: pa.Table
    users: pa.Table
    ads: pa.Table

    def col(self, table: str, name: str) -> np.ndarray:
        return getattr(self, table).column(name).to_numpy()


def _read(root: Path) -> dict[str, pa.Table]:
    return {f: pq.read_table(root / f) for f in PARQUET_FILES}


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("synth")
    summary = synthesize(root, CONFIG)
    t = _read(root)
    return Dataset(root, summary, t[IMPRESSIONS_FILE], t[REQUESTS_FILE],
                   t[USERS_SNAPSHOT_FILE], t[ADS_SNAPSHOT_FILE])


def _ts(table: pa.Table, name: str) -> np.ndarray:
    """A timestamp column as int64 Unix seconds."""
    return table.column(name).cast(pa.timestamp("s", tz="UTC")).cast(pa.int64()).to_numpy()


def _day(table: pa.Table, name: str) -> np.ndarray:
    return (_ts(table, name) - CONFIG.start_ts_s) // SECONDS_PER_DAY


def _request_of_impression(ds: Dataset) -> np.ndarray:
    rid = ds.col("req", "request_id")
    pos = np.searchsorted(rid, ds.col("imp", "request_id"))
    assert np.all(rid[np.minimum(pos, len(rid) - 1)] == ds.col("imp", "request_id"))
    return pos


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    pos = int(label.sum())
    neg = len(label) - pos
    return float((ranks[label == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


# ---- layout ----------------------------------------------------------------------------------


def test_row_and_request_counts(ds: Dataset) -> None:
    assert ds.imp.num_rows == CONFIG.num_rows
    assert ds.summary.num_rows == CONFIG.num_rows
    rid = ds.col("imp", "request_id")
    # Rows of a request are contiguous: ids never decrease, so each id is one run.
    assert np.all(np.diff(rid) >= 0)
    ids, counts = np.unique(rid, return_counts=True)
    assert len(ids) == ds.req.num_rows == ds.summary.num_requests
    assert np.array_equal(ds.col("req", "request_id"), ids)
    low, high = candidate_range(CONFIG.candidates_mean)
    assert counts[:-1].min() >= low and counts.max() <= high
    assert abs(counts.mean() - CONFIG.candidates_mean) < 1.0
    # Positions count 0..n-1 inside each request.
    starts = np.cumsum(counts) - counts
    expect = np.arange(len(rid)) - np.repeat(starts, counts)
    assert np.array_equal(ds.col("imp", "position"), expect)


def test_candidates_of_a_request_are_distinct_ads(ds: Dataset) -> None:
    df = ds.imp.select(["request_id", "ad_id"]).to_pandas()
    assert not df.duplicated().any()


def test_timestamps_never_decrease_and_span_the_days(ds: Dataset) -> None:
    for table in (ds.imp, ds.req):
        ts = _ts(table, "ts")
        assert np.all(np.diff(ts) >= 0)
        assert ts[0] >= CONFIG.start_ts_s
        assert ts[-1] < CONFIG.start_ts_s + CONFIG.num_days * SECONDS_PER_DAY
    day = (_ts(ds.req, "ts") - CONFIG.start_ts_s) // SECONDS_PER_DAY
    per_day = np.bincount(day, minlength=CONFIG.num_days)
    assert per_day.min() > 0.8 * per_day.mean()
    # Diurnal intensity: the evening peak hour has clearly more requests than the early morning.
    hours = np.bincount(ds.col("req", "hour"), minlength=24)
    assert hours[20] > 2 * hours[8]


def test_every_impression_matches_its_request(ds: Dataset) -> None:
    pos = _request_of_impression(ds)
    for name in ("user_id", "device", "hour", "geo"):
        assert np.array_equal(ds.col("req", name)[pos], ds.col("imp", name)), name
    assert np.array_equal(_ts(ds.req, "ts")[pos], _ts(ds.imp, "ts"))
    assert np.array_equal(
        ds.col("req", "hour"), ((_ts(ds.req, "ts") // 3600) % 24).astype(np.int8)
    )


def test_roles_are_recorded_in_every_file(ds: Dataset) -> None:
    roles = {f: read_roles(pq.read_schema(ds.root / f)) for f in PARQUET_FILES}
    assert roles[IMPRESSIONS_FILE]["label"] is ColumnRole.LABEL
    assert roles[IMPRESSIONS_FILE]["request_id"] is ColumnRole.KEY
    assert roles[IMPRESSIONS_FILE]["ad_quality"] is ColumnRole.DENSE
    assert roles[REQUESTS_FILE]["user_clicked_ads"] is ColumnRole.SPARSE
    assert roles[REQUESTS_FILE]["history_len"] is ColumnRole.DENSE
    assert roles[USERS_SNAPSHOT_FILE]["event_ts"] is ColumnRole.TIMESTAMP
    assert roles[USERS_SNAPSHOT_FILE]["created_ts"] is ColumnRole.KEY
    assert roles[ADS_SNAPSHOT_FILE]["ad_id"] is ColumnRole.KEY
    for f, r in roles.items():
        assert set(r) == set(pq.read_schema(ds.root / f).names), f


def test_manifest_describes_the_run(ds: Dataset) -> None:
    doc = read_json_document(ds.root / MANIFEST_FILE, "adrank.synth", (1,))
    assert doc["config"]["num_rows"] == CONFIG.num_rows
    assert doc["config"]["start"] == "2026-01-05T00:00:00Z"
    assert doc["counts"]["requests"] == ds.summary.num_requests
    assert doc["counts"]["clicks"] == int(ds.col("imp", "label").sum())
    files = {f["path"]: f for f in doc["files"]}
    assert set(files) == set(PARQUET_FILES)
    for path in PARQUET_FILES:
        assert files[path]["rows"] == pq.ParquetFile(ds.root / path).metadata.num_rows
        assert files[path]["size_bytes"] == (ds.root / path).stat().st_size
    assert doc["click_model"]["bias"] == CLICK_MODEL.bias
    assert "logit" in doc["click_model"]["formula"]
    exponents = {f["name"]: f["zipf_exponent"] for f in doc["features"]}
    vocabs = [f["vocab"] for f in doc["features"] if f["vocab"]]
    assert exponents["ad_id"] != exponents["user_id"] and min(vocabs) <= 10


def test_impression_row_groups_follow_row_group_rows(tmp_path: Path) -> None:
    synthesize(tmp_path, SynthConfig(num_rows=10_000, ad_vocab=10_000, user_vocab=500,
                                     row_group_rows=2048))
    meta = pq.ParquetFile(tmp_path / IMPRESSIONS_FILE).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(sizes) == 10_000 and len(sizes) >= 4
    # Chunks hold whole requests (row_group_rows / candidates_mean of them): about 2048 rows.
    assert all(0.75 * 2048 < n < 1.25 * 2048 for n in sizes[:-1])


# ---- determinism -----------------------------------------------------------------------------


def test_same_seed_same_tables_whatever_the_chunk_size(tmp_path: Path, ds: Dataset) -> None:
    other = dataclasses.replace(CONFIG, row_group_rows=4096)
    synthesize(tmp_path / "b", other)
    again = _read(tmp_path / "b")
    for f, table in zip(PARQUET_FILES, (ds.imp, ds.req, ds.users, ds.ads), strict=True):
        assert again[f].equals(table), f


def test_another_seed_gives_other_data(tmp_path: Path, ds: Dataset) -> None:
    synthesize(tmp_path, dataclasses.replace(CONFIG, seed=6))
    other = pq.read_table(tmp_path / IMPRESSIONS_FILE)
    assert not other.equals(ds.imp)
    assert len(np.intersect1d(other["user_id"].to_numpy(), ds.col("imp", "user_id"))) == 0


# ---- snapshots -------------------------------------------------------------------------------


def test_user_snapshot_for_every_user_day_with_requests(ds: Dataset) -> None:
    day = (_ts(ds.req, "ts") - CONFIG.start_ts_s) // SECONDS_PER_DAY
    wanted = set(zip(ds.col("req", "user_id").tolist(), day.tolist(), strict=True))
    event = _ts(ds.users, "event_ts")
    snap_day = (event - CONFIG.start_ts_s) // SECONDS_PER_DAY
    have = set(zip(ds.col("users", "user_id").tolist(), snap_day.tolist(), strict=True))
    assert have == wanted
    # event_ts is the day's start plus an offset in [0, 6 h).
    offset = (event - CONFIG.start_ts_s) % SECONDS_PER_DAY
    assert offset.min() >= 0 and offset.max() < 6 * 3600
    assert np.all(np.diff(event) >= 0)


def test_ad_snapshot_for_every_ad_day_with_impressions(ds: Dataset) -> None:
    day = (_ts(ds.imp, "ts") - CONFIG.start_ts_s) // SECONDS_PER_DAY
    wanted = set(zip(ds.col("imp", "ad_id").tolist(), day.tolist(), strict=True))
    snap_day = (_ts(ds.ads, "event_ts") - CONFIG.start_ts_s) // SECONDS_PER_DAY
    have = set(zip(ds.col("ads", "ad_id").tolist(), snap_day.tolist(), strict=True))
    assert have == wanted


def test_some_requests_precede_their_users_same_day_snapshot(ds: Dataset) -> None:
    snaps = ds.users.to_pandas()
    snaps["day"] = _day(ds.users, "event_ts")
    first = snaps.groupby(["user_id", "day"])["event_ts"].min()
    req = ds.req.select(["user_id", "ts"]).to_pandas()
    req["day"] = _day(ds.req, "ts")
    joined = req.join(first, on=["user_id", "day"])
    before = (joined["ts"] < joined["event_ts"]).mean()
    assert 0.01 < before < 0.5


@pytest.mark.parametrize(("table", "entity"), [("users", "user_id"), ("ads", "ad_id")])
def test_corrections_are_later_and_differ(ds: Dataset, table: str, entity: str) -> None:
    df = getattr(ds, table).to_pandas()
    dup = df[df.duplicated([entity, "event_ts"], keep=False)]
    assert len(dup) > 0
    share = len(dup) / 2 / (len(df) - len(dup) / 2)
    assert share < 0.03
    value_cols = [c for c in df.columns if c not in (entity, "event_ts", "created_ts")]
    for _key, group in dup.groupby([entity, "event_ts"]):
        assert len(group) == 2
        first, second = group.sort_values("created_ts").itertuples(index=False)
        assert second.created_ts - first.created_ts >= np.timedelta64(3600, "s")
        assert any(getattr(first, c) != getattr(second, c) for c in value_cols)
    created_lag = (df["created_ts"] - df["event_ts"]).dt.total_seconds()
    assert created_lag.min() >= 1


def test_ad_attributes_agree_across_files(ds: Dataset) -> None:
    day = (_ts(ds.imp, "ts") - CONFIG.start_ts_s) // SECONDS_PER_DAY
    imp = ds.imp.select(["ad_id", "advertiser_id", "campaign_id", "category", "creative_type",
                         "ad_quality", "bid"]).to_pandas()
    imp["day"] = day
    ads = ds.ads.to_pandas()
    ads["day"] = _day(ds.ads, "event_ts")
    originals = ads.sort_values("created_ts").drop_duplicates(["ad_id", "event_ts"], keep="first")
    merged = imp.merge(originals, on=["ad_id", "day"], suffixes=("", "_snap"))
    assert len(merged) == len(imp)
    for c in ("advertiser_id", "campaign_id", "category", "creative_type", "ad_quality", "bid"):
        assert (merged[c] == merged[c + "_snap"]).all(), c
    # Four ads per campaign, eight campaigns per advertiser: ids nest.
    per_campaign = ads.groupby("campaign_id")["advertiser_id"].nunique()
    assert per_campaign.max() == 1


def test_history_ads_have_their_category(ds: Dataset) -> None:
    ads = dict(zip(ds.col("ads", "ad_id").tolist(), ds.col("ads", "category").tolist(),
                   strict=True))
    hist_ads = ds.req.column("user_clicked_ads").combine_chunks().values.to_numpy()
    hist_cat = ds.req.column("user_clicked_categories").combine_chunks().values.to_numpy()
    known = [(a, c) for a, c in zip(hist_ads.tolist(), hist_cat.tolist(), strict=True) if a in ads]
    assert len(known) > 100
    assert all(ads[a] == c for a, c in known)


# ---- churn and popularity --------------------------------------------------------------------


def _popular_ids_by_day(ds: Dataset, day_index: int, min_count: int) -> set[int]:
    day = (_ts(ds.imp, "ts") - CONFIG.start_ts_s) // SECONDS_PER_DAY
    ids, counts = np.unique(ds.col("imp", "ad_id")[day == day_index], return_counts=True)
    return set(ids[counts >= min_count].tolist())


def test_ad_ids_die_and_new_ones_appear(ds: Dataset, tmp_path: Path) -> None:
    last = CONFIG.num_days - 1
    first_day = _popular_ids_by_day(ds, 0, 4)
    last_day = _popular_ids_by_day(ds, last, 4)
    all_first = set(ds.col("imp", "ad_id")[_ts(ds.imp, "ts") < CONFIG.start_ts_s + 86_400].tolist())
    all_last = set(ds.col("imp", "ad_id")[
        _ts(ds.imp, "ts") >= CONFIG.start_ts_s + last * 86_400].tolist())
    dead = len(first_day - all_last) / len(first_day)
    born = len(last_day - all_first) / len(last_day)
    # 3% of the live ads are replaced per day: ~39% of day-0 ads are gone by day 13.
    assert 0.2 < dead < 0.6 and 0.2 < born < 0.6
    assert ds.summary.dead_ads > 0 and ds.summary.new_ads > 0
    # Without churn the same popular ads keep appearing.
    synthesize(tmp_path, dataclasses.replace(CONFIG, ad_churn_per_day=0.0))
    still = pq.read_table(tmp_path / IMPRESSIONS_FILE)
    ts = _ts(still, "ts")
    ids = still["ad_id"].to_numpy()
    first_ids, counts = np.unique(ids[ts < CONFIG.start_ts_s + 86_400], return_counts=True)
    popular = set(first_ids[counts >= 4].tolist())
    later = set(ids[ts >= CONFIG.start_ts_s + last * 86_400].tolist())
    assert len(popular - later) / len(popular) < 0.1


def test_new_users_start_cold(ds: Dataset) -> None:
    assert ds.summary.new_users > 0
    req = ds.req.select(["user_id", "ts", "history_len"]).to_pandas()
    req["day"] = _day(ds.req, "ts")
    first = req.groupby("user_id").first()
    day = first["day"]
    # Users first seen late with no history at all: they joined during the logs.
    assert ((day >= 7) & (first["history_len"] == 0)).sum() > 0


def test_ad_popularity_is_zipf_skewed(ds: Dataset) -> None:
    _ids, counts = np.unique(ds.col("imp", "ad_id"), return_counts=True)
    counts = np.sort(counts)[::-1]
    top = max(1, len(counts) // 100)
    assert counts[:top].sum() / counts.sum() > 0.2
    ranks = np.arange(1, len(counts) + 1)
    sel = (ranks >= 5) & (ranks <= 500)
    slope = np.polyfit(np.log(ranks[sel]), np.log(counts[sel]), 1)[0]
    assert -1.3 < slope < -0.5


@pytest.mark.parametrize(("vocab", "exponent"), [(200, 1.2), (10_000_000, 0.95), (5000, 1.0)])
def test_zipf_sampler_matches_its_distribution(vocab: int, exponent: float) -> None:
    sampler = ZipfSampler(vocab, exponent)
    ranks = sampler.ranks(HashStream(0, "t").uniform(np.arange(400_000)))
    assert ranks.min() >= 0 and ranks.max() < vocab
    counts = np.bincount(ranks[ranks < 50], minlength=50)
    expect = sampler.probabilities(np.arange(50)) * len(ranks)
    assert np.all(np.abs(counts - expect) < 5 * np.sqrt(expect) + 5)
    # The tail (past the exact 65,536-rank table) gets its share too.
    if vocab > 1 << 16:
        tail = sampler.probabilities(np.arange(1 << 16, vocab, 997)).sum() * 997
        got = (ranks >= 1 << 16).mean()
        assert abs(got - tail) < 0.01
    fit = np.polyfit(np.log(np.arange(1, 21)), np.log(counts[:20]), 1)[0]
    assert abs(fit + exponent) < 0.1
    if vocab <= 10**6:
        assert abs(sampler.probabilities(np.arange(vocab)).sum() - 1.0) < 1e-6


# ---- behaviour sequences ---------------------------------------------------------------------


def test_sequences_grow_consistently_per_user(ds: Dataset) -> None:
    users = ds.col("req", "user_id")
    hist_len = ds.col("req", "history_len")
    seqs = ds.req.column("user_clicked_ads").to_pylist()
    lengths = np.array([len(s) for s in seqs])
    assert np.array_equal(lengths, np.minimum(hist_len, CONFIG.seq_len))
    checked = 0
    last_seen: dict[int, int] = {}
    for j, user in enumerate(users.tolist()):
        i = last_seen.get(user)
        last_seen[user] = j
        if i is None:
            continue
        grown = int(hist_len[j] - hist_len[i])
        assert grown >= 0
        overlap = min(len(seqs[i]), len(seqs[j]) - grown)
        if overlap > 0:
            # Most recent first: the earlier sequence reappears after the newer items.
            assert seqs[j][grown:grown + overlap] == seqs[i][:overlap]
            checked += 1
    assert checked > 100


def test_cold_start_requests_have_empty_sequences(ds: Dataset) -> None:
    hist_len = ds.col("req", "history_len")
    cold = hist_len == 0
    assert 0 < cold.sum() == ds.summary.cold_start_requests
    ads = ds.req.column("user_clicked_ads").to_pylist()
    cats = ds.req.column("user_clicked_categories").to_pylist()
    assert all(len(ads[i]) == 0 and len(cats[i]) == 0 for i in np.flatnonzero(cold))
    assert all(len(a) == len(c) for a, c in zip(ads, cats, strict=True))
    assert max(len(a) for a in ads) == CONFIG.seq_len


# ---- click model -----------------------------------------------------------------------------


def test_ctr_in_range(ds: Dataset) -> None:
    assert 0.02 <= ds.summary.ctr <= 0.05
    assert ds.summary.ctr == pytest.approx(ds.col("imp", "label").mean())


def test_labels_follow_the_documented_model(ds: Dataset) -> None:
    p = sigmoid(logits_for_tables(ds.imp, ds.req, CONFIG.seed))
    y = ds.col("imp", "label")
    assert abs(p.mean() - y.mean()) < 0.004
    edges = np.quantile(p, [0.5, 0.8, 0.95])
    bucket = np.digitize(p, edges)
    for b in range(4):
        m = bucket == b
        se = np.sqrt(p[m].mean() * (1 - p[m].mean()) / m.sum())
        assert abs(y[m].mean() - p[m].mean()) < 4 * se + 0.002, b
    # A wrong seed means wrong latents: the true model separates clicks better.
    wrong = sigmoid(logits_for_tables(ds.imp, ds.req, CONFIG.seed + 1))
    assert _auc(p, y) > _auc(wrong, y) + 0.02


def test_intent_match_raises_ctr(ds: Dataset) -> None:
    pos = _request_of_impression(ds)
    cats = ds.req.column("user_clicked_categories").to_pylist()
    last = np.array([c[0] if c else -1 for c in cats])[pos]
    y = ds.col("imp", "label")
    intent = last == ds.col("imp", "category")
    assert intent.sum() > 500
    assert y[intent].mean() > 2.5 * y[~intent].mean()


def test_history_terms_help_only_users_with_history(ds: Dataset) -> None:
    y = ds.col("imp", "label")
    hist_len = ds.col("req", "history_len")[_request_of_impression(ds)]
    full = logits_for_tables(ds.imp, ds.req, CONFIG.seed)
    no_hist_model = dataclasses.replace(CLICK_MODEL, intent_weight=0.0, history_weight=0.0)
    small = logits_for_tables(ds.imp, ds.req, CONFIG.seed, no_hist_model)
    long = hist_len >= 20
    assert _auc(full[long], y[long]) > _auc(small[long], y[long]) + 0.015
    cold = hist_len == 0
    assert np.array_equal(full[cold], small[cold])


def test_logits_need_matching_requests(ds: Dataset) -> None:
    with pytest.raises(InputError) as err:
        logits_for_tables(ds.imp, ds.req.slice(0, 10), CONFIG.seed)
    assert err.value.source == "impressions:request_id"
    with pytest.raises(InputError) as err:
        logits_for_tables(ds.imp.drop_columns(["hour"]), ds.req, CONFIG.seed)
    assert "hour" in str(err.value)


# ---- validation and failure ------------------------------------------------------------------


def test_bad_config_reports_every_flag(tmp_path: Path) -> None:
    bad = SynthConfig(num_rows=0, num_days=0, seq_len=0, ad_churn_per_day=1.5, ad_vocab=50)
    with pytest.raises(InputError) as err:
        synthesize(tmp_path / "out", bad)
    assert err.value.exit_code == 2
    text = str(err.value)
    for flag in ("--rows", "--days", "--seq-len", "--ad-churn", "--ad-vocab"):
        assert flag in text, flag
    assert not (tmp_path / "out").exists()


def test_too_many_categories_for_the_ads(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        synthesize(tmp_path, SynthConfig(ad_vocab=1000, num_categories=2000))
    assert "--categories" in str(err.value.source)


def test_bad_start_names_the_flag() -> None:
    with pytest.raises(InputError) as err:
        parse_start("next tuesday")
    assert err.value.source == "--start"
    assert parse_start("2026-01-05") == 1_767_571_200
    assert parse_start("2026-01-05T01:00:00+01:00") == 1_767_571_200


def test_non_empty_out_dir_is_refused_unless_overwrite(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    small = SynthConfig(num_rows=2_000, ad_vocab=10_000, user_vocab=200)
    with pytest.raises(InputError) as err:
        synthesize(tmp_path, small)
    assert err.value.source == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    summary = synthesize(tmp_path, small, overwrite=True)
    assert summary.num_rows == 2_000 and (tmp_path / "notes.txt").exists()
    with pytest.raises(InputError):
        synthesize(tmp_path / "notes.txt", small)


class _Boom(RuntimeError):
    pass


@pytest.mark.parametrize("exc", [_Boom("disk on fire"), OSError(28, "No space left on device")])
def test_failed_generation_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    calls = {"n": 0}
    real = synth_mod._ChunkMaker.make

    def failing(self: Any, k0: int, k1: int, row0: int) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise exc
        return real(self, k0, k1, row0)

    monkeypatch.setattr(synth_mod._ChunkMaker, "make", failing)
    out = tmp_path / "out"
    config = SynthConfig(num_rows=20_000, ad_vocab=10_000, user_vocab=500, row_group_rows=2048)
    with pytest.raises((_Boom, AdrankError)) as err:
        synthesize(out, config)
    if isinstance(exc, OSError):
        assert isinstance(err.value, AdrankError) and err.value.exit_code == 1
        assert err.value.__cause__ is exc
    assert calls["n"] == 3
    assert [p for p in out.rglob("*") if p.is_file()] == []
    assert not (out / "snapshots").exists()


def test_failed_overwrite_keeps_no_stale_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = SynthConfig(num_rows=2_000, ad_vocab=10_000, user_vocab=200)
    synthesize(tmp_path, small)
    before = pq.read_table(tmp_path / IMPRESSIONS_FILE)

    def failing(self: Any, k0: int, k1: int, row0: int) -> Any:
        raise _Boom("mid-way")

    monkeypatch.setattr(synth_mod._ChunkMaker, "make", failing)
    with pytest.raises(_Boom):
        synthesize(tmp_path, dataclasses.replace(small, seed=9), overwrite=True)
    assert not (tmp_path / MANIFEST_FILE).exists()
    assert pq.read_table(tmp_path / IMPRESSIONS_FILE).equals(before)
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_progress_reports_every_row(tmp_path: Path) -> None:
    seen: list[int] = []
    synthesize(tmp_path, SynthConfig(num_rows=9_999, ad_vocab=10_000, user_vocab=300,
                                     row_group_rows=2048), progress=seen.append)
    assert sum(seen) == 9_999 and len(seen) > 1


# ---- building blocks -------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=200, unique=True), st.integers(0, 99))
def test_mix_ids_is_injective_and_non_negative(index: list[int], seed: int) -> None:
    ids = mix_ids(np.array(index, dtype=np.int64), seed, "ad_id")
    assert len(np.unique(ids)) == len(index) and ids.min() >= 0


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 10**9), st.integers(0, 2**64 - 1))
def test_affine_perm_round_trips(size: int, key: int) -> None:
    perm = _AffinePerm(size, key)
    r = np.unique(np.array([0, size - 1, size // 2, size // 3], dtype=np.int64))
    assert np.array_equal(perm.inverse(perm.forward(r)), r)
    if size <= 1000:
        assert np.array_equal(np.sort(perm.forward(np.arange(size))), np.arange(size))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 9), max_size=8), max_size=12), st.integers(1, 5))
def test_recent_matrix_matches_a_loop(lists: list[list[int]], window: int) -> None:
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(x) for x in lists])
    values = np.array([v for x in lists for v in x], dtype=np.int64)
    got = recent_matrix(offsets, values, window)
    for i, x in enumerate(lists):
        expect = (x[:window] + [-1] * window)[:window]
        assert got[i].tolist() == expect


def test_hash_streams_are_deterministic_and_distinct() -> None:
    keys = np.arange(100_000)
    a = HashStream(1, "x").uniform(keys)
    assert np.array_equal(a, HashStream(1, "x").uniform(keys))
    b = HashStream(1, "y").uniform(keys)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02
    assert 0.49 < a.mean() < 0.51 and a.min() >= 0 and a.max() < 1
    z = HashStream(1, "z").normals(keys, 4)
    assert np.all(np.abs(z.mean(axis=0)) < 0.02) and np.all(np.abs(z.std(axis=0) - 1) < 0.02)
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 0.02


def test_world_churn_window_keeps_ranks_live() -> None:
    world = SynthWorld(CONFIG)
    ranks = np.arange(CONFIG.ad_vocab)
    for day in (0, 5, CONFIG.num_days - 1):
        idx = world.ad_index(ranks, np.full(len(ranks), day))
        start = world.ad_starts[day]
        assert idx.min() == start and idx.max() == start + CONFIG.ad_vocab - 1
        assert len(np.unique(idx)) == CONFIG.ad_vocab
        assert np.array_equal(world.ad_rank(idx), ranks)
    # The ads that die on day 1 hold ranks spread over the whole popularity range.
    dying = np.arange(world.ad_starts[0], world.ad_starts[1])
    assert np.median(world.ad_rank(dying)) > CONFIG.ad_vocab / 4


def test_manifest_is_json_with_counts(ds: Dataset) -> None:
    doc = json.loads((ds.root / MANIFEST_FILE).read_text())
    assert doc["kind"] == "adrank.synth" and doc["format_version"] == 1
    assert doc["counts"]["cold_start_requests"] == ds.summary.cold_start_requests


def test_snapshots_stay_sorted_across_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SynthConfig(num_rows=10_000, ad_vocab=10_000, user_vocab=500)
    synthesize(tmp_path / "whole", config)
    monkeypatch.setattr(synth_mod, "_SNAPSHOT_BLOCK", 64)
    synthesize(tmp_path / "blocks", config)
    for f, entity in ((ADS_SNAPSHOT_FILE, "ad_id"), (USERS_SNAPSHOT_FILE, "user_id")):
        t = pq.read_table(tmp_path / "blocks" / f)
        assert t.equals(pq.read_table(tmp_path / "whole" / f)), f
        order = np.lexsort((_ts(t, "created_ts"), t[entity].to_numpy(), _ts(t, "event_ts")))
        assert np.array_equal(order, np.arange(t.num_rows)), f


def test_a_handful_of_rows(tmp_path: Path) -> None:
    summary = synthesize(tmp_path, SynthConfig(num_rows=3, ad_vocab=1_000, user_vocab=10))
    imp = pq.read_table(tmp_path / IMPRESSIONS_FILE)
    assert imp.num_rows == 3 and summary.num_requests == 1
    assert pq.read_table(tmp_path / USERS_SNAPSHOT_FILE).num_rows >= 1
    assert pq.read_table(tmp_path / ADS_SNAPSHOT_FILE).num_rows >= 3


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5000), st.lists(st.integers(0, 4999), max_size=300), st.data())
def test_bitset_counts_match_a_set(size: int, marks: list[int], data: st.DataObject) -> None:
    marks = [m for m in marks if m < size]
    bits = synth_mod._Bitset(size)
    bits.add(np.array(marks, dtype=np.int64))
    low = data.draw(st.integers(0, size))
    high = data.draw(st.integers(low, size))
    assert bits.count(low, high) == len({m for m in marks if low <= m < high})
