"""select_live_rows: recency window, count threshold, protected rows, capacity, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from adrank.errors import InputError, PlanError, PlanErrorKind
from adrank.types import PruningAction, PruningPolicy
from pruning import NEVER_ACCESSED_S, AccessCounts, select_live_rows

N = NEVER_ACCESSED_S
DROP = PruningAction.DROP_DEAD


def _counts(counts: list[int], last: list[int], end: int | None = 1000) -> AccessCounts:
    return AccessCounts(
        "t",
        np.array(counts, dtype=np.int64),
        np.array(last, dtype=np.int64),
        0 if end is not None else None,
        end,
    )


def test_window_and_threshold() -> None:
    c = _counts([5, 0, 1, 9, 3], [990, N, 995, 100, 999])
    live = select_live_rows(c, PruningPolicy(DROP, unseen_window_s=50, min_count=2))
    # row1 never seen, row3 last seen at 100 < 1000-50: unseen; row2 seen once < 2: rare.
    assert live.keep.tolist() == [True, False, False, False, True]
    assert (live.num_dead_unseen, live.num_dead_rare, live.num_over_capacity) == (2, 1, 0)


def test_row_seen_exactly_at_the_window_start_is_live() -> None:
    c = _counts([1, 1], [950, 949])
    live = select_live_rows(c, PruningPolicy(DROP, unseen_window_s=50))
    assert live.keep.tolist() == [True, False]


def test_reference_time_overrides_the_log_end() -> None:
    c = _counts([1, 1], [950, 990])
    live = select_live_rows(c, PruningPolicy(DROP, unseen_window_s=50), reference_time_s=1030)
    assert live.keep.tolist() == [False, True]


def test_counts_only_policy_drops_never_seen_rows() -> None:
    live = select_live_rows(_counts([0, 2, 1], [N, 5, 6], end=None), PruningPolicy(DROP))
    assert live.keep.tolist() == [False, True, True]


def test_protected_rows_survive() -> None:
    prot = np.array([False, True, False])
    live = select_live_rows(
        _counts([0, 0, 4], [N, N, 999]), PruningPolicy(DROP, min_count=1), protected=prot
    )
    assert live.keep.tolist() == [False, True, True]
    assert live.num_protected == 1 and live.num_dead_unseen == 1


def test_capacity_drops_least_accessed_then_oldest_then_highest_id() -> None:
    c = _counts([5, 2, 2, 2, 9], [999, 990, 980, 980, 999])
    live = select_live_rows(c, PruningPolicy(DROP), capacity=3)
    # Candidates with 2 lookups: row2/row3 (older, 980) go first, and of those the higher id (3).
    assert live.keep.tolist() == [True, True, False, False, True]
    assert live.num_over_capacity == 2


def test_keep_all_keeps_everything() -> None:
    live = select_live_rows(_counts([0, 0], [N, N]), PruningPolicy())
    assert live.keep.all() and live.num_kept == 2


def test_window_without_timestamps_is_an_input_error() -> None:
    with pytest.raises(InputError, match="timestamps") as e:
        select_live_rows(_counts([1], [N], end=None), PruningPolicy(DROP, unseen_window_s=10))
    assert "unseen_window_s" in str(e.value.source)


def test_too_many_dedicated_rows_is_a_constraint_conflict() -> None:
    with pytest.raises(PlanError) as e:
        select_live_rows(
            _counts([1, 1, 1], [999] * 3),
            PruningPolicy(DROP),
            capacity=1,
            protected=np.ones(3, dtype=bool),
        )
    assert e.value.kind is PlanErrorKind.CONSTRAINT_CONFLICT and "'t'" in str(e.value)


def test_bad_policy_values_are_reported_together() -> None:
    with pytest.raises(InputError) as e:
        select_live_rows(_counts([1], [999]), PruningPolicy(DROP, unseen_window_s=-1, min_count=-2))
    text = str(e.value)
    assert "unseen_window_s" in text and "min_count" in text
