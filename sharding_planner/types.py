"""Typed values passed between the sharding planner's stages.

The first stage, :mod:`sharding_planner.stats`, turns click logs into one :class:`FeatureStats` per
sparse feature, gathered in a :class:`StatsReport`; the planner's later stages consume those. All
are frozen, slotted dataclasses: a stage returns new values and never changes its inputs.

Time is epoch seconds (UTC) throughout, in fields suffixed ``_s``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adrank.constants import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_EXACT_DISTINCT_LIMIT,
    DEFAULT_HEAVY_HITTERS,
    DEFAULT_HLL_PRECISION,
    DEFAULT_RECENT_WINDOW_S,
)
from adrank.errors import InputError

if TYPE_CHECKING:
    from sharding_planner.stats.sketches import FeatureSketch

__all__ = [
    "HEAVY_HITTER_CAPACITY_FACTOR",
    "HLL_PRECISION_RANGE",
    "CountQuantiles",
    "FeatureStats",
    "HeavyHitter",
    "IdKind",
    "InputFileInfo",
    "PoolingStats",
    "StatsConfig",
    "StatsReport",
    "StatsTimings",
]

HEAVY_HITTER_CAPACITY_FACTOR = 4
"""The heavy-hitter summary tracks this many times the reported heavy hitters (Misra-Gries k)."""

HLL_PRECISION_RANGE = (4, 18)
"""Allowed HyperLogLog precisions p (inclusive): 16 registers to 256 KiB of registers."""


class IdKind(enum.Enum):
    """What a sparse feature's raw ids are in the logs."""

    INT = "int"
    """Integer raw ids: the id key is the value itself (as int64)."""
    STRING = "string"
    """String raw ids: the id key is mmh3 of the UTF-8 bytes (see :mod:`adrank.hashing`)."""


