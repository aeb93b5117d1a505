"""Typed values passed between the pruning package's stages.

access counts (:class:`AccessCounts`) -> liveness (:class:`LiveRows`) -> remap
(:class:`adrank.remap.RowRemap`, which crosses to ``embed_store`` and so lives in ``adrank``) ->
report (:class:`TablePruningReport`) and, on a later log window, quality
(:class:`PruningQuality`).

Time is epoch seconds (UTC), in fields suffixed ``_s``.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from adrank.remap import RowRemap

__all__ = [
    "NEVER_ACCESSED_S",
    "AccessCounts",
    "FallbackInit",
    "LiveRows",
    "PruneConfig",
    "PruningQuality",
    "PruningReport",
    "PruningResult",
    "TablePruningReport",
]

NEVER_ACCESSED_S = int(np.iinfo(np.int64).min)
"""``last_access_s`` of a row no logged lookup hit (or only lookups without a timestamp)."""


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class AccessCounts:
    """Lookups per hashed row of one table over a log window.

    Example: three lookups of hashed ids ``[2, 0, 2]`` at times ``[10, 11, 12]`` in a table of 4
    hashed rows::

        counts        [1, 0, 2, 0]
        last_access_s [11, NEVER, 12, NEVER]     log_start_s 10, log_end_s 12

    Attributes:
        table: Table name.
        counts: int64 lookups per hashed id (length ``hashed_rows``).
        last_access_s: int64 time of the latest lookup per hashed id, :data:`NEVER_ACCESSED_S` when
            none had a time.
        log_start_s: Earliest timestamp seen (None: the logs had no timestamps).
        log_end_s: Latest timestamp seen (None likewise); the default "now" of recency windows.
    """

    table: str
    counts: np.ndarray
    last_access_s: np.ndarray
    log_start_s: int | None = None
    log_end_s: int | None = None

    @property
    def hashed_rows(self) -> int:
        """Size of the table's hashed-id space."""
        return int(self.counts.shape[0])

    @property
    def total_lookups(self) -> int:
        """Lookups counted (sum of ``counts``)."""
        return int(self.counts.sum())


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class LiveRows:
    """Which hashed rows of a table keep a row, and why the others lost theirs.

    Every hashed id is in exactly one of: kept, ``dead_unseen``, ``dead_rare``,
    ``over_capacity``. Dead rows are those the policy names dead; ``over_capacity`` ones were
    live but did not fit the table's rows (the least-accessed live rows are dropped first).

    Attributes:
        keep: bool per hashed id.
        num_dead_unseen: Rows with no lookup inside the recency window (or none at all).
        num_dead_rare: Rows seen recently but fewer than ``min_count`` times.
        num_over_capacity: Live rows dropped because the table had no room for them.
        num_protected: Dedicated heavy-hitter rows, kept whatever their counts.
    """

    keep: np.ndarray
    num_dead_unseen: int = 0
    num_dead_rare: int = 0
    num_over_capacity: int = 0
    num_protected: int = 0

    @property
    def num_kept(self) -> int:
        """Hashed ids that keep a row."""
        return int(np.count_nonzero(self.keep))


class FallbackInit(enum.Enum):
    """How compaction fills the fallback row of a pruned table."""

    ZEROS = "zeros"
    """All zeros: a pruned id adds nothing to a SUM bag."""
    MEAN_OF_PRUNED = "mean_of_pruned"
    """Mean of the pruned rows' weights: pruned ids keep the average of what they had."""
    TRAFFIC_MEAN_OF_PRUNED = "traffic_mean_of_pruned"
    """Mean of the pruned rows weighted by their lookups (needs access counts)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PruneConfig:
    """How :func:`pruning.prune_plan` applies each table's :class:`~adrank.types.PruningPolicy`.

    Attributes:
        reference_time_s: "Now" for recency windows (None: the latest timestamp in the counts).
        unseen_window_s: Override every table's ``unseen_window_s`` (None: keep the plan's).
        min_count: Override every table's ``min_count`` (None: keep the plan's).
    """

    reference_time_s: int | None = None
    unseen_window_s: int | None = None
    min_count: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TablePruningReport:
    """What pruning did to one table, and the traffic it affects (over the counted logs).

    Attributes:
        table: Table name.
        hashed_rows: Hashed ids before pruning.
        num_rows: Rows of the stored table (the plan's ``num_rows``).
        kept_rows: Hashed ids that kept a row.
        pruned_rows: Hashed ids without a row (``hashed_rows - kept_rows``).
        spare_rows: Stored rows that neither a kept id nor the fallback uses.
        dead_unseen_rows / dead_rare_rows / over_capacity_rows / protected_rows: See
            :class:`LiveRows`.
        lookups: Lookups counted for the table.
        pruned_lookups: Lookups that hit a pruned hashed id.
        pruned_traffic_share: ``pruned_lookups / lookups`` (0 when no lookups).
        expected_pruned_rows: The planner's estimate (from the plan's policy).
        expected_pruned_traffic_share: Likewise.
        fallback_row: Row pruned ids read (None: they contribute nothing).
    """

    table: str
    hashed_rows: int
    num_rows: int
    kept_rows: int
    pruned_rows: int
    spare_rows: int
    dead_unseen_rows: int
    dead_rare_rows: int
    over_capacity_rows: int
    protected_rows: int
    lookups: int
    pruned_lookups: int
    pruned_traffic_share: float
    expected_pruned_rows: int
    expected_pruned_traffic_share: float
    fallback_row: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class PruningReport:
    """Pruning of a whole plan: one entry per pruned table, plus totals over them.

    Attributes:
        tables: Per pruned table, sorted by name.
        skipped_tables: Tables left unpruned (policy ``KEEP_ALL``), sorted.
        rows_before: Hashed rows of the pruned tables.
        rows_kept: Rows kept in them.
        lookups: Lookups counted on them.
        pruned_lookups: Lookups that hit a pruned row.
    """

    tables: tuple[TablePruningReport, ...]
    skipped_tables: tuple[str, ...] = ()
    rows_before: int = 0
    rows_kept: int = 0
    lookups: int = 0
    pruned_lookups: int = 0

    @property
    def pruned_traffic_share(self) -> float:
        """Share of the pruned tables' lookups that hit a pruned row."""
        return self.pruned_lookups / self.lookups if self.lookups else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class PruningResult:
    """Output of :func:`pruning.prune_plan`.

    Attributes:
        remaps: Table name -> remap, for every pruned table.
        report: What was pruned.
    """

    remaps: dict[str, RowRemap]
    report: PruningReport


@dataclasses.dataclass(frozen=True, slots=True)
class PruningQuality:
    """How a remap made from one log window fares on a later window (per table).

    "Before" is the unpruned table: a lookup there reads a row trained on the earlier window
    unless that row had no lookups then (it still holds its initial value). "After" adds the
    pruned rows, which now read the fallback.

    Attributes:
        table: Table name.
        lookups: Lookups in the later window.
        pruned_share: Share of them that hit a pruned hashed id (read the fallback after pruning).
        untrained_share_before: Share that hit a row with no lookups in the earlier window.
        untrained_share_after: Share that hit a pruned row or a kept row with no earlier lookups.
        lost_trained_share: Share that hit a pruned row that did have earlier lookups: the part of
            the traffic whose embedding pruning actually replaced.
        kept_unused_rows: Kept rows that no lookup in the later window hit.
    """

    table: str
    lookups: int
    pruned_share: float
    untrained_share_before: float
    untrained_share_after: float
    lost_trained_share: float
    kept_unused_rows: int
