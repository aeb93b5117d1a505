"""The hidden world behind the synthetic logs: time, users, ads, churn and behaviour histories.

Every attribute is a vectorised, deterministic function of ``(seed, entity index)`` (see
:mod:`adrank.data.synth_random`), so the world is never materialised: a chunk of requests asks for
the attributes of the entities it touches.

Entities and churn
    Ads and users live in index spaces ``0, 1, 2, ...``. On day ``d`` the live entities are the
    window ``[start_d, start_d + V)`` with ``start_d = floor(d * churn * V)``. A popularity rank
    ``r`` (Zipf) maps to the one live index ``i`` with ``i mod V == perm(r)``, where ``perm(r) =
    (a r + b) mod V`` is a hashed affine bijection (so the ids dying each day hold ranks spread
    over the whole popularity range); when an index leaves the window its rank passes to a new
    index, so popularity stays stationary while ids churn. Indices
    that left the window never return (dead rows for pruning); users entering it are new (cold
    start). Indices map to public ids through keyed bijections (:func:`mix_ids`).

Ads
    ``category = rank mod C`` (so the ads of category ``c`` are the ranks ``c + C k``);
    ``campaign = i // 4`` and ``advertiser = campaign // 8`` (hashed to ids); ``creative_type`` Zipf
    over 10; ``ad_quality = exp(0.5 g)`` and ``bid = 0.5 exp(0.6 g') exp(0.1 g_day)`` with hashed
    standard normals ``g``.

Users
    ``activity`` (behaviour items per day) is lognormal (median 0.6, clipped to [0.01, 200]).
    Users live at the start were born ``age`` days earlier (exponential, mean 60 days, at most
    365); users entering the window on day ``d`` are born at that day's start. A user has consumed
    ``n_u(t) = floor(activity * (t - birth) / 1 day)`` items by time ``t``. Item ``n`` is an ad from
    one of the user's three preferred categories with probability 0.7 (weights 0.5/0.3/0.2),
    otherwise a Zipf-popular ad; it is an ad live on the day it was consumed. A request's behaviour
    sequence is items ``n_u(t) - 1`` down to ``max(0, n_u(t) - seq_len)``, most recent first, so a
    user's sequences are consistent across requests and grow over time. ``n_u(t) == 0`` is a cold
    start.

Time
    Requests are spread over ``num_days`` with a diurnal intensity ``1 + 0.6 cos(2 pi (h - 20) /
    24)`` per UTC hour ``h``: request ``k`` of ``R`` is at the inverse CDF of ``(k + u_k) / R``, so
    timestamps never decrease.
"""

from __future__ import annotations

import math

import numpy as np

from adrank.data.synth_config import (
    ADS_PER_CAMPAIGN,
    CAMPAIGNS_PER_ADVERTISER,
    SECONDS_PER_DAY,
    SynthConfig,
    feature_spec,
    zipf_exponent,
)
from adrank.data.synth_random import HashStream, ZipfSampler, mix_ids, stream_key

__all__ = ["QUALITY_SIGMA", "History", "SynthWorld", "day_key", "recent_matrix"]

_ITEM_BITS = 24  # item number inside a (user index, item) hash key
_DAY_BITS = 12  # day inside an (entity index, day) hash key
_MAX_ITEMS = (1 << _ITEM_BITS) - 1
_PREF_PROB = 0.7
_PREF_WEIGHTS_CUM = np.array([0.5, 0.8, 1.0])
_NUM_PREFS = 3
_PRIMARY_DEVICE_PROB = 0.85
_ACTIVITY_MEDIAN_PER_DAY = 0.6
_ACTIVITY_SIGMA = 1.1
_AGE_MEAN_DAYS = 60.0
_AGE_MAX_DAYS = 365.0
_QUALITY_SIGMA = 0.5
_DIURNAL_AMPLITUDE = 0.6
_DIURNAL_PEAK_HOUR = 20


