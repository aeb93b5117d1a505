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
from typing import TYPE_CHECKING, Any, Protocol

from adrank.constants import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_EXACT_DISTINCT_LIMIT,
    DEFAULT_HEAVY_HITTERS,
    DEFAULT_HLL_PRECISION,
    DEFAULT_PLAN_BATCH_SIZE,
    DEFAULT_RECENT_WINDOW_S,
    DEFAULT_ROW_ALIGNMENT_BYTES,
)
from adrank.errors import InputError
from adrank.types import (
    DevicePlan,
    FeatureSlot,
    OptimizerStateKind,
    PlanMode,
    PoolingType,
    Precision,
    PruningPolicy,
    ShardingType,
    ShardPlan,
    TablePlan,
    Topology,
)

if TYPE_CHECKING:
    from sharding_planner.stats.sketches import FeatureSketch

__all__ = [
    "HEAVY_HITTER_CAPACITY_FACTOR",
    "Allocation",
    "AllocationConfig",
    "Allocator",
    "FeatureSpec",
    "HashSizeDecision",
    "MergeConfig",
    "MergeKind",
    "MergedTable",
    "Partitioner",
    "Placement",
    "PlacementConfig",
    "PlanInputs",
    "PlanReport",
    "PlanResult",
    "PlannerConfig",
    "PrecisionDecision",
    "PrunedTable",
    "PruningConfig",
    "TableDraft",
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


# --------------------------------------------------------------------------------------------------
# Planner stages after stats: inputs -> allocation -> dead rows -> merging -> precision ->
# placement.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class FeatureSpec:
    """What the planner knows about one sparse feature (from a stats file or a tables file).

    Example (a stats-derived feature)::

        FeatureSpec(name="ad_id", dim=64, pooling=PoolingType.SUM, pooling_factor=1.0,
                    num_ids=60_550, live_ids=7_750, heavy_hitters=((42, 0.011), ...))

    Attributes:
        name: Feature name.
        dim: Embedding dim.
        pooling: Bag reduction.
        pooling_factor: Lookups per example (ids per row, absent rows counting 0).
        num_ids: Distinct ids seen (cardinality).
        live_ids: Distinct ids expected in serving traffic: those seen in the stats' recent window
            (``num_ids`` without timestamps or for a tables file). At least 1.
        heavy_hitters: Live heavy hitters, most frequent first: ``(id_key, share of this feature's
            lookups)``.
        importance: Weight of this feature's collisions in the allocation loss (default 1).
        dead_traffic_share: Estimated share of the feature's lookups from ids outside the live set.
        from_stats: True when built from measured stats (False: a tables file).
    """

    name: str
    dim: int
    pooling: PoolingType
    pooling_factor: float
    num_ids: int
    live_ids: int
    heavy_hitters: tuple[tuple[int, float], ...] = ()
    importance: float = 1.0
    dead_traffic_share: float = 0.0
    from_stats: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class PlanInputs:
    """Everything the planner plans from, validated.

    Attributes:
        features: One per feature, sorted by name.
        source_fingerprint: Fingerprint of the stats file or tables file content.
        recent_window_s: The stats' recent window (None for a tables file).
        source: Where the features came from (path), for messages and the report.
    """

    features: tuple[FeatureSpec, ...]
    source_fingerprint: str
    recent_window_s: int | None
    source: str


@dataclasses.dataclass(frozen=True, slots=True)
class AllocationConfig:
    """Hash-size allocation settings.

    Attributes:
        max_rows_per_live_id: Without pruning (a tables file, or ``--no-prune``), rows per
            feature never exceed ``max(1, live_ids x max_rows_per_live_id)`` (1.0: never more
            rows than its live ids). With pruning the stored rows are the rows live ids hit,
            which never exceed the live ids, whatever the hashed range.
        max_hash_per_live_id: With pruning, a feature's hashed range is at most this many times
            its live tail ids (bounds the remap; 64 -> a collision floor of about 1.5%).
        max_dedicated_per_feature: Heavy hitters that may get a dedicated row (None: every live
            heavy hitter the stats report).
        min_hash_size: Rows every feature's hashed range keeps (new ids land there).
    """

    max_rows_per_live_id: float = 1.0
    max_hash_per_live_id: float = 64.0
    max_dedicated_per_feature: int | None = None
    min_hash_size: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class MergeConfig:
    """When features are merged into unified tables.

    Attributes:
        enabled: Merge at all.
        max_feature_rows: Only features with at most this many rows are merged.
        max_table_rows: A unified table holds at most this many rows.
        max_collision_increase: Largest rise in the merged features' traffic-weighted collision
            rate (absolute, e.g. 0.01 = one point) accepted to share one salted hashed range;
            0 keeps every feature in its own range (concatenation only).
    """

    enabled: bool = True
    max_feature_rows: int = 1 << 17
    max_table_rows: int = 1 << 22
    max_collision_increase: float = 0.01


@dataclasses.dataclass(frozen=True, slots=True)
class PruningConfig:
    """Dead-row pruning policy the plan records (the pruning package applies it).

    Attributes:
        enabled: Plan pruning where the stats show dead ids.
        min_count: Rows hit fewer times than this are dead too (0: recency only).
        min_pruned_share: Prune a table only when at least this share of its rows is expected dead.
        fallback_row: Keep one fallback row that pruned ids read (else they contribute nothing).
        max_pruned_traffic_share: Prune a feature only when the ids it would drop (unseen in the
            stats' recent window) carried at most this share of its lookups in the logs. Above
            it, "unseen recently" is not "dead" (a recent window too short for how sparse the
            logs are): pruning would send that traffic to the fallback row.
    """

    enabled: bool = True
    min_count: int = 0
    min_pruned_share: float = 0.05
    fallback_row: bool = True
    max_pruned_traffic_share: float = 0.05


@dataclasses.dataclass(frozen=True, slots=True)
class PlacementConfig:
    """Sharding-type choice and device placement settings.

    Attributes:
        sharding_overrides: Table or feature name -> sharding type to force.
        row_wise_min_share: Tables taking more than this share of the smallest device's memory,
            or more than the mean bytes per device, are sharded row-wise (table-row-wise when
            there are several hosts).
        column_wise_hot_share: Tables whose lookup cost exceeds this multiple of the per-device
            mean cost are split column-wise to spread the work.
        column_wise_min_cols: Narrowest column shard.
    """

    sharding_overrides: Mapping[str, ShardingType] = dataclasses.field(default_factory=dict)
    row_wise_min_share: float = 0.5
    column_wise_hot_share: float = 1.0
    column_wise_min_cols: int = 32


@dataclasses.dataclass(frozen=True, slots=True)
class PlannerConfig:
    """Everything that changes a plan besides its inputs and topology (part of its fingerprint).

    Attributes:
        mode: Inference or training.
        memory_budget_bytes: Bytes all tables may take in total (None: ``budget_share`` of the
            topology's memory).
        budget_share: Default budget as a share of the total device memory.
        default_precision: Precision without a measured error (None: fp16 for inference, fp32 for
            training).
        max_precision_error: Largest measured relative error a precision may have to be chosen.
        optimizer: Optimizer state in training (None: row-wise Adagrad; always NONE in inference).
        batch_size: Examples per device per step, for the cost model.
        row_alignment_bytes: Row padding (see :class:`adrank.types.Precision`).
        allocation, merging, pruning, placement: Stage settings.
    """

    mode: PlanMode = PlanMode.INFERENCE
    memory_budget_bytes: int | None = None
    budget_share: float = 0.9
    default_precision: Precision | None = None
    max_precision_error: float = 0.01
    optimizer: OptimizerStateKind | None = None
    batch_size: int = DEFAULT_PLAN_BATCH_SIZE
    row_alignment_bytes: int = DEFAULT_ROW_ALIGNMENT_BYTES
    allocation: AllocationConfig = AllocationConfig()
    merging: MergeConfig = MergeConfig()
    pruning: PruningConfig = PruningConfig()
    placement: PlacementConfig = PlacementConfig()

    @property
    def effective_optimizer(self) -> OptimizerStateKind:
        """The optimizer state counted in bytes."""
        if self.mode is PlanMode.INFERENCE:
            return OptimizerStateKind.NONE
        return self.optimizer or OptimizerStateKind.ROWWISE_ADAGRAD

    @property
    def effective_default_precision(self) -> Precision:
        """The precision of a table without a measured error."""
        if self.default_precision is not None:
            return self.default_precision
        return Precision.FP32 if self.mode is PlanMode.TRAINING else Precision.FP16

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON (enums as values), for fingerprints and reports."""

        def conv(v: Any) -> Any:
            if isinstance(v, enum.Enum):
                return v.value
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
            if isinstance(v, Mapping):
                return {str(k): conv(x) for k, x in sorted(v.items())}
            return v

        return conv(self)  # type: ignore[no-any-return]


@dataclasses.dataclass(frozen=True, slots=True)
class HashSizeDecision:
    """Rows chosen for one feature by the allocation stage.

    Attributes:
        feature: Feature name.
        hash_size: Rows of the hashed range.
        dedicated_keys: Id keys given a collision-free row, most frequent first.
        row_bytes: Bytes per stored row assumed (precision estimate, dim, optimizer state).
        pruned: Whether the feature's rows will be pruned to those its live ids hit (then the
            stored rows are fewer than the hashed ones and a remap is needed).
        expected_stored_rows: Rows expected to be stored: dedicated rows plus the hashed rows
            that live ids hit (all hashed rows without pruning).
        memory_bytes: Bytes the allocation charged: stored rows x row bytes, plus
            ``REMAP_BYTES_PER_HASHED_ROW`` per hashed id when pruned.
        expected_collision_rate: Share of the feature's lookups expected to read a row shared with
            another live id.
        traffic_share: Share of all lookups.
        live_ids: Live distinct ids.
        capped: A cap (live ids, or the hashed-range limit) stopped it from getting more rows.
    """

    feature: str
    hash_size: int
    dedicated_keys: tuple[int, ...]
    row_bytes: int
    pruned: bool
    expected_stored_rows: float
    memory_bytes: int
    expected_collision_rate: float
    traffic_share: float
    live_ids: int
    capped: bool

    @property
    def num_rows(self) -> int:
        """Hashed plus dedicated rows: the size of the feature's hashed-id space."""
        return self.hash_size + len(self.dedicated_keys)


