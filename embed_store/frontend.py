"""Rank 0's side of a lookup: check the batch, turn it into the wire batch, and combine the ranks'
partial outputs into pooled embeddings.

Encoding validates everything before any rank does work (unknown features, ids outside a
table's ``hashed_id`` range, inconsistent lengths: one :class:`~adrank.errors.InputError` naming
the field), applies each table's pruning remap (``hashed_id -> row``, pruned ids to the fallback
row or ``-1``), and lays the bags out in wire order with ``batch = max(candidates, requests)``
bags per feature (a request-level feature fills only its first ``num_requests`` bags: it is looked
up once per request, not once per candidate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm: pruned_array_lookup)
import numpy as np
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedTensor

from adrank.errors import InputError, PlanError, PlanErrorKind
from adrank.idmap import id_keys_to_hashed
from adrank.types import ShardPlan
from embed_store.batch import JaggedIds, LookupBatch, LookupResult
from embed_store.layout import LookupLayout

__all__ = ["LookupFrontend", "WireBatch", "hash_id_keys"]


@dataclasses.dataclass(frozen=True, slots=True)
class WireBatch:
    """A batch as every rank reads it.

    Attributes:
        rows: int64 ids in ``row`` space, wire feature order (``-1`` = pruned, no fallback).
        lengths: int64 ``[num_features * batch]`` bag lengths.
        batch: Bags per feature.
        num_candidates: Candidate bags (first rows of candidate-level features).
        num_requests: Request bags (first rows of request-level features).
        candidate_features: Wire indices of the batch's candidate-level features, in its order.
        request_features: Wire indices of its request-level features, in its order.
        candidate_request: As in :class:`~embed_store.batch.LookupBatch`.
    """

    rows: torch.Tensor
    lengths: torch.Tensor
    batch: int
    num_candidates: int
    num_requests: int
    candidate_features: tuple[int, ...]
    request_features: tuple[int, ...]
    candidate_request: torch.Tensor | None


def hash_id_keys(
    plan: ShardPlan,
    feature: str,
    id_keys: np.ndarray,
    dedicated_keys: np.ndarray | None = None,
) -> np.ndarray:
    """Raw int64 id keys of ``feature`` -> its table's ``hashed_id`` (what a lookup takes).

    Raises:
        KeyError: No table holds ``feature``.
    """
    _, slot = plan.table_of_feature(feature)
    return id_keys_to_hashed(slot, id_keys, dedicated_keys)


class LookupFrontend:
    """Encodes lookups into wire batches and combines partial outputs (rank 0 only).

    Args:
        plan: The plan the runtime serves.
        layout: Its lookup layout.
        remaps: Table name -> int64 remap (``hashed_id -> row``, -1 pruned) for pruned tables.
    """

    def __init__(
        self, plan: ShardPlan, layout: LookupLayout, remaps: Mapping[str, np.ndarray]
    ) -> None:
        self.layout = layout
        self._index = layout.feature_index()
        tables = {t.name: t for t in plan.tables}
        unmapped = [
            t.name for t in plan.tables if t.num_rows < t.hashed_rows and t.name not in remaps
        ]
        if unmapped:
            # Without the remap a hashed id past num_rows would read outside the table.
            raise PlanError(
                f"tables {unmapped} are planned with fewer rows than hashed ids but have no "
                "pruning remap",
                kind=PlanErrorKind.PLAN_MISMATCH,
                hint="run `adrank prune --plan DIR LOGS...` first, or plan with --no-prune",
            )
        self._hashed_rows = [tables[t].hashed_rows for t in layout.tables]
        self._remaps: list[torch.Tensor | None] = []
        cache: dict[str, torch.Tensor] = {}
        for tname in layout.tables:
            t = tables[tname]
            if t.name not in remaps:
                self._remaps.append(None)
                continue
            if t.name not in cache:
                r = torch.from_numpy(np.asarray(remaps[t.name], dtype=np.int64).copy())
                if t.fallback_row is not None:
                    r[r < 0] = t.fallback_row
                cache[t.name] = r
            self._remaps.append(cache[t.name])
        # Copy blocks per (rank, kernel group), in that group's own output columns.
        self._blocks: list[list[list[tuple[int, int, int]]]] = []
        for rl in layout.ranks:
            per_group, start = [], 0
            for g in rl.groups:
                per_group.append(_copy_blocks(rl.out_cols[start : start + g.num_cols]))
                start += g.num_cols
            self._blocks.append(per_group)
        self._group_cols = [[g.num_cols for g in rl.groups] for rl in layout.ranks]
        self._no_remaps = all(r is None for r in self._remaps)
        self._mean = [i for i, m in enumerate(layout.mean_pooled) if m]

    # ---------------------------------------------------------------------------------------------
    def encode(self, batch: LookupBatch) -> WireBatch:
        """Validate ``batch`` and lay it out for the ranks.

        Raises:
            InputError: Unknown or repeated features, malformed jagged ids, ids out of range, or a
                bad ``candidate_request``; every problem at once, each naming its field.
        """
        cand = batch.candidates
        req = batch.requests
        cand.validate("candidates")
        if req is not None:
            req.validate("requests")
        problems: list[InputError] = []
        cand_idx = self._feature_indices(cand, "candidates", problems)
        req_idx = self._feature_indices(req, "requests", problems) if req is not None else []
        both = sorted(set(cand.features) & set(req.features if req is not None else ()))
        if both:
            problems.append(
                InputError(
                    f"features {both} are given both per candidate and per request",
                    source="requests",
                    hint="a feature is either request-level or candidate-level in one lookup",
                )
            )
        n_req = batch.num_requests
        if batch.candidate_request is not None:
            cr = batch.candidate_request
            if cr.dim() != 1 or cr.numel() != cand.batch_size:
                problems.append(
                    InputError(
                        f"candidate_request needs one entry per candidate ({cand.batch_size}), got "
                        f"shape {tuple(cr.shape)}",
                        source="candidate_request",
                    )
                )
            elif cr.numel() and (int(cr.min()) < 0 or int(cr.max()) >= max(n_req, 1)):
                problems.append(
                    InputError(
                        f"candidate_request entries must be in [0, {max(n_req, 1)}), got "
                        f"[{int(cr.min())}, {int(cr.max())}]",
                        source="candidate_request",
                    )
                )
        if problems:
            raise InputError.from_problems(problems)

        num_features = len(self.layout.features)
        if req is None and self._no_remaps and tuple(cand_idx) == tuple(range(num_features)):
            # The batch is already the wire: check ranges, then use it without copying.
            self._check_ranges(cand, problems)
            if problems:
                raise InputError.from_problems(problems)
            return WireBatch(
                rows=cand.values,
                lengths=cand.lengths,
                batch=cand.batch_size,
                num_candidates=cand.batch_size,
                num_requests=0,
                candidate_features=tuple(cand_idx),
                request_features=(),
                candidate_request=batch.candidate_request,
            )
        b = max(cand.batch_size, n_req)
        lengths = torch.zeros((num_features, b), dtype=torch.int64)
        segments: dict[int, torch.Tensor] = {}
        for source, idx, name in ((cand, cand_idx, "candidates"), (req, req_idx, "requests")):
            if source is None or not idx:
                continue
            bs = source.batch_size
            lens = source.lengths.view(len(idx), bs)
            lengths[torch.tensor(idx), :bs] = lens
            ends = torch.cumsum(lens.sum(dim=1), 0).tolist()
            start = 0
            for k, fi in enumerate(idx):
                seg = source.values[start : ends[k]]
                segments[fi] = self._to_rows(
                    fi, seg, f"{name}.values[{source.features[k]}]", problems
                )
                start = ends[k]
        if problems:
            raise InputError.from_problems(problems)
        ordered = [segments[fi] for fi in sorted(segments)]
        rows = torch.cat(ordered) if ordered else torch.empty(0, dtype=torch.int64)
        return WireBatch(
            rows=rows,
            lengths=lengths.reshape(-1),
            batch=b,
            num_candidates=cand.batch_size,
            num_requests=n_req,
            candidate_features=tuple(cand_idx),
            request_features=tuple(req_idx),
            candidate_request=batch.candidate_request,
        )

    def _feature_indices(
        self, ids: JaggedIds | None, where: str, problems: list[InputError]
    ) -> list[int]:
        if ids is None:
            return []
        unknown = [f for f in ids.features if f not in self._index]
        if unknown:
            problems.append(
                InputError(
                    f"unknown features {unknown}",
                    source=f"{where}.features",
                    hint=f"the plan serves: {', '.join(self.layout.features[:20])}"
                    + (" ..." if len(self.layout.features) > 20 else ""),
                )
            )
        return [self._index[f] for f in ids.features if f in self._index]

    def _check_ranges(self, ids: JaggedIds, problems: list[InputError]) -> None:
        if ids.batch_size == 0 or not ids.features:
            return
        ends = torch.cumsum(ids.lengths.view(len(ids.features), ids.batch_size).sum(dim=1), 0)
        start = 0
        for k, end in enumerate(ends.tolist()):
            seg = ids.values[start:end]
            self._in_range(k, seg, f"candidates.values[{ids.features[k]}]", problems)
            start = end

    def _in_range(self, fi: int, seg: torch.Tensor, where: str, problems: list[InputError]) -> bool:
        if seg.numel() == 0:
            return True
        lo, hi = (int(x) for x in torch.aminmax(seg))
        limit = self._hashed_rows[fi]
        if lo >= 0 and hi < limit:
            return True
        bad = int(((seg < 0) | (seg >= limit)).nonzero()[0])
        problems.append(
            InputError(
                f"id {int(seg[bad])} at position {bad} is outside the table's hashed-id range "
                f"[0, {limit})",
                source=where,
                hint="hash raw ids first (embed_store.frontend.hash_id_keys)",
            )
        )
        return False

    def _to_rows(
        self, fi: int, seg: torch.Tensor, where: str, problems: list[InputError]
    ) -> torch.Tensor:
        if seg.numel() == 0:
            return seg.to(torch.int64)
        seg = seg.to(torch.int64)
        if not self._in_range(fi, seg, where, problems):
            return seg
        remap = self._remaps[fi]
        if remap is None:
            return seg
        # FBGEMM's pruned array lookup (the kernel its quantized inference TBE uses for index
        # remapping), one table, the whole segment as one bag: hashed_id -> row.
        return torch.ops.fbgemm.pruned_array_lookup(
            seg,
            torch.tensor([0, seg.numel()], dtype=torch.int64),
            remap,
            torch.tensor([0, remap.numel()], dtype=torch.int64),
        )

    # ---------------------------------------------------------------------------------------------
    def combine(
        self,
        wire: WireBatch,
        partials: Sequence[torch.Tensor | Sequence[torch.Tensor] | None],
        sequences: Sequence[Sequence[torch.Tensor]] | None = None,
        out: torch.Tensor | None = None,
    ) -> LookupResult:
        """Add up / place the ranks' partial outputs and cut them into the result.

        Args:
            wire: The encoded batch.
            partials: Per rank, in rank order: its ``[batch, num_cols]`` pooled output, or the
                outputs of its kernel groups (saves one copy when the ranks run in this process).
            sequences: Per rank, its sequence groups' ``[ids, width]`` outputs (None: the plan
                has no sequence tables).
            out: The pooled result ``[batch, total_cols]`` when some ranks already wrote their
                columns into it (their ``partials`` entry is None; only without row splits).
        """
        layout = self.layout
        if out is None:
            out = (torch.zeros if layout.overlapping else torch.empty)(
                (wire.batch, layout.total_cols), dtype=torch.float32
            )
        for r, partial in enumerate(partials):
            if partial is None:  # already written into ``out`` by the rank itself
                continue
            pieces = (
                partial.split(self._group_cols[r], dim=1)
                if isinstance(partial, torch.Tensor)
                else partial
            )
            for blocks, piece in zip(self._blocks[r], pieces, strict=True):
                for src, dst, n in blocks:
                    target = out[:, dst : dst + n]
                    if layout.overlapping:
                        target.add_(piece[:, src : src + n])
                    else:
                        target.copy_(piece[:, src : src + n])
        if self._mean and wire.batch:
            lengths = wire.lengths.view(len(layout.features), wire.batch)
            for fi in self._mean:
                c = layout.col_offsets[fi]
                denom = lengths[fi].clamp(min=1).to(torch.float32).unsqueeze(1)
                out[:, c : c + layout.dims[fi]].div_(denom)
        candidates = self._keyed(out, wire.num_candidates, wire.candidate_features)
        requests = (
            self._keyed(out, wire.num_requests, wire.request_features)
            if wire.request_features
            else None
        )
        return LookupResult(
            candidates=candidates,
            requests=requests,
            candidate_request=wire.candidate_request,
            sequences=self._sequences(wire, sequences) if sequences is not None else {},
        )

    def _sequences(
        self, wire: WireBatch, per_rank: Sequence[Sequence[torch.Tensor]]
    ) -> dict[str, JaggedTensor]:
        """Each sequence feature of the batch: ``[ids, dim]`` rows, one per id, in bag order."""
        layout = self.layout
        nf = len(layout.features)
        lengths = (
            wire.lengths.view(nf, wire.batch)
            if wire.batch
            else torch.zeros((nf, 0), dtype=torch.int64)
        )
        counts = lengths.sum(dim=1).tolist() if wire.batch else [0] * nf
        wanted = {
            fi: n
            for fis, n in (
                (wire.candidate_features, wire.num_candidates),
                (wire.request_features, wire.num_requests),
            )
            for fi in fis
            if layout.sequence[fi]
        }
        outs = {
            fi: torch.zeros((int(counts[fi]), layout.dims[fi]), dtype=torch.float32)
            for fi in wanted
        }
        for r, pieces in enumerate(per_rank):
            for group, piece in zip(layout.ranks[r].sequence_groups, pieces, strict=True):
                start = 0
                for p in group.pairs:
                    n = int(counts[p.feature])
                    if p.feature in outs and n:
                        outs[p.feature][:, p.out_col : p.out_col + p.num_cols].add_(
                            piece[start : start + n]
                        )
                    start += n
        return {
            layout.features[fi]: JaggedTensor(values=outs[fi], lengths=lengths[fi, :bags].clone())
            for fi, bags in wanted.items()
        }

    def _keyed(self, out: torch.Tensor, rows: int, features: tuple[int, ...]) -> KeyedTensor:
        layout = self.layout
        features = tuple(f for f in features if not layout.sequence[f])
        keys = [layout.features[f] for f in features]
        dims = [layout.dims[f] for f in features]
        if features == tuple(range(layout.num_pooled)):
            values = out[:rows]
        else:
            cols = (
                torch.cat(
                    [
                        torch.arange(layout.col_offsets[f], layout.col_offsets[f] + layout.dims[f])
                        for f in features
                    ]
                )
                if features
                else torch.empty(0, dtype=torch.int64)
            )
            values = out[:rows].index_select(1, cols)
        return KeyedTensor(keys=keys, length_per_key=dims, values=values)


def _copy_blocks(out_cols: torch.Tensor) -> list[tuple[int, int, int]]:
    """Runs of consecutive columns: ``(partial_col, result_col, width)``."""
    cols = out_cols.tolist()
    blocks: list[tuple[int, int, int]] = []
    for src, dst in enumerate(cols):
        if blocks and blocks[-1][0] + blocks[-1][2] == src and blocks[-1][1] + blocks[-1][2] == dst:
            s, d, n = blocks[-1]
            blocks[-1] = (s, d, n + 1)
        else:
            blocks.append((src, dst, 1))
    return blocks
