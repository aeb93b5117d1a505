"""The pruning remaps (adrank.remap) are in the layout FBGEMM's pruned lookups read.

``torch.ops.fbgemm.pruned_array_lookup`` on :func:`fbgemm_index_remappings`' arrays gives the rows
numpy's :meth:`RowRemap.rows_for` gives, for int32 and int64 indices, with an unremapped table in
the middle; and an IntNBit TBE given the per-table lookup arrays pools the compacted rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fbgemm_gpu.split_embedding_configs import SparseType
from fbgemm_gpu.split_table_batched_embeddings_ops_inference import (
    IntNBitTableBatchedEmbeddingBagsCodegen,
)
from fbgemm_gpu.tbe.config.embedding_config import EmbeddingLocation

from adrank.remap import fbgemm_index_remappings
from pruning import build_remap, compact_rows


def _remaps():
    rng = np.random.default_rng(0)
    r0 = build_remap(rng.random(50) < 0.3, table="t0")  # fallback row after the kept rows
    r2 = build_remap(rng.random(40) < 0.5, table="t2", fallback_row=None)
    return [r0, None, r2], [50, 20, 40]


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_pruned_array_lookup_reads_our_layout(dtype: type[np.integer]) -> None:
    remaps, hashed_rows = _remaps()
    array, offsets = fbgemm_index_remappings(remaps, dtype)
    rng = np.random.default_rng(1)
    batch = 6
    lengths = rng.integers(0, 5, size=3 * batch)
    ids = [rng.integers(0, hashed_rows[i // batch], size=n) for i, n in enumerate(lengths)]
    indices = np.concatenate(ids).astype(dtype)
    bag_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(dtype)
    got = torch.ops.fbgemm.pruned_array_lookup(
        torch.from_numpy(indices),
        torch.from_numpy(bag_offsets),
        torch.from_numpy(array),
        torch.from_numpy(offsets),
    ).numpy()
    want = []
    for i, bag in enumerate(ids):
        r = remaps[i // batch]
        want.append(bag if r is None else r.rows_for(bag))
    assert got.dtype == dtype
    assert got.tolist() == np.concatenate(want).tolist()


def test_intnbit_tbe_pools_compacted_rows_through_the_remap() -> None:
    dim = 8
    rng = np.random.default_rng(2)
    remap = build_remap(rng.random(30) < 0.4, table="t")
    trained = rng.normal(size=(30, dim)).astype(np.float32)
    compacted = compact_rows(trained, remap).astype(np.float16)
    tbe = IntNBitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[("t", remap.num_rows, dim, SparseType.FP16, EmbeddingLocation.HOST)],
        index_remapping=[torch.from_numpy(remap.lookup_array(np.int32))],
        device="cpu",
        output_dtype=SparseType.FP32,
    )
    tbe.fill_random_weights()
    tbe.split_embedding_weights()[0][0].view(torch.float16).copy_(torch.from_numpy(compacted))
    hashed = rng.integers(0, 30, size=12)
    offsets = np.array([0, 3, 3, 7, 12])
    out = tbe(
        torch.from_numpy(hashed.astype(np.int32)), torch.from_numpy(offsets.astype(np.int32))
    ).numpy()
    rows = remap.rows_for(hashed)
    bags = zip(offsets[:-1], offsets[1:], strict=True)
    want = np.stack([compacted[rows[a:b]].astype(np.float32).sum(axis=0) for a, b in bags])
    assert np.allclose(out, want, atol=1e-2)
