"""build_remap: kept hashed ids get distinct rows 0..kept-1, pruned ones the declared fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrank.errors import InputError
from adrank.remap import PRUNED
from pruning import build_remap


def test_worked_example() -> None:
    r = build_remap(np.array([1, 0, 1, 1, 0, 1], dtype=bool), table="t")
    assert r.hashed_to_row.tolist() == [0, -1, 1, 2, -1, 3]
    assert (r.num_kept, r.fallback_row, r.num_rows) == (4, 4, 5)


def test_fallback_inside_the_kept_rows_is_skipped() -> None:
    r = build_remap(np.array([1, 1, 0, 1], dtype=bool), num_rows=4, fallback_row=1)
    assert r.hashed_to_row.tolist() == [0, 2, -1, 3]
    r.validate()


def test_no_fallback_and_spare_rows() -> None:
    r = build_remap(np.array([0, 1, 1], dtype=bool), num_rows=5, fallback_row=None)
    assert r.hashed_to_row.tolist() == [-1, 0, 1]
    assert r.fallback_row is None and r.num_rows == 5
    assert r.rows_for(np.array([0])).tolist() == [PRUNED]


def test_too_many_kept_rows_is_an_error_naming_the_table() -> None:
    with pytest.raises(InputError, match="'t_ad'") as e:
        build_remap(np.ones(5, dtype=bool), table="t_ad", num_rows=5, fallback_row="end")
    assert e.value.source == "t_ad"


@settings(max_examples=200, deadline=None)
@given(
    keep=st.lists(st.booleans(), min_size=0, max_size=300),
    extra_rows=st.integers(0, 5),
    fallback=st.sampled_from(["end", "none", "first"]),
)
def test_remap_invariants(keep: list[bool], extra_rows: int, fallback: str) -> None:
    k = np.array(keep, dtype=bool)
    kept = int(k.sum())
    num_rows = kept + extra_rows + (0 if fallback == "none" else 1)
    if fallback == "first" and num_rows == 0:
        return
    declared = {"end": "end", "none": None, "first": 0}[fallback]
    r = build_remap(k, num_rows=num_rows, fallback_row=declared)  # type: ignore[arg-type]
    r.validate()
    rows = r.hashed_to_row
    kept_rows = rows[k]
    # Every kept hashed id has its own row; pruned ones hold -1 and read the declared fallback.
    assert len(np.unique(kept_rows)) == kept
    assert np.all(rows[~k] == PRUNED)
    expected_fallback = {"end": num_rows - 1, "none": None, "first": 0}[fallback]
    assert r.fallback_row == expected_fallback
    if k.size:
        read = r.rows_for(np.arange(k.size))
        if expected_fallback is None:
            assert np.all(read[~k] == PRUNED)
        else:
            assert np.all(read[~k] == expected_fallback)
    if fallback != "first":
        # With the fallback after them, kept rows are exactly 0..kept-1, in hashed-id order.
        assert kept_rows.tolist() == list(range(kept))
    else:
        assert sorted(kept_rows.tolist()) == list(range(1, kept + 1))