@dataclasses.dataclass(frozen=True, slots=True)
class StatsConfig:
    """How ``adrank stats`` computes feature statistics.

    Attributes:
        features: Restrict to these columns (None: every column whose role is SPARSE).
        timestamp_column: The event-time column (None: the file's only TIMESTAMP-role column).
        recent_window_s: Ids whose last occurrence is older than ``log end - recent_window_s`` are
            dead-row candidates (``unseen_recent_share``).
        exact_distinct_limit: Distinct ids per feature held exactly; beyond it the exact table keeps
            a hash-sampled subset (rate halves each time it overflows).
        hll_precision: HyperLogLog precision p (2**p one-byte registers per feature).
        heavy_hitters: Heavy hitters reported per feature.
        batch_rows: Rows per streamed record batch (bounds memory; does not change results).
        threads: Worker threads (0: every core this process may use; does not change results).
    """

    features: tuple[str, ...] | None = None
    timestamp_column: str | None = None
    recent_window_s: int = DEFAULT_RECENT_WINDOW_S
    exact_distinct_limit: int = DEFAULT_EXACT_DISTINCT_LIMIT
    hll_precision: int = DEFAULT_HLL_PRECISION
    heavy_hitters: int = DEFAULT_HEAVY_HITTERS
    batch_rows: int = DEFAULT_BATCH_ROWS
    threads: int = 0

    @property
    def heavy_hitter_capacity(self) -> int:
        """Ids the Misra-Gries summary keeps after each compaction (its k)."""
        return HEAVY_HITTER_CAPACITY_FACTOR * self.heavy_hitters

    def validate(self) -> None:
        """Check every value, reporting all problems at once.

        Raises:
            InputError: A value is out of range.
        """
        problems: list[InputError] = []
        lo, hi = HLL_PRECISION_RANGE
        checks = [
            (self.recent_window_s > 0, "recent_window_s", "a positive number of seconds"),
            (self.exact_distinct_limit >= 1, "exact_distinct_limit", "an integer >= 1"),
            (lo <= self.hll_precision <= hi, "hll_precision", f"an integer in [{lo}, {hi}]"),
            (self.heavy_hitters >= 1, "heavy_hitters", "an integer >= 1"),
            (self.batch_rows >= 1, "batch_rows", "an integer >= 1"),
            (self.threads >= 0, "threads", "an integer >= 0"),
        ]
        for ok, name, expected in checks:
            if not ok:
                problems.append(
                    InputError(
                        f"{name} must be {expected}, found {getattr(self, name)!r}", source=name
                    )
                )
        if self.features is not None and not self.features:
            problems.append(InputError("features must name at least one column", source="features"))
        if problems:
            raise InputError.from_problems(problems)

    def result_config(self) -> dict[str, Any]:
        """The settings that change results, as JSON (stats files record it, merges compare it)."""
        return {
            "features": list(self.features) if self.features is not None else None,
            "timestamp_column": self.timestamp_column,
            "recent_window_s": self.recent_window_s,
            "exact_distinct_limit": self.exact_distinct_limit,
            "hll_precision": self.hll_precision,
            "heavy_hitters": self.heavy_hitters,
            "heavy_hitter_capacity": self.heavy_hitter_capacity,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class PoolingStats:
    """Ids per present row (pooling factor), exact. Single-valued features have 1/1/1.

    Attributes:
        mean: Mean ids per present row.
        p99: 99th percentile (inverted CDF: the smallest length covering >= 99% of present rows).
        max: Longest list seen.
    """

    mean: float
    p99: int
    max: int


@dataclasses.dataclass(frozen=True, slots=True)
class CountQuantiles:
    """Quantiles of the per-id occurrence counts (how often each distinct id appears).

    Inverted-CDF quantiles over distinct ids: exact while the feature is in exact mode, estimated
    from the hash sample (each sampled id weighted 1/sample_rate) beyond it. ``max`` is the top
    heavy hitter's count.
    """

    p50: int
    p90: int
    p99: int
    max: int


@dataclasses.dataclass(frozen=True, slots=True)
class HeavyHitter:
    """One of a feature's most frequent ids.

    Attributes:
        id_key: The int64 id key (the raw id for int features, mmh3 of the string otherwise).
        count: Occurrences. Exact when the feature is exact or the id is in the hash sample;
            otherwise a lower bound: the occurrences since the heavy-hitter summary last started
            tracking the id.
        max_undercount: How far ``count`` may be below the truth (0 when exact); at most the
            feature's ``heavy_hitter_max_undercount``.
        raw_id: The string raw id for string features (None for int features, or when the string
            was not captured, which can happen only after a merge).
        first_seen_s: Earliest event time (None without timestamps). Exact when ``count`` is;
            otherwise the earliest time since the summary last started tracking the id.
        last_seen_s: Latest event time (None without timestamps). Exact when ``count`` is;
            otherwise the latest time since tracking started (the true one for time-ordered logs).
    """

    id_key: int
    count: int
    max_undercount: int = 0
    raw_id: str | None = None
    first_seen_s: int | None = None
    last_seen_s: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FeatureStats:
    """Statistics of one sparse feature over a set of logs: what the planner consumes.

    Example (a single-valued int feature over 4 rows, one null)::

        rows=4, rows_present=3, coverage=0.75, total_ids=3,  ids 7, 7, 9
        distinct=2, distinct_exact=True, heavy_hitters=(HeavyHitter(7, 2), HeavyHitter(9, 1))
        pooling=PoolingStats(mean=1.0, p99=1, max=1)

    Attributes:
        name: Column name.
        id_kind: Int or string raw ids.
        multi_hot: True for list columns.
        rows: Rows of the input files that have this column.
        rows_present: Rows with at least one id (not null, not an empty list).
        coverage: rows_present / rows (0 when rows is 0).
        total_ids: Ids seen (sum of list lengths): the feature's lookup traffic.
        distinct: Distinct ids: exact if ``distinct_exact``, else the HyperLogLog estimate.
        distinct_exact: Whether every distinct id was counted exactly.
        distinct_rse: Relative standard error of ``distinct`` (0 when exact, else 1.04/sqrt(2**p)).
        distinct_sample_estimate: Second estimate of ``distinct``: sampled ids / sample_rate.
        sample_rate: Share of distinct ids held in the exact table (1.0 in exact mode).
        heavy_hitters: Most frequent ids, most frequent first, ties by id key.
        heavy_hitter_max_undercount: Bound on how far any heavy hitter's count (and any untracked
            id's count) may be below the truth; 0 in exact mode.
        pooling: Ids per present row.
        count_quantiles: Quantiles of the per-id counts.
        zipf_exponent: s of the fit count ~ rank**-s (None with fewer than 3 usable ranks).
        top1pct_traffic_share: Share of total_ids taken by the top ceil(1% of distinct) ids.
        top10pct_traffic_share: Same for the top 10%.
        unseen_recent_share: Share of distinct ids not seen in the last ``recent_window_s`` of the
            logs (dead-row candidates); None without timestamps.
        first_seen_s: Earliest event time of a present row (None without timestamps).
        last_seen_s: Latest event time of a present row.
        log_end_s: Latest event time of any row of files with this column: the end of the window.
    """

    name: str
    id_kind: IdKind
    multi_hot: bool
    rows: int
    rows_present: int
    coverage: float
    total_ids: int
    distinct: int
    distinct_exact: bool
    distinct_rse: float
    distinct_sample_estimate: int
    sample_rate: float
    heavy_hitters: tuple[HeavyHitter, ...]
    heavy_hitter_max_undercount: int
    pooling: PoolingStats
    count_quantiles: CountQuantiles
    zipf_exponent: float | None
    top1pct_traffic_share: float
    top10pct_traffic_share: float
    unseen_recent_share: float | None
    first_seen_s: int | None
    last_seen_s: int | None
    log_end_s: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class InputFileInfo:
    """One parquet file a stats report was computed from.

    Attributes:
        path: The path as given (resolved to absolute).
        fingerprint: :func:`adrank.formats.parquet_file_fingerprint` of the file.
        rows: Rows in the file.
    """

    path: str
    fingerprint: str
    rows: int


@dataclasses.dataclass(frozen=True, slots=True)
class StatsTimings:
    """Where a stats run spent its time (seconds); not stored in stats files.

    Attributes:
        wall_s: Whole run, validation to summaries.
        read_s: Parquet decoding and conversion to numpy (reader thread).
        compute_s: Sketch updates, summed over worker threads.
        summarize_s: Deriving the reported statistics.
    """

    wall_s: float
    read_s: float
    compute_s: float
    summarize_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class StatsReport:
    """Statistics of every sparse feature of a set of logs, with the sketches to merge them.

    Attributes:
        config: The settings used.
        inputs: The parquet files read, in order.
        inputs_fingerprint: Hash of the sorted input fingerprints and ``config.result_config()``:
            equal for a merge of shards and a run over the whole.
        features: Feature name -> statistics, sorted by name.
        sketches: Feature name -> mergeable sketch state (treat as read-only).
        timings: Time split of the run that computed it (None after a merge or a read).
    """

    config: StatsConfig
    inputs: tuple[InputFileInfo, ...]
    inputs_fingerprint: str
    features: Mapping[str, FeatureStats]
    sketches: Mapping[str, FeatureSketch] = dataclasses.field(compare=False, repr=False)
    timings: StatsTimings | None = dataclasses.field(default=None, compare=False)
