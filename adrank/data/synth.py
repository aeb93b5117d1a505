"""Synthetic, request-structured ads click logs and feature snapshots (``adrank synth``).

:func:`synthesize` writes, under ``out_dir``::

    impressions.parquet        one row per (request, candidate ad); a request's rows are contiguous
                               and in position order; requests in time order
    requests.parquet           one row per request: context and the user's behaviour sequence, once
                               per request (not repeated per candidate: request-centric ranking)
    snapshots/users.parquet    time-versioned user features (user_id, event_ts, created_ts, ...)
    snapshots/ads.parquet      time-versioned ad features (ad_id, event_ts, created_ts, ...)
    manifest.json              kind "adrank.synth": config, counts, files, the click model

Timestamps are whole seconds in UTC, typed ``timestamp[ms, tz=UTC]`` (Parquet has no seconds
unit). Columns and their roles (recorded in each file's schema metadata, see
:mod:`adrank.data.schema`)::

    impressions  request_id KEY, ts TIMESTAMP, user_id position device hour geo ad_id
                 advertiser_id campaign_id category creative_type SPARSE, ad_quality bid DENSE,
                 label LABEL (int8 click)
    requests     request_id KEY, ts TIMESTAMP, user_id device hour geo SPARSE,
                 user_clicked_ads user_clicked_categories SPARSE (list<int64>, most recent first,
                 at most seq_len, empty for a cold start), user_activity DENSE (behaviour items
                 per day), history_len DENSE (all items so far: the lists hold the last
                 min(history_len, seq_len))

``num_rows`` is met exactly: requests get a uniform number of candidates (5..35 for the default
mean 20) and the last request keeps only what is left. ``position`` is the candidate's rank in
its request, whose candidates arrive sorted by ``ad_quality * bid``. ``request_id`` counts
requests from 0 in time order; ids of users, ads, campaigns and advertisers are hashed
non-negative int64; device (5), hour (24), geo (200), category and creative_type (10) are small
integer codes.
    users        user_id KEY, event_ts TIMESTAMP, created_ts KEY, age_bucket gender segment
                 top_category SPARSE (top_category null without history), activity_7d ctr_7d DENSE
    ads          ad_id KEY, event_ts TIMESTAMP, created_ts KEY, advertiser_id campaign_id category
                 creative_type SPARSE, ad_quality bid ctr_estimate DENSE

The world (Zipf popularity with churning ids, user histories, time) is described in
:mod:`adrank.data.synth_world`, the hidden click model in :mod:`adrank.data.synth_click`.

Snapshots
    One user row per (user, day) on which the user made requests and one ad row per (ad, day) on
    which the ad was a candidate. ``event_ts`` is the day's start plus a hashed offset in
    ``[0, 6 h)``, so requests early in a day sometimes precede that day's snapshot (a point-in-time
    join must then use the previous one); values are those at ``event_ts`` (``activity_7d``: items
    consumed in the 7 days before; ``top_category``: the most frequent category among the last 20
    items; ``ctr_7d = items_7d / (items_7d + 280 * exposure)``; an ad's ``bid`` is the day's bid the
    impressions carry; ``ctr_estimate`` a noisy estimate of the ad's base CTR). ``created_ts`` is
    ``event_ts`` plus 1-900 s. About 1% of rows get a correction: a second row with the same entity
    and ``event_ts``, a ``created_ts`` one to two hours later and different values (users:
    ``activity_7d`` + 1 and ``ctr_7d`` recomputed; ads: ``bid`` x 1.2-1.5, ``ctr_estimate`` x 0.9);
    a join breaks the tie by the later ``created_ts``.

Determinism and memory
    Every value is a hash of ``(seed, stream, key)`` (:mod:`adrank.data.synth_random`), requests
    are generated in chunks of about ``row_group_rows`` impressions, and each chunk is written as a
    row group, so memory is bounded by the chunk size plus one day's set of distinct users and ads
    and a bit per user and ad index (for the distinct counts), never by ``num_rows``. The same
    seed and config give identical tables; the chunk size changes only the row-group layout.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from adrank.data.schema import with_roles
from adrank.data.synth_click import CLICK_MODEL, ground_truth_logit, history_terms, sigmoid
from adrank.data.synth_config import (
    DEFAULT_START_TS_S,
    FEATURE_SPECS,
    SECONDS_PER_DAY,
    SynthConfig,
    candidate_range,
    format_start,
    parse_start,
    validate_synth_config,
)
from adrank.data.synth_random import HashStream
from adrank.data.synth_world import SynthWorld, day_key, recent_matrix
from adrank.errors import AdrankError, InputError
from adrank.formats import atomic_path, parquet_file_fingerprint, write_json_document
from adrank.types import ColumnRole

__all__ = [
    "ADS_SCHEMA",
    "ADS_SNAPSHOT_FILE",
    "IMPRESSIONS_SCHEMA",
    "REQUESTS_SCHEMA",
    "USERS_SCHEMA",
    "DEFAULT_START_TS_S",
    "IMPRESSIONS_FILE",
    "MANIFEST_FILE",
    "REQUESTS_FILE",
    "SYNTH_FORMAT_VERSION",
    "SYNTH_KIND",
    "USERS_SNAPSHOT_FILE",
    "SynthConfig",
    "SynthFile",
    "SynthSummary",
    "parse_start",
    "synthesize",
    "validate_synth_config",
]

logger = logging.getLogger(__name__)

SYNTH_KIND = "adrank.synth"
SYNTH_FORMAT_VERSION = 1
IMPRESSIONS_FILE = "impressions.parquet"
REQUESTS_FILE = "requests.parquet"
USERS_SNAPSHOT_FILE = "snapshots/users.parquet"
ADS_SNAPSHOT_FILE = "snapshots/ads.parquet"
MANIFEST_FILE = "manifest.json"

_RETRIEVAL_PROB = 0.3  # share of a history user's candidates retrieved from history categories
_UNIFORM_AFTER_ROUNDS = 8  # de-duplication rounds with Zipf draws before falling back to uniform
_SNAPSHOT_OFFSET_S = 6 * 3600
_CORRECTION_PROB = 0.01
_CTR_VIEWS_PER_DAY = 40.0
_TOP_CATEGORY_WINDOW = 20
_REQUESTS_BUFFER_VALUES = 1 << 21  # list values buffered before a requests row group is written
_SNAPSHOT_BLOCK = 1 << 18  # snapshot rows computed at a time
_DAYSET_COMPACT = 1 << 22  # buffered (entity) indices of one day before de-duplicating them

# Whole seconds, typed as milliseconds: Parquet has no seconds unit, so a timestamp[s] column
# would come back from disk as timestamp[ms] anyway.
_TS = pa.timestamp("ms", tz="UTC")
_S, _D, _K = ColumnRole.SPARSE, ColumnRole.DENSE, ColumnRole.KEY

IMPRESSIONS_SCHEMA = with_roles(
    pa.schema([
        ("request_id", pa.int64()), ("ts", _TS), ("user_id", pa.int64()),
        ("position", pa.int16()), ("device", pa.int64()), ("hour", pa.int8()),
        ("geo", pa.int64()), ("ad_id", pa.int64()), ("advertiser_id", pa.int64()),
        ("campaign_id", pa.int64()), ("category", pa.int64()), ("creative_type", pa.int64()),
        ("ad_quality", pa.float32()), ("bid", pa.float32()), ("label", pa.int8()),
    ]),
    {"request_id": _K, "ts": ColumnRole.TIMESTAMP, "user_id": _S, "position": _S, "device": _S,
     "hour": _S, "geo": _S, "ad_id": _S, "advertiser_id": _S, "campaign_id": _S, "category": _S,
     "creative_type": _S, "ad_quality": _D, "bid": _D, "label": ColumnRole.LABEL},
)
REQUESTS_SCHEMA = with_roles(
    pa.schema([
        ("request_id", pa.int64()), ("ts", _TS), ("user_id", pa.int64()),
        ("device", pa.int64()), ("hour", pa.int8()), ("geo", pa.int64()),
        ("user_clicked_ads", pa.list_(pa.int64())),
        ("user_clicked_categories", pa.list_(pa.int64())),
        ("user_activity", pa.float32()), ("history_len", pa.int32()),
    ]),
    {"request_id": _K, "ts": ColumnRole.TIMESTAMP, "user_id": _S, "device": _S, "hour": _S,
     "geo": _S, "user_clicked_ads": _S, "user_clicked_categories": _S, "user_activity": _D,
     "history_len": _D},
)
USERS_SCHEMA = with_roles(
    pa.schema([
        ("user_id", pa.int64()), ("event_ts", _TS), ("created_ts", _TS),
        ("age_bucket", pa.int64()), ("gender", pa.int64()), ("segment", pa.int64()),
        ("top_category", pa.int64()), ("activity_7d", pa.float32()), ("ctr_7d", pa.float32()),
    ]),
    {"user_id": _K, "event_ts": ColumnRole.TIMESTAMP, "created_ts": _K, "age_bucket": _S,
     "gender": _S, "segment": _S, "top_category": _S, "activity_7d": _D, "ctr_7d": _D},
)
ADS_SCHEMA = with_roles(
    pa.schema([
        ("ad_id", pa.int64()), ("event_ts", _TS), ("created_ts", _TS),
        ("advertiser_id", pa.int64()), ("campaign_id", pa.int64()), ("category", pa.int64()),
        ("creative_type", pa.int64()), ("ad_quality", pa.float32()), ("bid", pa.float32()),
        ("ctr_estimate", pa.float32()),
    ]),
    {"ad_id": _K, "event_ts": ColumnRole.TIMESTAMP, "created_ts": _K, "advertiser_id": _S,
     "campaign_id": _S, "category": _S, "creative_type": _S, "ad_quality": _D, "bid": _D,
     "ctr_estimate": _D},
)


@dataclass(frozen=True, slots=True)
class SynthFile:
    """One written file.

    Args:
        path: Path relative to the output directory (``/``-separated).
        num_rows: Rows in the file.
        size_bytes: File size.
    """

    path: str
    num_rows: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class SynthSummary:
    """What :func:`synthesize` wrote.

    Args:
        out_dir: The output directory.
        num_rows: Impression rows (equals ``config.num_rows``).
        num_requests: Requests.
        num_clicks: Impressions with ``label == 1``.
        num_users: Distinct users with requests.
        num_ads: Distinct ads among the candidates.
        new_users: Distinct users that entered during the logs (not live on day 0).
        new_ads: Distinct ads that entered during the logs.
        dead_ads: Distinct ads seen that were no longer live on the last day.
        cold_start_requests: Requests whose user had an empty behaviour history.
        user_snapshot_rows: Rows of ``snapshots/users.parquet`` (corrections included).
        ad_snapshot_rows: Rows of ``snapshots/ads.parquet`` (corrections included).
        files: The files written (the manifest last).
        elapsed_s: Wall time of the generation.
    """

    out_dir: Path
    num_rows: int
    num_requests: int
    num_clicks: int
    num_users: int
    num_ads: int
    new_users: int
    new_ads: int
    dead_ads: int
    cold_start_requests: int
    user_snapshot_rows: int
    ad_snapshot_rows: int
    files: tuple[SynthFile, ...]
    elapsed_s: float

    @property
    def ctr(self) -> float:
        """Clicks per impression."""
        return self.num_clicks / self.num_rows if self.num_rows else 0.0

    @property
    def cold_start_share(self) -> float:
        """Share of requests from users without history."""
        return self.cold_start_requests / self.num_requests if self.num_requests else 0.0


# ---- request planning ------------------------------------------------------------------------


def _plan_requests(world: SynthWorld, config: SynthConfig) -> tuple[int, int]:
    """``(num_requests, last_count)``: requests needed for exactly ``num_rows`` impressions.

    Counts are hashed per request index, so they are recomputed (not stored) when generating.
    """
    low, high = candidate_range(config.candidates_mean)
    block = 1 << 20
    before = 0
    k0 = 0
    while True:
        cum = np.cumsum(world.candidate_counts(np.arange(k0, k0 + block), low, high)) + before
        i = int(np.searchsorted(cum, config.num_rows, side="left"))
        if i < block:
            prior = int(cum[i - 1]) if i > 0 else before
            return k0 + i + 1, config.num_rows - prior
        before = int(cum[-1])
        k0 += block


# ---- one chunk of requests -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Chunk:
    impressions: pa.RecordBatch
    requests: pa.RecordBatch
    num_clicks: int
    cold_requests: int
    user_index: np.ndarray
    user_day: np.ndarray
    ad_index: np.ndarray
    ad_day: np.ndarray


class _ChunkMaker:
    """Generates the requests ``[k0, k1)`` and their impressions."""

    def __init__(self, world: SynthWorld, num_requests: int, last_count: int) -> None:
        self.world = world
        self.config = world.config
        self.num_requests = num_requests
        self.last_count = last_count
        self.low, self.high = candidate_range(self.config.candidates_mean)
        self.window = min(CLICK_MODEL.history_window_items, self.config.seq_len)
        seed = self.config.seed
        self._src = HashStream(seed, "cand_source")
        self._pick = HashStream(seed, "cand_pick")
        self._rank = HashStream(seed, "cand_rank")
        self._label = HashStream(seed, "label")

    def make(self, k0: int, k1: int, row0: int) -> _Chunk:
        w, cfg = self.world, self.config
        k = np.arange(k0, k1, dtype=np.int64)
        counts = w.candidate_counts(k, self.low, self.high)
        if k1 == self.num_requests:
            counts[-1] = self.last_count
        ts = w.request_times(k, self.num_requests)
        day = w.day_of(ts)
        hour = ((ts // 3600) % 24).astype(np.int8)
        uidx = w.request_users(k, day)
        user_id = w.user_ids(uidx)
        activity = w.user_activity(uidx)
        birth = w.user_birth_ts(uidx)
        n_hist = w.history_counts(ts, activity, birth)
        hist = w.histories(uidx, n_hist, activity, birth, cfg.seq_len)
        device = w.request_devices(k, uidx)
        geo = w.user_geo(uidx)
        recent = hist.recent_categories(self.window)

        # Candidates: slot keys are global (pre-ordering) row numbers, so content is chunk-free.
        m = int(counts.sum())
        req = np.repeat(np.arange(len(k)), counts)
        slot = row0 + np.arange(m, dtype=np.int64)
        rank = self._candidate_ranks(slot, req, recent, np.minimum(n_hist, self.window))
        imp_day = day[req]
        ad_idx = w.ad_index(rank, imp_day)
        quality = w.ad_quality(ad_idx)
        bid = w.ad_bid(ad_idx, imp_day)
        # Upstream order: a request's candidates arrive sorted by expected value (quality x bid).
        order = np.lexsort((-(quality.astype(np.float64) * bid), req))
        req, ad_idx, rank = req[order], ad_idx[order], rank[order]
        quality, bid = quality[order], bid[order]
        starts = np.cumsum(counts) - counts
        position = (np.arange(m) - np.repeat(starts, counts)).astype(np.int16)
        category = w.rank_category(rank)
        ad_id = w.ad_ids(ad_idx)

        intent, share = history_terms(recent[req], category)
        logit = ground_truth_logit(
            cfg.seed, user_id=user_id[req], ad_id=ad_id, ad_quality=quality, device=device[req],
            hour=hour[req], position=position, intent=intent, history_share=share,
        )
        label = (self._label.uniform(slot) < sigmoid(logit)).astype(np.int8)

        ts_arr = pa.array(ts * 1000, type=pa.int64()).cast(_TS)
        impressions = pa.RecordBatch.from_arrays(
            [
                pa.array(k[req]), ts_arr.take(pa.array(req)), pa.array(user_id[req]),
                pa.array(position), pa.array(device[req]), pa.array(hour[req]),
                pa.array(geo[req]), pa.array(ad_id), pa.array(w.ad_advertiser_ids(ad_idx)),
                pa.array(w.ad_campaign_ids(ad_idx)), pa.array(category),
                pa.array(w.ad_creative_type(ad_idx)), pa.array(quality), pa.array(bid),
                pa.array(label),
            ],
            schema=IMPRESSIONS_SCHEMA,
        )
        offsets = pa.array(hist.offsets.astype(np.int32))
        requests = pa.RecordBatch.from_arrays(
            [
                pa.array(k), ts_arr, pa.array(user_id), pa.array(device), pa.array(hour),
                pa.array(geo),
                pa.ListArray.from_arrays(offsets, pa.array(hist.ad_ids)),
                pa.ListArray.from_arrays(offsets, pa.array(hist.categories)),
                pa.array(activity.astype(np.float32)), pa.array(n_hist.astype(np.int32)),
            ],
            schema=REQUESTS_SCHEMA,
        )
        return _Chunk(
            impressions=impressions,
            requests=requests,
            num_clicks=int(label.sum()),
            cold_requests=int((n_hist == 0).sum()),
            user_index=uidx,
            user_day=day,
            ad_index=ad_idx,
            ad_day=imp_day,
        )

    def _candidate_ranks(
        self, slot: np.ndarray, req: np.ndarray, recent: np.ndarray, recent_len: np.ndarray
    ) -> np.ndarray:
        """Distinct ad ranks per request: Zipf-popular ads, plus ads retrieved from history.

        A history user's candidate comes from the category of a random one of their recent items
        with probability ``_RETRIEVAL_PROB`` (retrieval follows interest), else from global
        popularity. Duplicates within a request are redrawn (salted keys) until none remain.
        """
        w = self.world
        vocab = self.config.ad_vocab

        def draw(idx: np.ndarray, rnd: int) -> np.ndarray:
            key = slot[idx] * 64 + rnd
            u = self._rank.uniform(key)
            if rnd >= _UNIFORM_AFTER_ROUNDS:
                return (u * vocab).astype(np.int64)
            r = req[idx]
            n_recent = recent_len[r]
            from_hist = (n_recent > 0) & (self._src.uniform(key) < _RETRIEVAL_PROB)
            pick = (self._pick.uniform(key) * np.maximum(n_recent, 1)).astype(np.int64)
            cat = recent[r, pick]
            return np.where(from_hist, w.rank_in_category(np.maximum(cat, 0), u),
                            w.popular_ad_ranks(u))

        rank = draw(np.arange(len(slot)), 0)
        rnd = 1
        while True:
            order = np.lexsort((rank, req))
            sr, sq = rank[order], req[order]
            dup = np.zeros(len(order), dtype=bool)
            dup[1:] = (sr[1:] == sr[:-1]) & (sq[1:] == sq[:-1])
            if not dup.any():
                return rank
            idx = order[dup]
            rank[idx] = draw(idx, rnd)
            rnd += 1


# ---- snapshots -------------------------------------------------------------------------------


class _DaySet:
    """Distinct entity indices of the current day; hands back each day once it is complete."""

    def __init__(self) -> None:
        self.day = -1
        self._parts: list[np.ndarray] = []
        self._buffered = 0

    def add(self, index: np.ndarray, day: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add ``index`` seen on ``day`` (non-decreasing); return the days completed by it."""
        done: list[tuple[int, np.ndarray]] = []
        for d in np.unique(day):
            d = int(d)
            if d != self.day:
                if self.day >= 0:
                    done.append((self.day, self.flush()))
                self.day = d
            part = index[day == d]
            self._parts.append(part)
            self._buffered += len(part)
            if self._buffered > _DAYSET_COMPACT:
                self._parts = [np.unique(np.concatenate(self._parts))]
                self._buffered = len(self._parts[0])
        return done

    def flush(self) -> np.ndarray:
        """The current day's distinct indices (sorted); empties the set."""
        out = np.unique(np.concatenate(self._parts)) if self._parts else np.zeros(0, np.int64)
        self._parts, self._buffered = [], 0
        return out