class History:
    """Behaviour sequences of a batch of requests, flattened (most recent item first).

    ``offsets`` has one more entry than requests; request ``j``'s items are
    ``[offsets[j], offsets[j + 1])`` of ``ad_ids`` / ``categories``. ``count`` is the full
    ``n_u(t)`` (may exceed the kept length).

    Example: two requests with ``max_len = 2``; the first user has consumed 4 items (items 3 and 2
    are kept, most recent first), the second is a cold start::

        offsets    = [0, 2, 2]
        ad_ids     = [ad(item 3), ad(item 2)]
        categories = [cat(item 3), cat(item 2)]
        count      = [4, 0]
    """

    __slots__ = ("offsets", "ad_ids", "categories", "count")

    def __init__(
        self, offsets: np.ndarray, ad_ids: np.ndarray, categories: np.ndarray, count: np.ndarray
    ) -> None:
        self.offsets = offsets
        self.ad_ids = ad_ids
        self.categories = categories
        self.count = count

    def recent_categories(self, window: int) -> np.ndarray:
        """The categories of each request's ``window`` most recent items, ``-1``-padded.

        Returns:
            int64 array of shape ``(requests, window)``; column 0 is the most recent item.
        """
        return recent_matrix(self.offsets, self.categories, window)


def recent_matrix(offsets: np.ndarray, values: np.ndarray, window: int) -> np.ndarray:
    """First ``window`` values of each list (given by ``offsets``) as a ``-1``-padded matrix."""
    n = len(offsets) - 1
    lengths = np.minimum(np.diff(offsets), window)
    out = np.full((n, window), -1, dtype=np.int64)
    rows = np.repeat(np.arange(n), lengths)
    cols = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = values[np.repeat(offsets[:-1], lengths) + cols]
    return out


class _AffinePerm:
    """The bijection ``r -> (a r + b) mod V`` on ``[0, V)`` with ``gcd(a, V) == 1``.

    Popularity ranks pass through it before the churn window, so the ids that die each day hold
    ranks spread over the whole popularity range (not the most popular ones first).
    """

    __slots__ = ("size", "_a", "_a_inv", "_b")

    def __init__(self, size: int, key: int) -> None:
        self.size = size
        a = (key % size) | 1 if size > 2 else 1
        while math.gcd(a, size) != 1:
            a += 2
        self._a = a % size if size > 1 else 0
        self._a_inv = pow(a, -1, size) if size > 1 else 0
        self._b = (key >> 32) % size

    def forward(self, rank: np.ndarray) -> np.ndarray:
        """Slot of each rank (int64)."""
        return np.mod(np.asarray(rank, dtype=np.int64) * self._a + self._b, self.size)

    def inverse(self, slot: np.ndarray) -> np.ndarray:
        """Rank of each slot (int64)."""
        shifted = np.mod(np.asarray(slot, dtype=np.int64) - self._b, self.size)
        return np.mod(shifted * self._a_inv, self.size)


