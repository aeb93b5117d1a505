"""One rank's part of a lookup: its shards in FBGEMM modules, fed from the wire batch.

The wire batch (see :mod:`embed_store.layout`) holds every pooled feature's bags with ids already
in ``row`` space. A rank cuts out the bags of its units' features, shifts ids into each shard's
``local_row`` space (``-1`` for rows another shard holds, which FBGEMM's kernel skips), and runs one
quantized-inference TBE call per kernel group, the groups on parallel threads (the CPU kernel is
single-threaded per call). The result is the rank's partial output ``[batch, num_cols]``.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from adrank.types import Precision
from embed_store.layout import KernelGroup, RankLayout, ShardUnit
from embed_store.quantize import TbeTable, build_tbe

__all__ = [
    "BlockReader",
    "RankCompute",
    "feature_value_offsets",
    "ids_per_feature",
    "split_rank_output",
]

logger = logging.getLogger(__name__)

BlockReader = Callable[[str, int, int, int, int], np.ndarray]
"""``read(table, row_start, row_stop, col_start, col_stop) -> float32 block`` (a checkpoint's
:meth:`~embed_store.checkpoint.Checkpoint.read_block`)."""


def feature_value_offsets(lengths: torch.Tensor, num_features: int, batch: int) -> list[int]:
    """Start of each feature's ids in the wire ``values`` (plus the end), from bag lengths."""
    if num_features == 0:
        return [0]
    per_feature = (
        lengths.view(num_features, batch).sum(dim=1)
        if batch
        else torch.zeros(num_features, dtype=torch.int64)
    )
    return [0, *torch.cumsum(per_feature, 0).tolist()]


def ids_per_feature(lengths: torch.Tensor, num_features: int, batch: int) -> list[int]:
    if num_features == 0 or batch == 0:
        return [0] * num_features
    return [int(x) for x in lengths.view(num_features, batch).sum(dim=1).tolist()]