class _Bitset:
    """One bit per entity index: which entities appeared (for exact distinct counts).

    An eighth of a byte per index keeps a 10M-ad universe (plus churn) near 2 MB.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._bits = np.zeros((size + 7) // 8, dtype=np.uint8)

    def add(self, index: np.ndarray) -> None:
        """Mark ``index`` (int64, in ``[0, size)``) as seen."""
        idx = np.unique(index)
        np.bitwise_or.at(self._bits, idx >> 3, np.left_shift(1, idx & 7).astype(np.uint8))

    def count(self, low: int, high: int) -> int:
        """Seen indices in ``[low, high)``."""
        total = 0
        step = 1 << 23  # indices unpacked at a time (1 MiB of bits)
        for b in range(low - low % 8, high, step):
            end = min(high, b + step)
            bits = np.unpackbits(self._bits[b // 8:(end + 7) // 8], bitorder="little")
            first = max(low, b) - b
            total += int(bits[first:end - b].sum())
        return total


def _snapshot_times(
    config: SynthConfig, stream: HashStream, created: HashStream, keys: np.ndarray, day: int
) -> tuple[np.ndarray, np.ndarray]:
    event = (config.start_ts_s + day * SECONDS_PER_DAY
             + (stream.uniform(keys) * _SNAPSHOT_OFFSET_S).astype(np.int64))
    return event, event + 1 + (created.uniform(keys) * 900).astype(np.int64)


def _with_corrections(
    table: dict[str, np.ndarray], corrected: dict[str, np.ndarray], mask: np.ndarray,
    correction_delay_s: np.ndarray, entity: str,
) -> pa.Table:
    """Originals plus correction rows for ``mask``, sorted by (event_ts, entity, created_ts)."""
    cols: dict[str, np.ndarray] = {}
    for name, values in table.items():
        if name == "created_ts":
            extra = values[mask] + correction_delay_s[mask]
        else:
            extra = corrected.get(name, values)[mask]
        cols[name] = np.concatenate([values, extra])
    order = np.lexsort((cols["created_ts"], cols[entity], cols["event_ts"]))
    return pa.table({name: v[order] for name, v in cols.items()})


class _SnapshotMaker:
    """Computes the user and ad snapshot rows of one day."""

    def __init__(self, world: SynthWorld) -> None:
        self.world = world
        self.config = world.config
        seed = self.config.seed
        self._h = {n: HashStream(seed, n) for n in (
            "user_snap_offset", "user_snap_created", "user_corr", "user_corr_delay",
            "ad_snap_offset", "ad_snap_created", "ad_corr", "ad_corr_delay", "ad_corr_bid",
        )}

    def order(self, is_users: bool, index: np.ndarray, day: int) -> np.ndarray:
        """Permutation putting one day's users (or ads) in (event_ts, entity id) order."""
        stream = self._h["user_snap_offset" if is_users else "ad_snap_offset"]
        created = self._h["user_snap_created" if is_users else "ad_snap_created"]
        event, _ = _snapshot_times(self.config, stream, created, day_key(index, day), day)
        ids = self.world.user_ids(index) if is_users else self.world.ad_ids(index)
        return np.lexsort((ids, event))

    def users(self, uidx: np.ndarray, day: int) -> pa.Table:
        w = self.world
        keys = day_key(uidx, day)
        event, created = _snapshot_times(
            self.config, self._h["user_snap_offset"], self._h["user_snap_created"], keys, day
        )
        activity, birth = w.user_activity(uidx), w.user_birth_ts(uidx)
        n_now = w.history_counts(event, activity, birth)
        items_7d = (n_now - w.history_counts(event - 7 * SECONDS_PER_DAY, activity, birth))
        items_7d = items_7d.astype(np.float64)
        views = 7 * _CTR_VIEWS_PER_DAY * w.user_exposure(uidx)
        hist = w.histories(uidx, n_now, activity, birth, _TOP_CATEGORY_WINDOW)
        top = _row_modes(recent_matrix(hist.offsets, hist.categories, _TOP_CATEGORY_WINDOW))
        base = {
            "user_id": w.user_ids(uidx), "event_ts": event, "created_ts": created,
            "age_bucket": w.user_age_bucket(uidx), "gender": w.user_gender(uidx),
            "segment": w.user_segment(uidx), "top_category": top,
            "activity_7d": items_7d.astype(np.float32),
            "ctr_7d": (items_7d / (items_7d + views)).astype(np.float32),
        }
        fixed = {
            "activity_7d": (items_7d + 1.0).astype(np.float32),
            "ctr_7d": ((items_7d + 1.0) / (items_7d + 1.0 + views)).astype(np.float32),
        }
        mask = self._h["user_corr"].uniform(keys) < _CORRECTION_PROB
        delay = 3600 + (self._h["user_corr_delay"].uniform(keys) * 3600).astype(np.int64)
        t = _with_corrections(base, fixed, mask, delay, "user_id")
        top_col = t.column("top_category")
        t = t.set_column(
            t.schema.get_field_index("top_category"), "top_category",
            pa.array(top_col.to_numpy(), mask=top_col.to_numpy() < 0),
        )
        return _cast(t, USERS_SCHEMA)

    def ads(self, aidx: np.ndarray, day: int) -> pa.Table:
        w = self.world
        keys = day_key(aidx, day)
        event, created = _snapshot_times(
            self.config, self._h["ad_snap_offset"], self._h["ad_snap_created"], keys, day
        )
        quality = w.ad_quality(aidx)
        m = CLICK_MODEL
        z = np.log(quality.astype(np.float64)) / m.quality_sigma
        ctr = sigmoid(m.bias + m.quality_weight * z + 0.3 * w.ad_ctr_noise(aidx))
        bid = w.ad_bid(aidx, np.full(len(aidx), day, dtype=np.int64))
        base = {
            "ad_id": w.ad_ids(aidx), "event_ts": event, "created_ts": created,
            "advertiser_id": w.ad_advertiser_ids(aidx), "campaign_id": w.ad_campaign_ids(aidx),
            "category": w.ad_category(aidx), "creative_type": w.ad_creative_type(aidx),
            "ad_quality": quality, "bid": bid, "ctr_estimate": ctr.astype(np.float32),
        }
        bump = 1.2 + 0.3 * self._h["ad_corr_bid"].uniform(keys)
        fixed = {
            "bid": (bid * bump).astype(np.float32),
            "ctr_estimate": (ctr * 0.9).astype(np.float32),
        }
        mask = self._h["ad_corr"].uniform(keys) < _CORRECTION_PROB
        delay = 3600 + (self._h["ad_corr_delay"].uniform(keys) * 3600).astype(np.int64)
        return _cast(_with_corrections(base, fixed, mask, delay, "ad_id"), ADS_SCHEMA)


