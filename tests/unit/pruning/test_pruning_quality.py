"""evaluate_pruning / pruned_traffic_share on a later window; report rendering."""

from __future__ import annotations

import numpy as np
import pytest

from adrank.errors import InputError
from pruning import (
    NEVER_ACCESSED_S,
    AccessCounts,
    PruningReport,
    build_remap,
    evaluate_pruning,
    pruned_traffic_share,
    render_pruning_report,
)


def _c(counts: list[int]) -> AccessCounts:
    a = np.array(counts, dtype=np.int64)
    return AccessCounts("t", a, np.full(a.size, NEVER_ACCESSED_S, np.int64))


def test_quality_shares() -> None:
    earlier = _c([5, 1, 0, 3, 0])
    remap = build_remap(np.array([True, False, False, True, True]), table="t")
    later = _c([2, 3, 4, 0, 1])  # 10 lookups
    q = evaluate_pruning(remap, earlier, later)
    assert q.lookups == 10
    assert q.pruned_share == pytest.approx(0.7)  # hashed 1 and 2
    assert q.untrained_share_before == pytest.approx(0.5)  # hashed 2 and 4
    assert q.untrained_share_after == pytest.approx(0.8)  # 1, 2, 4
    assert q.lost_trained_share == pytest.approx(0.3)  # hashed 1: pruned but trained
    assert q.kept_unused_rows == 1  # hashed 3
    assert pruned_traffic_share(remap, later) == pytest.approx(0.7)
    assert pruned_traffic_share(remap, _c([0] * 5)) == 0.0
    text = render_pruning_report(PruningReport(tables=()), [q])
    assert "| t | 10 | 70.00% | 50.00% | 80.00% | 30.00% | 1 |" in text


def test_size_mismatch_is_an_input_error() -> None:
    remap = build_remap(np.ones(3, dtype=bool), table="t")
    with pytest.raises(InputError, match="'t'"):
        evaluate_pruning(remap, _c([1, 1, 1]), _c([1, 1]))
