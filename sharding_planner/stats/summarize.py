"""Derive the reported statistics of one feature from its sketch.

Everything about the id-frequency distribution comes from one rank-frequency curve
(:func:`rank_frequency_curve`): a list of points (count, width) in descending count order, where a
point stands for ``width`` ids that each occur ``count`` times and occupies the ranks
``(start, start + width]``.

* Exact mode (sample rate 1): every distinct id is a point of width 1, so everything is exact.
* Sampled mode (rate r < 1): the reported heavy hitters come first at ranks 1..H (width 1, counts
  exact when the id is in the sample, else Misra-Gries lower bounds); then the sampled ids that are
  not heavy hitters, in descending count order, each of width 1/r (a uniform hash sample of ids
  stands for 1/r ids each), so the i-th of them is centred on rank ``H + (i + 0.5) / r``.

Derived from the curve:

* ``topXpct_traffic_share``: the traffic (sum of counts) of ranks ``<= ceil(X% * distinct)``
  divided by ``total_ids``.
* ``zipf_exponent``: fit ``log(count) = a - s * log(rank)`` by least squares at up to 64
  geometrically spaced integer ranks from 1 to the last rank whose count is at least
  :data:`ZIPF_MIN_COUNT` (the curve's tail of ids seen once is flat noise, not the law); None with
  fewer than 3 such ranks.
* ``count_quantiles``: inverted-CDF quantiles of per-id counts, each point weighted by its width.

``unseen_recent_share`` uses the exact table alone (a uniform sample of distinct ids in sampled
mode): the share of ids whose last occurrence is before ``log_end_s - recent_window_s``.
"""

from __future__ import annotations

import math

import numpy as np

from sharding_planner.stats import kernels as K
from sharding_planner.stats.sketches import FeatureSketch
from sharding_planner.types import (
    CountQuantiles,
    FeatureStats,
    HeavyHitter,
    PoolingStats,
)

__all__ = [
    "ZIPF_MIN_COUNT",
    "RankFrequencyCurve",
    "hll_estimate",
    "hll_relative_error",
    "rank_frequency_curve",
    "summarize",
]

ZIPF_MIN_COUNT = 2
"""The Zipf fit stops at the last rank whose count is at least this."""
_ZIPF_POINTS = 64
_ALPHA_INF = 1.0 / (2.0 * math.log(2.0))


def hll_relative_error(precision: int) -> float:
    """The HLL relative standard error 1.04 / sqrt(2**p)."""
    return 1.04 / math.sqrt(1 << precision)


