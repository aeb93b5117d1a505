"""compact_rows / compact_npy: kept rows move to their new row; the fallback row as declared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrank.errors import InputError, NotFoundError
from adrank.remap import RowRemap
from pruning import FallbackInit, build_remap, compact_npy, compact_rows

REMAP = RowRemap("t", np.array([0, -1, 1, -1], dtype=np.int64), 4, 2, 3)
W = np.array([[1, 1], [5, 5], [3, 3], [7, 9]], dtype=np.float32)


def test_worked_example_mean_of_pruned() -> None:
    out = compact_rows(W, REMAP)
    # rows 0, 1 <- hashed 0, 2; row 2 spare (zeros); fallback row 3 = mean of hashed 1 and 3.
    assert out.tolist() == [[1, 1], [3, 3], [0, 0], [6, 7]]
    assert out.dtype == np.float32


def test_zero_and_traffic_weighted_fallbacks() -> None:
    assert compact_rows(W, REMAP, fallback_init=FallbackInit.ZEROS)[3].tolist() == [0, 0]
    counts = np.array([0, 3, 0, 1])
    out = compact_rows(W, REMAP, fallback_init=FallbackInit.TRAFFIC_MEAN_OF_PRUNED, counts=counts)
    assert out[3].tolist() == [5.5, 6.0]
    # No lookups on pruned rows: the plain mean.
    zero = np.zeros(4, dtype=np.int64)
    out = compact_rows(W, REMAP, fallback_init=FallbackInit.TRAFFIC_MEAN_OF_PRUNED, counts=zero)
    assert out[3].tolist() == [6, 7]


def test_one_dimensional_optimizer_state() -> None:
    state = np.array([0.5, 1.0, 2.0, 3.0], dtype=np.float32)
    assert compact_rows(state, REMAP, fallback_init=FallbackInit.ZEROS).tolist() == [0.5, 2, 0, 0]


def test_quantized_rows_need_a_zero_fallback() -> None:
    q = np.arange(8, dtype=np.uint8).reshape(4, 2)
    with pytest.raises(InputError, match="ZEROS"):
        compact_rows(q, REMAP)
    assert compact_rows(q, REMAP, fallback_init=FallbackInit.ZEROS)[1].tolist() == [4, 5]


def test_shape_and_count_problems_are_reported_together() -> None:
    with pytest.raises(InputError) as e:
        compact_rows(W[:3], REMAP, fallback_init=FallbackInit.TRAFFIC_MEAN_OF_PRUNED)
    assert "expected 4 rows" in str(e.value) and "lookups per hashed id" in str(e.value)


def test_npy_file_compaction(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", W)
    compact_npy(tmp_path / "w.npy", tmp_path / "out" / "w2.npy", REMAP)
    assert np.load(tmp_path / "out" / "w2.npy").tolist() == compact_rows(W, REMAP).tolist()
    with pytest.raises(NotFoundError):
        compact_npy(tmp_path / "missing.npy", tmp_path / "x.npy", REMAP)
    assert not (tmp_path / "x.npy").exists()


@settings(max_examples=100, deadline=None)
@given(keep=st.lists(st.booleans(), min_size=1, max_size=60), seed=st.integers(0, 2**16))
def test_every_kept_row_carries_its_old_weights(keep: list[bool], seed: int) -> None:
    k = np.array(keep, dtype=bool)
    remap = build_remap(k)
    w = np.random.default_rng(seed).normal(size=(k.size, 3)).astype(np.float32)
    out = compact_rows(w, remap)
    kept = np.flatnonzero(k)
    assert np.array_equal(out[remap.hashed_to_row[kept]], w[kept])
    if (~k).any():
        assert np.allclose(out[remap.fallback_row], w[~k].mean(axis=0), atol=1e-6)