@dataclasses.dataclass(frozen=True, slots=True)
class Allocation:
    """The allocation stage's result.

    Attributes:
        decisions: One per feature, sorted by name.
        budget_bytes: The memory budget.
        used_bytes: Bytes the decisions take (their ``memory_bytes``).
        expected_collision_rate: Traffic-weighted over all features.
    """

    decisions: tuple[HashSizeDecision, ...]
    budget_bytes: int
    used_bytes: int
    expected_collision_rate: float

    def decision(self, feature: str) -> HashSizeDecision:
        """The decision for ``feature`` (KeyError if none)."""
        for d in self.decisions:
            if d.feature == feature:
                return d
        raise KeyError(feature)


class MergeKind(enum.Enum):
    """How a table's features share it."""

    SINGLE = "single"
    """One feature."""
    CONCAT = "concat"
    """Each feature keeps its own row range (no extra collisions; fewer tables)."""
    SALTED = "salted"
    """Features share one hashed range with per-feature seeds (saves rows; adds collisions)."""


@dataclasses.dataclass(frozen=True, slots=True)
class MergedTable:
    """A table produced by the merging stage, before precision and placement.

    Attributes:
        name: Table name.
        features: Slots of its features (ranges, seeds, dedicated rows).
        dim: Embedding dim.
        pooling: Pooling type.
        hashed_rows: Size of the table's hashed-id space.
        kind: How its features share it.
        reason: Why (for the report).
        rows_saved: Rows saved against one table per feature.
        collision_increase: Rise of the traffic-weighted collision rate of its features.
    """

    name: str
    features: tuple[FeatureSlot, ...]
    dim: int
    pooling: PoolingType
    hashed_rows: int
    kind: MergeKind
    reason: str
    rows_saved: int = 0
    collision_increase: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class PrunedTable:
    """A merged table with its dead-row pruning decision.

    Attributes:
        table: The merged table.
        num_rows: Physical rows after the expected pruning (``hashed_rows`` without pruning).
        fallback_row: Row pruned ids read, or None.
        pruning: The policy for the pruning package.
        reason: Why (for the report).
    """

    table: MergedTable
    num_rows: int
    fallback_row: int | None
    pruning: PruningPolicy
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class PrecisionDecision:
    """Precision chosen for one table.

    Attributes:
        table: Table name.
        precision: The precision.
        measured_error: The measured relative error at that precision (None: not measured).
        reason: Why (for the report).
    """

    table: str
    precision: Precision
    measured_error: float | None
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class TableDraft:
    """A table ready for placement: rows, dim, precision and everything the plan records.

    Attributes:
        pruned: The table with its pruning decision.
        precision: Its precision decision.
        lookups_per_example: Sum of its features' pooling factors.
    """

    pruned: PrunedTable
    precision: PrecisionDecision
    lookups_per_example: float

    @property
    def name(self) -> str:
        return self.pruned.table.name


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    """The placement stage's result.

    Attributes:
        tables: Final table plans (sorted by name).
        devices: Load per rank.
        reasons: Table name -> why it got its sharding type and ranks.
    """

    tables: tuple[TablePlan, ...]
    devices: tuple[DevicePlan, ...]
    reasons: Mapping[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class PlanReport:
    """What the planner decided and why, as data (the CLI renders it as report.md/png).

    Attributes:
        inputs: The inputs planned from.
        topology: The devices.
        config: The config.
        allocation: Per-feature hash sizes.
        merges: Tables and why their features share them.
        pruned: Pruning decisions per table.
        precisions: Precision per table.
        placement: Shards per table and load per device.
        stage_s: Seconds per stage.
    """

    inputs: PlanInputs
    topology: Topology
    config: PlannerConfig
    allocation: Allocation
    merges: tuple[MergedTable, ...]
    pruned: tuple[PrunedTable, ...]
    precisions: tuple[PrecisionDecision, ...]
    placement: Placement
    stage_s: Mapping[str, float] = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True, slots=True)
class PlanResult:
    """The planner's output.

    Attributes:
        plan: The shard plan (what plan.json holds).
        report: Decisions and reasons.
        sidecars: Relative file name -> array to save beside plan.json (dedicated keys).
    """

    plan: ShardPlan
    report: PlanReport
    sidecars: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)


class Allocator(Protocol):
    """Chooses hash sizes per feature under a memory budget (swappable stage)."""

    def allocate(
        self,
        inputs: PlanInputs,
        row_bytes: Mapping[str, int],
        budget_bytes: int,
        pruned: frozenset[str] = frozenset(),
    ) -> Allocation:
        """Return one decision per feature whose bytes fit ``budget_bytes`` in total; features in
        ``pruned`` are charged only the rows their live ids hit, plus the remap."""
        ...


class Partitioner(Protocol):
    """Places table drafts on devices (swappable stage)."""

    def partition(
        self, tables: tuple[TableDraft, ...], topology: Topology, config: PlannerConfig
    ) -> Placement:
        """Return shards for every table and the load per device, or raise PlanError."""
        ...