def _row_modes(matrix: np.ndarray) -> np.ndarray:
    """Most frequent non-negative value per row (ties: the most recent); -1 for none."""
    out = np.full(matrix.shape[0], -1, dtype=np.int64)
    for b in range(0, matrix.shape[0], 1 << 15):
        block = matrix[b:b + (1 << 15)]
        counts = (block[:, :, None] == block[:, None, :]).sum(axis=2)
        counts[block < 0] = 0
        best = counts.argmax(axis=1)
        out[b:b + len(block)] = np.where(
            counts.max(axis=1) > 0, block[np.arange(len(block)), best], -1
        )
    return out


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    arrays = []
    for field in schema:
        col = table.column(field.name)
        if pa.types.is_timestamp(field.type):  # seconds -> the schema's milliseconds
            col = pa.array(col.to_numpy() * 1000, type=pa.int64())
        arrays.append(col.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# ---- writing ---------------------------------------------------------------------------------


class _Sink:
    """A parquet file written to a temporary path and renamed into place by the caller's stack."""

    def __init__(self, stack: contextlib.ExitStack, out_dir: Path, rel: str, schema: pa.Schema,
                 flush_rows: int) -> None:
        self.rel = rel
        self.tmp = stack.enter_context(atomic_path(out_dir / rel, suffix=".parquet"))
        self.writer = stack.enter_context(
            pq.ParquetWriter(self.tmp, schema, compression="zstd", compression_level=1)
        )
        self.flush_rows = flush_rows
        self.num_rows = 0
        self._pending: list[pa.RecordBatch | pa.Table] = []
        self._pending_rows = 0
        self._pending_values = 0

    def add(self, data: pa.RecordBatch | pa.Table, values: int = 0) -> None:
        """Buffer ``data``; write a row group once ``flush_rows`` rows or many list values wait."""
        self._pending.append(data)
        self._pending_rows += data.num_rows
        self._pending_values += values
        self.num_rows += data.num_rows
        if self._pending_rows >= self.flush_rows or self._pending_values >= _REQUESTS_BUFFER_VALUES:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered as one row group."""
        if not self._pending:
            return
        tables = [
            p if isinstance(p, pa.Table) else pa.Table.from_batches([p]) for p in self._pending
        ]
        table = pa.concat_tables(tables).combine_chunks()
        self.writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._pending, self._pending_rows, self._pending_values = [], 0, 0


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(
            "expected a directory for the output, found a file",
            source=str(out_dir),
            hint="pass -o with a new or empty directory",
        )
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(
                "output directory is not empty",
                source=str(out_dir),
                hint="pass an empty or new directory, or --overwrite to replace its files",
            )
        # A stale manifest must never describe a half-replaced set of files.
        (out_dir / MANIFEST_FILE).unlink(missing_ok=True)


def synthesize(
    out_dir: str | Path,
    config: SynthConfig,
    *,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SynthSummary:
    """Generate synthetic request-structured click logs and feature snapshots into ``out_dir``.

    Args:
        out_dir: Output directory (created if missing).
        config: What to generate; validated first.
        overwrite: Replace the files in a non-empty ``out_dir`` instead of refusing.
        progress: Called with the number of impression rows written after each row group.

    Returns:
        Counts, the files written and the elapsed time.

    Raises:
        InputError: A config field is invalid (the message names the flag) or ``out_dir`` is a
            file or not empty (without ``overwrite``).
        AdrankError: Writing failed (disk full, permissions); no output file is left behind.
    """
    validate_synth_config(config)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    started = time.perf_counter()
    snapshots_dir_existed = (out / "snapshots").exists()
    try:
        counts = _generate(out, config, progress)
    except (OSError, pa.ArrowException) as exc:
        _remove_empty_dir(out / "snapshots", snapshots_dir_existed)
        raise AdrankError(
            f"could not write the synthetic logs: {exc}",
            source=str(out),
            hint="check free disk space and write permission; no partial files were left",
        ) from exc
    except BaseException:
        _remove_empty_dir(out / "snapshots", snapshots_dir_existed)
        raise
    files = tuple(
        SynthFile(rel, rows, (out / rel).stat().st_size) for rel, rows in counts.pop("files")
    )
    body: dict[str, Any] = {
        "config": config.to_json(),
        "features": [
            {"name": f.name, "vocab": f.vocab, "zipf_exponent": f.zipf_exponent, "note": f.note}
            for f in FEATURE_SPECS
        ],
        "candidates_per_request": dict(zip(("low", "high"),
                                           candidate_range(config.candidates_mean), strict=True)),
        "counts": counts,
        "files": [
            {"path": f.path, "rows": f.num_rows, "size_bytes": f.size_bytes,
             "fingerprint": parquet_file_fingerprint(out / f.path)}
            for f in files
        ],
        "click_model": CLICK_MODEL.to_json() | {
            "history_window_items_effective": min(CLICK_MODEL.history_window_items, config.seq_len)
        },
        "generator": {
            "retrieval_prob": _RETRIEVAL_PROB,
            "snapshot_offset_s": _SNAPSHOT_OFFSET_S,
            "correction_prob": _CORRECTION_PROB,
            "rows_exact": "num_rows impression rows exactly; the last request may be shorter",
        },
    }
    write_json_document(out / MANIFEST_FILE, SYNTH_KIND, SYNTH_FORMAT_VERSION, body)
    manifest = out / MANIFEST_FILE
    files += (SynthFile(MANIFEST_FILE, 0, manifest.stat().st_size),)
    elapsed = time.perf_counter() - started
    logger.info(
        "synthesized %d impressions in %d requests (%d users, %d ads, CTR %.2f%%) into %s "
        "in %.1f s",
        config.num_rows, counts["requests"], counts["users"], counts["ads"],
        100.0 * counts["clicks"] / config.num_rows, out, elapsed,
    )
    return SynthSummary(
        out_dir=out,
        num_rows=config.num_rows,
        num_requests=counts["requests"],
        num_clicks=counts["clicks"],
        num_users=counts["users"],
        num_ads=counts["ads"],
        new_users=counts["new_users"],
        new_ads=counts["new_ads"],
        dead_ads=counts["dead_ads"],
        cold_start_requests=counts["cold_start_requests"],
        user_snapshot_rows=counts["user_snapshot_rows"],
        ad_snapshot_rows=counts["ad_snapshot_rows"],
        files=files,
        elapsed_s=elapsed,
    )


def _remove_empty_dir(path: Path, existed: bool) -> None:
    if not existed and path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def _chunks(num_requests: int, per_chunk: int) -> Iterator[tuple[int, int]]:
    for k0 in range(0, num_requests, per_chunk):
        yield k0, min(num_requests, k0 + per_chunk)


def _generate(
    out: Path, config: SynthConfig, progress: Callable[[int], None] | None
) -> dict[str, Any]:
    world = SynthWorld(config)
    num_requests, last_count = _plan_requests(world, config)
    per_chunk = max(1, config.row_group_rows // config.candidates_mean)
    logger.info(
        "generating %d impressions in %d requests over %d days from %s (seed %d)",
        config.num_rows, num_requests, config.num_days, format_start(config.start_ts_s),
        config.seed,
    )
    maker = _ChunkMaker(world, num_requests, last_count)
    snaps = _SnapshotMaker(world)
    users_seen = _Bitset(world.user_index_space)
    ads_seen = _Bitset(world.ad_index_space)
    user_days, ad_days = _DaySet(), _DaySet()
    clicks = cold = 0
    rg = config.row_group_rows
    with contextlib.ExitStack() as stack:
        imp = _Sink(stack, out, IMPRESSIONS_FILE, IMPRESSIONS_SCHEMA, 1)
        req = _Sink(stack, out, REQUESTS_FILE, REQUESTS_SCHEMA, rg)
        usr = _Sink(stack, out, USERS_SNAPSHOT_FILE, USERS_SCHEMA, rg)
        ads = _Sink(stack, out, ADS_SNAPSHOT_FILE, ADS_SCHEMA, rg)

        def write_snapshots(sink: _Sink, is_users: bool,
                            done: list[tuple[int, np.ndarray]]) -> None:
            make = snaps.users if is_users else snaps.ads
            for day, day_index in done:
                # Whole-day order first, so blocks of a large day stay in (event_ts, id) order.
                index = day_index[snaps.order(is_users, day_index, day)]
                for b in range(0, len(index), _SNAPSHOT_BLOCK):
                    sink.add(make(index[b:b + _SNAPSHOT_BLOCK], day))

        row0 = 0
        for k0, k1 in _chunks(num_requests, per_chunk):
            chunk = maker.make(k0, k1, row0)
            imp.add(chunk.impressions)
            req.add(chunk.requests, values=len(chunk.requests.column("user_clicked_ads").values))
            row0 += chunk.impressions.num_rows
            clicks += chunk.num_clicks
            cold += chunk.cold_requests
            users_seen.add(chunk.user_index)
            ads_seen.add(chunk.ad_index)
            write_snapshots(usr, True, user_days.add(chunk.user_index, chunk.user_day))
            write_snapshots(ads, False, ad_days.add(chunk.ad_index, chunk.ad_day))
            if progress is not None:
                progress(chunk.impressions.num_rows)
        write_snapshots(usr, True, [(user_days.day, user_days.flush())])
        write_snapshots(ads, False, [(ad_days.day, ad_days.flush())])
        for sink in (imp, req, usr, ads):
            sink.flush()
            sink.writer.close()
        assert row0 == config.num_rows, (row0, config.num_rows)
    last_ad_start = int(world.ad_starts[-1])
    return {
        "rows": config.num_rows,
        "requests": num_requests,
        "clicks": clicks,
        "users": users_seen.count(0, world.user_index_space),
        "ads": ads_seen.count(0, world.ad_index_space),
        "new_users": users_seen.count(config.user_vocab, world.user_index_space),
        "new_ads": ads_seen.count(config.ad_vocab, world.ad_index_space),
        "dead_ads": ads_seen.count(0, last_ad_start),
        "cold_start_requests": cold,
        "user_snapshot_rows": usr.num_rows,
        "ad_snapshot_rows": ads.num_rows,
        "files": [(s.rel, s.num_rows) for s in (imp, req, usr, ads)],
    }