def split_rank_output(
    layout: RankLayout, flat: torch.Tensor, ids_per_feature: list[int], batch: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Views of a rank's flat float32 output: pooled ``[batch, num_cols]`` then one
    ``[ids, width]`` block per sequence group (sizes from the wire's id counts)."""
    n = batch * layout.num_cols
    pooled = flat[:n].view(batch, layout.num_cols)
    pieces = []
    for g in layout.sequence_groups:
        ids = sum(ids_per_feature[p.feature] for p in g.pairs)
        pieces.append(flat[n : n + ids * g.num_cols].view(ids, g.num_cols))
        n += ids * g.num_cols
    return pooled, pieces


def _read_unit(read: BlockReader, u: ShardUnit) -> np.ndarray:
    """The float32 block of the checkpoint a unit (one shard) holds."""
    s = u.shard
    return read(
        u.table, s.row_offset, s.row_offset + s.num_rows, s.col_offset, s.col_offset + s.num_cols
    )


class _Fp32BagKernel:
    """A pooled group whose units are all fp32: torch's ``embedding_bag`` per (unit, feature).

    On CPU it beats FBGEMM's quantized-inference kernel at fp32 (measured 2.3 vs 2.85 ms per
    82k lookups of 64 floats on one thread) and parallelises over bags inside one call, so a rank
    of fp32 tables uses one such group on all its threads. Each unit gets one extra zero row at
    its end: ids of rows another shard holds (and pruned ids, ``-1``) read it, adding nothing.
    """

    def __init__(self, group: KernelGroup, read: BlockReader) -> None:
        self.group = group
        self.weights = []
        for u in group.units:
            block = _read_unit(read, u)
            w = torch.zeros((u.shard.num_rows + 1, u.shard.num_cols), dtype=torch.float32)
            w[:-1].copy_(torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)))
            self.weights.append(w)

    def __call__(
        self,
        rows: torch.Tensor,
        lengths_2d: torch.Tensor,
        value_offsets: list[int],
        out: torch.Tensor | None = None,
        pair_outs: list[torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        outs = []
        col = 0
        for k, p in enumerate(self.group.pairs):
            seg = rows[value_offsets[p.feature] : value_offsets[p.feature + 1]]
            zero_row = p.num_rows
            if p.covers_all_rows:
                ids = (
                    torch.where(seg >= 0, seg, zero_row)
                    if seg.numel() and int(seg.min()) < 0
                    else seg
                )
            else:
                local = seg - p.row_offset
                ids = torch.where((local >= 0) & (local < p.num_rows), local, zero_row)
            lengths = lengths_2d[p.feature]
            offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
            torch.cumsum(lengths, 0, out=offsets[1:])
            with torch.no_grad():
                pooled = torch.nn.functional.embedding_bag(
                    ids, self.weights[p.unit], offsets, mode="sum", include_last_offset=True
                )
            if pair_outs is not None:
                pair_outs[k].copy_(pooled)
            elif out is not None:
                out[:, col : col + p.num_cols].copy_(pooled)
            else:
                outs.append(pooled)
            col += p.num_cols
        if pair_outs is not None:
            return None
        if out is not None:
            return out
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]


class _GroupKernel:
    """One kernel group: its FBGEMM module and how to cut its input out of the wire."""

    def __init__(self, group: KernelGroup, read: BlockReader, pooled: bool = True) -> None:
        self.group = group
        tables = [
            TbeTable(u.label, u.shard.num_rows, u.shard.num_cols, u.precision) for u in group.units
        ]
        weights = [_read_unit(read, u) for u in group.units]
        self.module = build_tbe(
            tables, weights, feature_table_map=[p.unit for p in group.pairs], pooled=pooled
        )
        self.features = torch.tensor([p.feature for p in group.pairs], dtype=torch.int64)

    def __call__(
        self,
        rows: torch.Tensor,
        lengths_2d: torch.Tensor,
        value_offsets: list[int],
        out: torch.Tensor | None = None,
        pair_outs: list[torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        pieces = []
        for p in self.group.pairs:
            seg = rows[value_offsets[p.feature] : value_offsets[p.feature + 1]]
            if not p.covers_all_rows:
                local = seg - p.row_offset
                seg = torch.where((local >= 0) & (local < p.num_rows), local, -1)
            pieces.append(seg)
        indices = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        lengths = lengths_2d.index_select(0, self.features).reshape(-1)
        offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        with torch.no_grad():
            result = self.module(indices, offsets)
        if pair_outs is not None:
            col = 0
            for p, dest in zip(self.group.pairs, pair_outs, strict=True):
                dest.copy_(result[:, col : col + p.num_cols])
                col += p.num_cols
            return None
        if out is None:
            return result
        out.copy_(result)
        return out


class RankCompute:
    """A rank's shards, loaded, ready to compute partial outputs.

    Args:
        rank_layout: What this rank holds.
        num_features: Wire features (for cutting the wire lengths).
        read: Reads float32 blocks of the checkpoint.
    """

    def __init__(self, rank_layout: RankLayout, num_features: int, read: BlockReader) -> None:
        self.layout = rank_layout
        self.num_features = num_features
        self._kernels: list[_GroupKernel | _Fp32BagKernel] = [
            _Fp32BagKernel(g, read)
            if all(u.precision is Precision.FP32 for u in g.units)
            else _GroupKernel(g, read)
            for g in rank_layout.groups
        ]
        self._sequence_kernels = [
            _GroupKernel(g, read, pooled=False) for g in rank_layout.sequence_groups
        ]
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(
                max_workers=len(self._kernels) - 1, thread_name_prefix="adrank-kernel"
            )
            if len(self._kernels) > 1
            else None
        )

    @property
    def num_cols(self) -> int:
        """Columns of the partial output."""
        return self.layout.num_cols

    def compute(
        self,
        rows: torch.Tensor,
        lengths: torch.Tensor,
        batch: int,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Partial pooled output of this rank for one wire batch.

        Args:
            rows: int64 wire ids (``row`` space, ``-1`` = pruned).
            lengths: int64 ``[num_features * batch]`` wire bag lengths.
            batch: Bags per feature.
            out: Optional float32 ``[batch, num_cols]`` to write into (e.g. shared memory).

        Returns:
            float32 ``[batch, num_cols]`` (``out`` when given).
        """
        if out is None:
            out = torch.empty((batch, self.num_cols), dtype=torch.float32)
        # Each group writes its columns of ``out`` itself (one copy, not a gather then a copy).
        views, col = [], 0
        for g in self.layout.groups:
            views.append(out[:, col : col + g.num_cols])
            col += g.num_cols
        self.compute_groups(rows, lengths, batch, outs=views)
        return out

    def output_elems(self, lengths: torch.Tensor, batch: int) -> int:
        """float32 values of this rank's flat output (pooled part, then sequence groups)."""
        return batch * self.num_cols + self.layout.sequence_elems(
            ids_per_feature(lengths, self.num_features, batch)
        )

    def compute_flat(
        self, rows: torch.Tensor, lengths: torch.Tensor, batch: int, out: torch.Tensor
    ) -> None:
        """Write the rank's whole output into the flat float32 ``out`` (see :meth:`split_flat`)."""
        pooled, sequences = self.split_flat(out, lengths, batch)
        self.compute(rows, lengths, batch, out=pooled)
        for piece, result in zip(
            sequences, self.compute_sequences(rows, lengths, batch), strict=True
        ):
            piece.copy_(result)

    def split_flat(
        self, flat: torch.Tensor, lengths: torch.Tensor, batch: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Views of a flat output: pooled ``[batch, num_cols]`` and one ``[ids, width]`` per
        sequence group."""
        return split_rank_output(
            self.layout, flat, ids_per_feature(lengths, self.num_features, batch), batch
        )

    def compute_sequences(
        self, rows: torch.Tensor, lengths: torch.Tensor, batch: int
    ) -> list[torch.Tensor]:
        """Each sequence group's ``[ids of its pairs, width]`` rows (zero where another shard
        holds the id)."""
        if not self._sequence_kernels:
            return []
        lengths_2d = lengths.view(self.num_features, batch)
        offsets = feature_value_offsets(lengths, self.num_features, batch)
        results = [k(rows, lengths_2d, offsets) for k in self._sequence_kernels]
        return [r for r in results if r is not None]  # never None without pair_outs

    def compute_groups(
        self,
        rows: torch.Tensor,
        lengths: torch.Tensor,
        batch: int,
        outs: list[torch.Tensor] | None = None,
        pair_outs: list[list[torch.Tensor]] | None = None,
    ) -> list[Any]:
        """Like :meth:`compute`, but each kernel group's ``[batch, cols]`` output separately.

        Args:
            outs: Optional per-group ``[batch, cols]`` views to write into.
            pair_outs: Optional per group, per pair, the ``[batch, num_cols]`` view each pair
                writes (e.g. its columns of the final result: no copy afterwards); the groups
                then return None.
        """
        if not self._kernels:
            return []
        if batch == 0:
            return [torch.empty((0, g.num_cols), dtype=torch.float32) for g in self.layout.groups]
        lengths_2d = lengths.view(self.num_features, batch)
        offsets = feature_value_offsets(lengths, self.num_features, batch)
        n = len(self._kernels)
        targets: list[torch.Tensor | None] = list(outs) if outs is not None else [None] * n
        per_pair: list[list[torch.Tensor] | None] = (
            list(pair_outs) if pair_outs is not None else [None] * n
        )
        if self._pool is None:
            results = [self._kernels[0](rows, lengths_2d, offsets, targets[0], per_pair[0])]
        else:
            futures = [
                self._pool.submit(k, rows, lengths_2d, offsets, t, pp)
                for k, t, pp in zip(self._kernels[1:], targets[1:], per_pair[1:], strict=True)
            ]
            # The calling thread runs the first group itself instead of idling on the futures.
            results = [self._kernels[0](rows, lengths_2d, offsets, targets[0], per_pair[0])]
            results.extend(f.result() for f in futures)
        return results

    def close(self) -> None:
        """Stop the kernel threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
