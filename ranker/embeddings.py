"""The plan's embedding tables as trainable TorchRec modules (one process), and raw ids -> rows.

Training looks ids up in an ``EmbeddingBagCollection`` (pooled tables) and an
``EmbeddingCollection`` (sequence tables) whose tables are exactly the plan's (names, rows, dims,
pooling), so the trained weights are saved as an embed_store checkpoint of that plan and served
by the sharded runtime as they are (:meth:`PlanEmbeddings.weights`).

Ids: :class:`FeatureHasher` maps a feature's raw id keys to the table's ``hashed_id`` (what the
serving runtime takes) and to ``row`` (after the pruning remap: what the training modules index).
Pruned ids without a fallback row are dropped from their bag, as FBGEMM's pruned lookups skip them.

Request-level and candidate-level bags go through one EmbeddingBagCollection call with
``stride = num_candidates``: a request feature fills only its first ``num_requests`` bags, so user
ids are looked up once per request, not once per candidate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from adrank.errors import PlanError, PlanErrorKind
from adrank.idmap import hashed_to_rows, id_keys_to_hashed, load_dedicated_keys
from adrank.types import PoolingType as AdrankPooling
from adrank.types import ShardPlan
from embed_store.sharded_runtime import load_remaps
from ranker.data import FeatureRoles, Jagged, RequestBatch

__all__ = ["EmbeddedBatch", "FeatureHasher", "PlanEmbeddings", "table_modules"]


class FeatureHasher:
    """Raw id keys of a plan's features -> ``hashed_id`` and ``row``.

    Args:
        plan: The plan.
        plan_dir: Its directory (dedicated-key sidecars and pruning remaps are read from it).
    """

    def __init__(self, plan: ShardPlan, plan_dir: str | Path) -> None:
        self.plan = plan
        self._slots = {f.name: (t, f) for t in plan.tables for f in t.features}
        self._dedicated = {
            name: load_dedicated_keys(plan_dir, f) for name, (_, f) in self._slots.items()
        }
        self._remaps = load_remaps(plan, plan_dir)
        unmapped = [
            t.name for t in plan.tables if t.num_rows < t.hashed_rows and t.name not in self._remaps
        ]
        if unmapped:
            raise PlanError(
                f"tables {unmapped} are planned with fewer rows than hashed ids but have no "
                "pruning remap",
                kind=PlanErrorKind.PLAN_MISMATCH,
                source=str(plan_dir),
                hint="run `adrank prune --plan DIR LOGS...` first, or plan with --no-prune",
            )

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self._slots)

    def hashed(self, feature: str, keys: np.ndarray) -> np.ndarray:
        """int64 hashed ids (serving input)."""
        _, slot = self._slots[feature]
        return id_keys_to_hashed(slot, keys, self._dedicated[feature])

    def rows(self, feature: str, bags: Jagged) -> Jagged:
        """The same bags as table rows; pruned ids without a fallback are dropped."""
        table, _ = self._slots[feature]
        rows = hashed_to_rows(
            self.hashed(feature, bags.values), self._remaps.get(table.name), table.fallback_row
        )
        keep = rows >= 0
        if keep.all():
            return Jagged(rows, bags.lengths)
        bag_of = np.repeat(np.arange(len(bags.lengths)), bags.lengths)
        lengths = np.bincount(bag_of[keep], minlength=len(bags.lengths)).astype(np.int64)
        return Jagged(rows[keep], lengths)


def table_modules(
    plan: ShardPlan, device: torch.device
) -> tuple[EmbeddingBagCollection, EmbeddingCollection | None]:
    """The plan's tables as trainable fp32 TorchRec modules: an ``EmbeddingBagCollection`` of
    the pooled tables and an ``EmbeddingCollection`` of the sequence ones (None without any).

    Used by one-process training and, on the meta device, by multi-process training before
    ``DistributedModelParallel`` shards them.
    """
    pooled = [t for t in plan.tables if t.pooling is not AdrankPooling.NONE]
    seq = [t for t in plan.tables if t.pooling is AdrankPooling.NONE]
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=t.name,
                embedding_dim=t.dim,
                num_embeddings=t.num_rows,
                feature_names=[f.name for f in t.features],
                pooling=PoolingType.MEAN if t.pooling is AdrankPooling.MEAN else PoolingType.SUM,
            )
            for t in pooled
        ],
        device=device,
    )
    ec = (
        EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name=t.name,
                    embedding_dim=t.dim,
                    num_embeddings=t.num_rows,
                    feature_names=[f.name for f in t.features],
                )
                for t in seq
            ],
            device=device,
        )
        if seq
        else None
    )
    return ebc, ec


@dataclasses.dataclass(frozen=True, slots=True)
class EmbeddedBatch:
    """A batch's embeddings, ready for :mod:`ranker.inputs`.

    Attributes:
        request_pooled: ``[R, sum of request feature dims]``.
        candidate_pooled: ``[C, sum of candidate feature dims]``.
        sequence: ``[R, L, sum of sequence feature dims]`` (L = longest sequence, >= 0).
        sequence_mask: bool ``[R, L]``.
    """

    request_pooled: torch.Tensor
    candidate_pooled: torch.Tensor
    sequence: torch.Tensor
    sequence_mask: torch.Tensor


class PlanEmbeddings(nn.Module):
    """Trainable tables of a plan, looked up by feature roles.

    Args:
        plan: The plan.
        plan_dir: Its directory.
        roles: Which features are request-level, candidate-level and sequences.
        max_sequence_len: Sequences are cut to their most recent items (None: no cut).
        init_scale: Rows start uniform in ``[-s, s]`` with ``s = init_scale / sqrt(dim)`` (as
            embed_store's ``init_checkpoint``); torch's default N(0, 1) rows made the towers'
            inputs too large to train stably.
        seed: Seed of that initialisation.
    """

    def __init__(
        self,
        plan: ShardPlan,
        plan_dir: str | Path,
        roles: FeatureRoles,
        *,
        max_sequence_len: int | None = None,
        init_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.roles = roles
        self.hasher = FeatureHasher(plan, plan_dir)
        self.max_sequence_len = max_sequence_len
        self.ebc, self.ec = table_modules(plan, torch.device("cpu"))
        pooled = [t for t in plan.tables if t.pooling is not AdrankPooling.NONE]
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for t in plan.tables:
                module = (
                    self.ec.embeddings[t.name]
                    if self.ec is not None and t.pooling is AdrankPooling.NONE
                    else self.ebc.embedding_bags[t.name]
                )
                bound = init_scale / float(np.sqrt(t.dim))
                w = module.weight  # type: ignore[union-attr]
                w.copy_(torch.rand(w.shape, generator=gen) * (2 * bound) - bound)
        # Sparse gradients: a step touches the rows its ids read, not every row of every table
        # (dense gradients made each step cost a pass over all tables: ~0.8 s on the demo plan).
        for module in self.ebc.embedding_bags.values():
            module.sparse = True  # type: ignore[union-attr]
        if self.ec is not None:
            for module in self.ec.embeddings.values():
                module.sparse = True  # type: ignore[union-attr]
        self._pooled_features = [f.name for t in pooled for f in t.features]
        self._dims = {f.name: t.dim for t in plan.tables for f in t.features}

    def dims(self) -> tuple[int, int, int]:
        """Widths of ``(request_pooled, candidate_pooled, sequence)``."""
        return (
            sum(self._dims[f] for f in self.roles.request_sparse),
            sum(self._dims[f] for f in self.roles.candidate_sparse),
            sum(self._dims[f] for f in self.roles.sequences),
        )

    def forward(self, batch: RequestBatch) -> EmbeddedBatch:
        r, c = batch.num_requests, batch.num_candidates
        stride = max(r, c)
        values, lengths = [], []
        for f in self._pooled_features:
            if f in batch.request_sparse:
                bags, n = batch.request_sparse[f], r
            elif f in batch.candidate_sparse:
                bags, n = batch.candidate_sparse[f], c
            else:  # a plan feature this model does not use: empty bags
                bags, n = Jagged(np.zeros(0, np.int64), np.zeros(0, np.int64)), 0
            rows = self.hasher.rows(f, bags)
            values.append(rows.values)
            lengths.append(np.concatenate([rows.lengths, np.zeros(stride - n, dtype=np.int64)]))
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=self._pooled_features,
            values=torch.from_numpy(np.concatenate(values)),
            lengths=torch.from_numpy(np.concatenate(lengths)),
        )
        pooled = self.ebc(kjt).to_dict()
        req = _cat([pooled[f][:r] for f in self.roles.request_sparse], r)
        cand = _cat([pooled[f][:c] for f in self.roles.candidate_sparse], c)
        seq, mask = self._sequences(batch)
        return EmbeddedBatch(req, cand, seq, mask)

    def _sequences(self, batch: RequestBatch) -> tuple[torch.Tensor, torch.Tensor]:
        r = batch.num_requests
        if self.ec is None or not self.roles.sequences:
            return torch.zeros((r, 0, 0)), torch.zeros((r, 0), dtype=torch.bool)
        cut = {
            f: _truncate(batch.sequences[f], self.max_sequence_len) for f in self.roles.sequences
        }
        rows = {f: self.hasher.rows(f, cut[f]) for f in self.roles.sequences}
        # Items are aligned across sequence features; dropping a pruned id would misalign them,
        # so a table with pruned ids needs a fallback row (checked here, not silently skewed).
        for f in self.roles.sequences:
            if not np.array_equal(rows[f].lengths, cut[f].lengths):
                raise ValueError(f"sequence feature {f!r} lost pruned ids; plan it with a fallback")
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=list(self.roles.sequences),
            values=torch.from_numpy(np.concatenate([rows[f].values for f in self.roles.sequences])),
            lengths=torch.from_numpy(
                np.concatenate([rows[f].lengths for f in self.roles.sequences])
            ),
        )
        out = self.ec(kjt)
        lengths = torch.from_numpy(cut[self.roles.sequences[0]].lengths)
        longest = int(lengths.max()) if r else 0
        dense = [out[f].to_padded_dense(desired_length=longest) for f in self.roles.sequences]
        seq = torch.cat(dense, dim=2) if dense else torch.zeros((r, longest, 0))
        mask = torch.arange(longest).unsqueeze(0) < lengths.unsqueeze(1)
        return seq, mask

    def weights(self) -> dict[str, np.ndarray]:
        """Every table's float32 weights by table name (for an embed_store checkpoint)."""
        out = {
            name: m.weight.detach().numpy().copy() for name, m in self.ebc.embedding_bags.items()
        }
        if self.ec is not None:
            out.update(
                {name: m.weight.detach().numpy().copy() for name, m in self.ec.embeddings.items()}
            )
        return out


def _cat(parts: list[torch.Tensor], rows: int) -> torch.Tensor:
    return torch.cat(parts, dim=1) if parts else torch.zeros((rows, 0))


def _truncate(bags: Jagged, limit: int | None) -> Jagged:
    """Keep the first ``limit`` ids of each bag (sequences are most recent first)."""
    if limit is None or len(bags.lengths) == 0 or int(bags.lengths.max()) <= limit:
        return bags
    starts = np.concatenate([[0], np.cumsum(bags.lengths)[:-1]])
    kept = np.minimum(bags.lengths, limit)
    idx = np.concatenate([np.arange(s, s + k) for s, k in zip(starts, kept, strict=True)])
    return Jagged(bags.values[idx.astype(np.int64)], kept.astype(np.int64))