class SynthWorld:
    """Deterministic attributes of time, users and ads for one :class:`SynthConfig`.

    Args:
        config: A validated config.
    """

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        seed = config.seed
        self._h = {
            name: HashStream(seed, name)
            for name in (
                "req_candidates", "req_time", "req_user", "req_device_pick", "req_device",
                "user_activity", "user_age", "user_geo", "user_device", "user_pref",
                "user_age_bucket", "user_gender", "user_segment", "user_exposure",
                "item_pref", "item_which", "item_rank",
                "ad_creative", "ad_quality", "ad_bid", "ad_bid_day", "ad_ctr",
            )
        }
        days = np.arange(config.num_days, dtype=np.float64)
        self.ad_starts = np.floor(days * config.ad_churn_per_day * config.ad_vocab).astype(np.int64)
        self.user_starts = np.floor(
            days * config.user_churn_per_day * config.user_vocab
        ).astype(np.int64)
        self.ad_index_space = int(self.ad_starts[-1]) + config.ad_vocab
        self.user_index_space = int(self.user_starts[-1]) + config.user_vocab
        self._ad_perm = _AffinePerm(config.ad_vocab, stream_key(seed, "ad_slots"))
        self._user_perm = _AffinePerm(config.user_vocab, stream_key(seed, "user_slots"))
        self._ad_zipf = ZipfSampler.get(config.ad_vocab, zipf_exponent("ad_id"))
        self._user_zipf = ZipfSampler.get(config.user_vocab, zipf_exponent("user_id"))
        self._cat_zipf = ZipfSampler.get(config.num_categories, zipf_exponent("category"))
        self.ads_per_category = config.ad_vocab // config.num_categories
        self._in_cat_zipf = ZipfSampler.get(self.ads_per_category, zipf_exponent("ad_in_category"))
        self._hour_cum = self._diurnal_table()

    # ---- time -------------------------------------------------------------------------------

    def _diurnal_table(self) -> np.ndarray:
        cfg = self.config
        num_hours = cfg.num_days * 24
        first_hour = cfg.start_ts_s // 3600
        hour_of_day = (first_hour + np.arange(num_hours)) % 24
        weight = 1.0 + _DIURNAL_AMPLITUDE * np.cos(
            2.0 * math.pi * (hour_of_day - _DIURNAL_PEAK_HOUR) / 24.0
        )
        return np.concatenate([[0.0], np.cumsum(weight)])

    def request_times(self, request_index: np.ndarray, num_requests: int) -> np.ndarray:
        """Timestamps (int64 Unix seconds) of requests ``request_index`` out of ``num_requests``.

        Non-decreasing in the request index: request ``k`` sits at the diurnal inverse CDF of
        ``(k + u_k) / num_requests``.
        """
        q = (request_index + self._h["req_time"].uniform(request_index)) / num_requests
        cum = self._hour_cum
        target = q * cum[-1]
        slot = np.clip(np.searchsorted(cum, target, side="right") - 1, 0, len(cum) - 2)
        frac = (target - cum[slot]) / (cum[slot + 1] - cum[slot])
        offset_s = np.floor((slot + frac) * 3600.0).astype(np.int64)
        offset_s = np.minimum(offset_s, self.config.num_days * SECONDS_PER_DAY - 1)
        return self.config.start_ts_s + offset_s

    def day_of(self, ts_s: np.ndarray) -> np.ndarray:
        """Day number since the start (int64), clipped to ``[0, num_days)``."""
        day = (np.asarray(ts_s) - self.config.start_ts_s) // SECONDS_PER_DAY
        return np.clip(day, 0, self.config.num_days - 1)

    def candidate_counts(self, request_index: np.ndarray, low: int, high: int) -> np.ndarray:
        """Candidates of each request, uniform on ``[low, high]`` (int64)."""
        return low + self._h["req_candidates"].integers(request_index, high - low + 1)

    # ---- churn windows ----------------------------------------------------------------------

    @staticmethod
    def _window_index(
        rank: np.ndarray, day: np.ndarray, starts: np.ndarray, perm: _AffinePerm
    ) -> np.ndarray:
        start = starts[day]
        return start + np.mod(perm.forward(rank) - start, perm.size)

    def ad_index(self, rank: np.ndarray, day: np.ndarray) -> np.ndarray:
        """The live ad index holding popularity ``rank`` on ``day``."""
        return self._window_index(rank, day, self.ad_starts, self._ad_perm)

    def user_index(self, rank: np.ndarray, day: np.ndarray) -> np.ndarray:
        """The live user index holding popularity ``rank`` on ``day``."""
        return self._window_index(rank, day, self.user_starts, self._user_perm)

    def ad_rank(self, ad_index: np.ndarray) -> np.ndarray:
        """Popularity rank of each ad index (inverse of :meth:`ad_index` on a live day)."""
        return self._ad_perm.inverse(np.mod(ad_index, self.config.ad_vocab))

    # ---- requests ---------------------------------------------------------------------------

    def request_users(self, request_index: np.ndarray, day: np.ndarray) -> np.ndarray:
        """User index of each request (Zipf popularity, live on the request's day)."""
        rank = self._user_zipf.ranks(self._h["req_user"].uniform(request_index))
        return self.user_index(rank, day)

    def request_devices(self, request_index: np.ndarray, user_index: np.ndarray) -> np.ndarray:
        """Device of each request: the user's primary device 85% of the time, else a Zipf draw."""
        spec = feature_spec("device")
        assert spec.vocab is not None and spec.zipf_exponent is not None
        own = self._h["req_device_pick"].uniform(request_index) < _PRIMARY_DEVICE_PROB
        other = ZipfSampler.get(spec.vocab, spec.zipf_exponent).ranks(
            self._h["req_device"].uniform(request_index)
        )
        return np.where(own, self.user_primary_device(user_index), other)

    # ---- users ------------------------------------------------------------------------------

    def user_ids(self, user_index: np.ndarray) -> np.ndarray:
        """Public user ids (distinct non-negative int64)."""
        return mix_ids(user_index, self.config.seed, "user_id")

    def user_activity(self, user_index: np.ndarray) -> np.ndarray:
        """Behaviour items per day (float64, lognormal)."""
        g = self._h["user_activity"].normal(user_index)
        return np.clip(_ACTIVITY_MEDIAN_PER_DAY * np.exp(_ACTIVITY_SIGMA * g), 0.01, 200.0)

    def user_birth_ts(self, user_index: np.ndarray) -> np.ndarray:
        """When each user started (float64 Unix seconds)."""
        cfg = self.config
        u = self._h["user_age"].uniform(user_index)
        age_days = np.minimum(-_AGE_MEAN_DAYS * np.log1p(-u), _AGE_MAX_DAYS)
        initial = cfg.start_ts_s - age_days * SECONDS_PER_DAY
        # A user entering the window on day d (the first d with user_starts[d] + V > index).
        enter_day = np.searchsorted(self.user_starts, user_index - cfg.user_vocab + 1, side="left")
        entered = cfg.start_ts_s + enter_day.astype(np.float64) * SECONDS_PER_DAY
        return np.where(user_index < cfg.user_vocab, initial, entered)

    def history_counts(
        self, ts_s: np.ndarray, activity: np.ndarray, birth_ts: np.ndarray
    ) -> np.ndarray:
        """``n_u(t)``: behaviour items consumed by time ``ts_s`` (int64, >= 0)."""
        n = np.floor(activity * (np.asarray(ts_s, dtype=np.float64) - birth_ts) / SECONDS_PER_DAY)
        return np.clip(n, 0, _MAX_ITEMS).astype(np.int64)

    def user_geo(self, user_index: np.ndarray) -> np.ndarray:
        """Region of each user (Zipf over 200)."""
        return self._small_zipf("geo", "user_geo", user_index)

    def user_primary_device(self, user_index: np.ndarray) -> np.ndarray:
        """Most used device of each user (Zipf over 5)."""
        return self._small_zipf("device", "user_device", user_index)

    def user_age_bucket(self, user_index: np.ndarray) -> np.ndarray:
        """Demographic age bucket (0..6)."""
        return self._small_zipf("age_bucket", "user_age_bucket", user_index)

    def user_gender(self, user_index: np.ndarray) -> np.ndarray:
        """Gender code (0..2)."""
        return self._small_zipf("gender", "user_gender", user_index)

    def user_segment(self, user_index: np.ndarray) -> np.ndarray:
        """Marketing segment (Zipf over 20)."""
        return self._small_zipf("segment", "user_segment", user_index)

    def user_exposure(self, user_index: np.ndarray) -> np.ndarray:
        """Relative ad exposure of each user (lognormal, median 1); drives ``ctr_7d``."""
        return np.exp(0.5 * self._h["user_exposure"].normal(user_index))

    def user_preferences(self, user_index: np.ndarray) -> np.ndarray:
        """Three preferred categories per user (int64, shape ``(n, 3)``; Zipf over categories)."""
        keys = np.asarray(user_index, dtype=np.int64)[:, None] * _NUM_PREFS + np.arange(_NUM_PREFS)
        return self._cat_zipf.ranks(self._h["user_pref"].uniform(keys))

    def _small_zipf(self, feature: str, stream: str, keys: np.ndarray) -> np.ndarray:
        spec = feature_spec(feature)
        assert spec.vocab is not None and spec.zipf_exponent is not None
        return ZipfSampler.get(spec.vocab, spec.zipf_exponent).ranks(self._h[stream].uniform(keys))

    # ---- behaviour histories ----------------------------------------------------------------

    def histories(
        self,
        user_index: np.ndarray,
        count: np.ndarray,
        activity: np.ndarray,
        birth_ts: np.ndarray,
        max_len: int,
    ) -> History:
        """The last ``min(count, max_len)`` behaviour items of each user, most recent first.

        Args:
            user_index: User index per request.
            count: ``n_u(t)`` per request.
            activity: The users' items per day.
            birth_ts: The users' birth times (Unix seconds).
            max_len: Longest sequence kept.

        Returns:
            The flattened sequences: ad ids and their categories.
        """
        lengths = np.minimum(count, max_len)
        offsets = np.zeros(len(count) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])
        owner = np.repeat(np.arange(len(count)), lengths)
        # Item numbers count down from n_u(t) - 1 within each request.
        within = np.arange(total) - np.repeat(offsets[:-1], lengths)
        item_no = np.repeat(count - 1, lengths) - within
        prefs = self.user_preferences(user_index)
        rank, category = self._item_ranks(user_index[owner], item_no, prefs[owner])
        # The ad live when the item was consumed: item n at birth + (n + 1) / activity days.
        item_ts = birth_ts[owner] + (item_no + 1) * (SECONDS_PER_DAY / activity[owner])
        ad_idx = self.ad_index(rank, self.day_of(np.floor(item_ts).astype(np.int64)))
        return History(offsets, self.ad_ids(ad_idx), category, count)

    def _item_ranks(
        self, user_index: np.ndarray, item_no: np.ndarray, prefs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        key = (user_index.astype(np.int64) << _ITEM_BITS) | item_no
        from_pref = self._h["item_pref"].uniform(key) < _PREF_PROB
        which = np.searchsorted(_PREF_WEIGHTS_CUM, self._h["item_which"].uniform(key), side="right")
        pref_cat = np.take_along_axis(prefs, np.minimum(which, _NUM_PREFS - 1)[:, None], 1)[:, 0]
        u_rank = self._h["item_rank"].uniform(key)
        rank = np.where(
            from_pref,
            self.rank_in_category(pref_cat, u_rank),
            self._ad_zipf.ranks(u_rank),
        )
        return rank, self.rank_category(rank)

    # ---- ads --------------------------------------------------------------------------------

    def popular_ad_ranks(self, u: np.ndarray) -> np.ndarray:
        """Ad popularity ranks for uniforms ``u`` (Zipf over the ad vocabulary)."""
        return self._ad_zipf.ranks(u)

    def rank_in_category(self, category: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Ad ranks of ``category`` (``category + C k``, ``k`` Zipf within the category)."""
        return category + self.config.num_categories * self._in_cat_zipf.ranks(u)

    def rank_category(self, rank: np.ndarray) -> np.ndarray:
        """Category of the ads at popularity ``rank`` (the same for every index holding it)."""
        return np.mod(rank, self.config.num_categories)

    def ad_ids(self, ad_index: np.ndarray) -> np.ndarray:
        """Public ad ids."""
        return mix_ids(ad_index, self.config.seed, "ad_id")

    def ad_category(self, ad_index: np.ndarray) -> np.ndarray:
        """Category of each ad."""
        return self.rank_category(self.ad_rank(ad_index))

    def ad_campaign_ids(self, ad_index: np.ndarray) -> np.ndarray:
        """Campaign id of each ad (four ads per campaign)."""
        return mix_ids(ad_index // ADS_PER_CAMPAIGN, self.config.seed, "campaign_id")

    def ad_advertiser_ids(self, ad_index: np.ndarray) -> np.ndarray:
        """Advertiser id of each ad (eight campaigns per advertiser)."""
        campaign = ad_index // ADS_PER_CAMPAIGN
        return mix_ids(campaign // CAMPAIGNS_PER_ADVERTISER, self.config.seed, "advertiser_id")

    def ad_creative_type(self, ad_index: np.ndarray) -> np.ndarray:
        """Creative type (Zipf over 10)."""
        return self._small_zipf("creative_type", "ad_creative", ad_index)

    def ad_quality(self, ad_index: np.ndarray) -> np.ndarray:
        """Ad quality ``exp(0.5 g)`` as float32 (the click model reads the float32 value)."""
        g = self._h["ad_quality"].normal(ad_index)
        return np.exp(_QUALITY_SIGMA * g).astype(np.float32)

    def ad_bid(self, ad_index: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Bid of each ad on ``day`` (float32 currency units per click; drifts daily)."""
        base = 0.5 * np.exp(0.6 * self._h["ad_bid"].normal(ad_index))
        drift = np.exp(0.1 * self._h["ad_bid_day"].normal(day_key(ad_index, day)))
        return (base * drift).astype(np.float32)

    def ad_ctr_noise(self, ad_index: np.ndarray) -> np.ndarray:
        """Standard normal per ad: the error of the logged ``ctr_estimate``."""
        return self._h["ad_ctr"].normal(ad_index)


def day_key(index: np.ndarray, day: np.ndarray | int) -> np.ndarray:
    """Hash key of an ``(entity index, day)`` pair (int64)."""
    return (np.asarray(index, dtype=np.int64) << _DAY_BITS) | np.asarray(day, dtype=np.int64)


QUALITY_SIGMA = _QUALITY_SIGMA
"""``ad_quality = exp(QUALITY_SIGMA * g)``: the click model's ``z(ad_quality) = ln(q) / sigma``."""