def hll_estimate(registers: np.ndarray, precision: int) -> float:
    """Estimate distinct ids from HLL registers (Ertl's improved estimator, arXiv:1702.01284).

    Unlike the original estimator it needs no empirical bias tables or range switches: it is
    unbiased from 0 to far beyond 2**p and its error stays near 1.04 / sqrt(2**p) throughout.

    Args:
        registers: uint8 registers (values 0 .. 65 - p).
        precision: p, with ``len(registers) == 2**p``.

    Returns:
        The estimated number of distinct ids (0.0 for empty registers).
    """
    m = 1 << precision
    q = 64 - precision
    c = np.bincount(registers, minlength=q + 2).astype(np.float64)
    z = m * _tau(1.0 - c[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + c[k])
    z += m * _sigma(c[0] / m)
    if math.isinf(z):
        return 0.0
    return _ALPHA_INF * m * m / z


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        z_old = z
        z += x * y
        y += y
        if z == z_old:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        z_old = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == z_old:
            return z / 3.0


class RankFrequencyCurve:
    """Points (count, width) in descending count order; point i covers ranks (start_i, end_i].

    Attributes:
        counts: Occurrences of each id a point stands for (float64, descending).
        widths: Ids each point stands for.
        ends: Cumulative widths: the last rank each point covers.
    """

    __slots__ = ("counts", "widths", "ends")

    def __init__(self, counts: np.ndarray, widths: np.ndarray) -> None:
        self.counts = counts.astype(np.float64)
        self.widths = widths.astype(np.float64)
        self.ends = np.cumsum(self.widths)

    def traffic_up_to(self, rank: float) -> float:
        """Sum of counts of ranks 1..rank."""
        starts = self.ends - self.widths
        covered = np.clip(rank - starts, 0.0, self.widths)
        return float(np.dot(self.counts, covered))

    def traffic_beyond(self, rank: float) -> float:
        """Sum of counts of ranks after ``rank``."""
        starts = self.ends - self.widths
        covered = np.clip(self.ends - np.maximum(starts, rank), 0.0, self.widths)
        return float(np.dot(self.counts, covered))

    def count_at(self, ranks: np.ndarray) -> np.ndarray:
        """Count at each rank (ranks beyond the curve get its last count)."""
        idx = np.searchsorted(self.ends, ranks, side="left")
        return self.counts[np.minimum(idx, self.counts.shape[0] - 1)]

    def zipf_exponent(self) -> float | None:
        """s of the least-squares fit log(count) ~ -s log(rank) (see the module docstring)."""
        usable = np.flatnonzero(self.counts >= ZIPF_MIN_COUNT)
        if usable.shape[0] == 0:
            return None
        last_rank = math.floor(self.ends[usable[-1]] + 1e-9)
        if last_rank < 3:
            return None
        ranks = np.unique(np.rint(np.geomspace(1.0, last_rank, _ZIPF_POINTS)))
        if ranks.shape[0] < 3:
            return None
        x = np.log(ranks)
        y = np.log(self.count_at(ranks))
        slope = np.polyfit(x, y, 1)[0]
        return float(-slope)


def rank_frequency_curve(
    sketch: FeatureSketch, head: np.ndarray, entries: np.ndarray | None = None
) -> RankFrequencyCurve:
    """The feature's rank-frequency curve (see the module docstring).

    Args:
        sketch: The feature's sketch.
        head: Sampled mode only: rows ``[key, count, ...]`` of exactly counted frequent ids from the
            heavy-hitter summary; each becomes a point of width 1 and leaves the sample's points.
        entries: ``sketch.sample_entries()``, if the caller has them already.
    """
    if entries is None:
        entries = sketch.sample_entries()
    counts = entries[:, K.COL_COUNT]
    if sketch.is_exact:
        ordered = np.sort(counts)[::-1]
        return RankFrequencyCurve(ordered, np.ones(ordered.shape[0]))
    rest = counts[~np.isin(entries[:, K.COL_KEY], head[:, K.COL_KEY])]
    all_counts = np.concatenate([head[:, K.COL_COUNT], rest])
    widths = np.concatenate(
        [np.ones(head.shape[0]), np.full(rest.shape[0], 1.0 / sketch.sample_rate)]
    )
    order = np.argsort(-all_counts, kind="stable")
    return RankFrequencyCurve(all_counts[order], widths[order])


def _frequent_rows(sketch: FeatureSketch, sample: np.ndarray, k: int) -> np.ndarray:
    """Candidate heavy hitters ``[key, count, first, last, max_undercount]``.

    Exact mode: the ``k`` most frequent ids of the table (ties at the k-th count included).
    Sampled mode: the summary's ids, with the exact count and times from the sample (``sample``:
    the sorted sample entries) for ids that are also in it.
    """
    if sketch.is_exact:
        if sample.shape[0] > k:
            counts = sample[:, K.COL_COUNT]
            kth = np.partition(counts, sample.shape[0] - k)[sample.shape[0] - k]
            sample = sample[counts >= kth]
        rows = np.zeros((sample.shape[0], 5), dtype=np.int64)
        rows[:, :4] = sample
        return rows
    rows = sketch.heavy_entries().copy()
    if sample.shape[0]:
        pos = np.minimum(
            np.searchsorted(sample[:, K.COL_KEY], rows[:, K.COL_KEY]), sample.shape[0] - 1
        )
        hit = sample[pos, K.COL_KEY] == rows[:, K.COL_KEY]
        rows[hit, :4] = sample[pos[hit]]
        rows[hit, K.COL_ERR] = 0
    return rows


def _heavy_hitters(sketch: FeatureSketch, rows: np.ndarray, k: int) -> tuple[HeavyHitter, ...]:
    """Top ``k`` of the candidate ``rows`` by (count desc, key asc)."""
    order = np.lexsort((rows[:, K.COL_KEY], -rows[:, K.COL_COUNT]))[:k]
    raw = sketch.raw_ids
    out = []
    for key, count, first, last, undercount in rows[order].tolist():
        out.append(
            HeavyHitter(
                id_key=key,
                count=count,
                max_undercount=undercount,
                raw_id=raw.get(key),
                first_seen_s=None if first == K.FIRST_NONE else first,
                last_seen_s=None if last == K.LAST_NONE else last,
            )
        )
    return tuple(out)


def _pooling(hist: np.ndarray) -> PoolingStats:
    present = int(hist[1:].sum())
    if present == 0:
        return PoolingStats(mean=0.0, p99=0, max=0)
    lengths = np.arange(hist.shape[0])
    return PoolingStats(
        mean=float(np.dot(lengths, hist) / present),
        p99=int(np.quantile(lengths, 0.99, weights=hist, method="inverted_cdf")),
        max=int(np.flatnonzero(hist)[-1]),
    )


def _count_quantiles(curve: RankFrequencyCurve, exact: bool) -> CountQuantiles:
    if curve.counts.shape[0] == 0:
        return CountQuantiles(p50=0, p90=0, p99=0, max=0)
    q = np.quantile(
        curve.counts,
        [0.5, 0.9, 0.99],
        weights=None if exact else curve.widths,
        method="inverted_cdf",
    )
    return CountQuantiles(p50=int(q[0]), p90=int(q[1]), p99=int(q[2]), max=int(curve.counts.max()))


def _unseen_recent_share(
    sketch: FeatureSketch, sample: np.ndarray, recent_window_s: int
) -> float | None:
    if sketch.log_end_s is None:
        return None
    last = sample[:, K.COL_LAST]
    last = last[last != K.LAST_NONE]
    if last.shape[0] == 0:
        return None
    return float(np.mean(last < sketch.log_end_s - recent_window_s))


def summarize(sketch: FeatureSketch, heavy_hitters: int, recent_window_s: int) -> FeatureStats:
    """The reported statistics of one feature.

    Args:
        sketch: The feature's sketch.
        heavy_hitters: How many heavy hitters to report.
        recent_window_s: Window for ``unseen_recent_share``.

    Returns:
        The feature's statistics.
    """
    rows_present = sketch.rows_present
    total = sketch.total_ids
    sample = sketch.sample_entries()
    frequent = _frequent_rows(sketch, sample, heavy_hitters)
    heavy = _heavy_hitters(sketch, frequent, heavy_hitters)
    # The curve's head: summary ids whose counts are exact (tracked since their first occurrence,
    # or in the sample); the sample stands for every other id without bias.
    head = frequent[frequent[:, K.COL_ERR] == 0]
    curve = rank_frequency_curve(sketch, head, sample)
    p = sketch.hll_precision
    distinct = sketch.sample_size if sketch.is_exact else int(round(hll_estimate(sketch.hll, p)))
    shares = []
    for frac in (0.01, 0.10):
        if total == 0 or distinct == 0:
            shares.append(0.0)
        else:
            top = math.ceil(frac * distinct)
            shares.append(min(1.0, max(0.0, 1.0 - curve.traffic_beyond(top) / total)))
    return FeatureStats(
        name=sketch.name,
        id_kind=sketch.id_kind,
        multi_hot=sketch.multi_hot,
        rows=sketch.rows_seen,
        rows_present=rows_present,
        coverage=rows_present / sketch.rows_seen if sketch.rows_seen else 0.0,
        total_ids=total,
        distinct=distinct,
        distinct_exact=sketch.is_exact,
        distinct_rse=0.0 if sketch.is_exact else hll_relative_error(p),
        distinct_sample_estimate=sketch.sample_size << sketch.level,
        sample_rate=sketch.sample_rate,
        heavy_hitters=heavy,
        heavy_hitter_max_undercount=sketch.heavy_undercount,
        pooling=_pooling(sketch.pooling_hist),
        count_quantiles=_count_quantiles(curve, sketch.is_exact),
        zipf_exponent=curve.zipf_exponent(),
        top1pct_traffic_share=shares[0],
        top10pct_traffic_share=shares[1],
        unseen_recent_share=_unseen_recent_share(sketch, sample, recent_window_s),
        first_seen_s=sketch.first_seen_s,
        last_seen_s=sketch.last_seen_s,
        log_end_s=sketch.log_end_s,
    )
