"""The large tier: DCNv2 cross layers and a deep network over ``[user, ad, attention output]``,
with target attention of the candidate ad over the user's long behaviour sequence.

Request side (once per request):

* the user tower ``u [R, Eu]`` over ``[pooled, dense, mean of the sequence]``;
* the sequence's keys ``K = S W_k + P[:L]`` (``P``: a learned offset per position, items being
  most recent first) and values ``V = S W_v``, ``[R, L, H]`` each, split into heads;
* the user parts of the two layers that read ``x0 = [u, a, t]``: ``V_0 x0 = V_u u + V_at [a; t]``
  for the first cross layer and ``W_d x0 + b = (W_u u + b) + W_at [a; t]`` for the deep network's
  first layer: ``V_u u`` and ``W_u u + b`` are computed here.

Candidate side (the only part that scales with candidates): the ad tower ``a [C, Ea]``, the query
``q = W_q a``, attention ``t = softmax(q K^T / sqrt(dh)) V`` (all candidates of a request in one
batched product against its keys: with one request ``[C, H] x [H, L]``, no per-candidate copy of
``K`` or ``V``), the candidate parts of the two first layers added to the request parts broadcast
as stride-0 views, the remaining cross layers and deep layers, and the output layer over
``[cross output, deep output]``. A cold-start user (no items) gets ``t = 0``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from adrank.errors import InputError
from ranker.base import RankerTier, RequestState, TierDims, TierName
from ranker.inputs import CandidateInputs, RequestInputs
from ranker.layers import (
    CandidateGrouping,
    CrossLayer,
    linear_flops,
    make_mlp,
    masked_mean,
    masked_softmax,
    mlp_flops,
)

__all__ = ["DcnAttentionState", "DcnAttentionRequestEncoder", "DcnAttentionTier"]


@dataclasses.dataclass(frozen=True, slots=True)
class DcnAttentionState(RequestState):
    """The large tier's request state.

    Attributes:
        user: ``[R, Eu]`` user tower output.
        keys_t: ``[R, heads, dh, L]`` the sequence's keys, transposed for ``q K^T``.
        values: ``[R, heads, L, dh]`` the sequence's values.
        mask: bool ``[R, 1, 1, L]`` the items present (broadcasts over heads and candidates).
        cross_user: ``[R, cross_rank]``: ``V_u u``, the user part of the first cross layer.
        deep_user: ``[R, top_sizes[0]]``: ``W_u u + b``, the user part of the deep network's
            first layer.
    """

    user: torch.Tensor
    keys_t: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    cross_user: torch.Tensor
    deep_user: torch.Tensor


class DcnAttentionRequestEncoder(nn.Module):
    """User tower, sequence keys and values, user halves of the first cross and deep layers.

    Args:
        dims: The tier's dimensions.
    """

    key_positions: torch.Tensor

    def __init__(self, dims: TierDims) -> None:
        super().__init__()
        h = dims.attention_dim
        self.heads = dims.attention_heads
        user_in = dims.user_pooled_dim + dims.user_dense_dim + dims.sequence_dim
        self.user_tower = make_mlp(user_in, dims.tower_sizes, activate_last=False)
        self.key_proj = nn.Linear(dims.sequence_dim, h, bias=False)
        self.value_proj = nn.Linear(dims.sequence_dim, h, bias=False)
        self.key_positions = nn.Parameter(torch.randn(dims.max_sequence_len, h) * 0.02)
        width = dims.tower_sizes[-1]
        self.cross_user = nn.Linear(width, dims.cross_rank, bias=False)
        self.deep_user = nn.Linear(width, dims.top_sizes[0], bias=True)

    def forward(self, req: RequestInputs) -> DcnAttentionState:
        r, length = req.num_requests, req.sequence_len
        seq = req.sequence
        user = self.user_tower(
            torch.cat([req.pooled, req.dense, masked_mean(seq, req.sequence_mask)], dim=1)
        )
        keys = self.key_proj(seq) + self.key_positions[:length]
        values = self.value_proj(seq)
        dh = keys.shape[2] // self.heads
        # Laid out once per request in the shapes the per-candidate products read directly.
        keys_t = keys.view(r, length, self.heads, dh).permute(0, 2, 3, 1).contiguous()
        values_h = values.view(r, length, self.heads, dh).permute(0, 2, 1, 3).contiguous()
        return DcnAttentionState(
            num_requests=r,
            user=user,
            keys_t=keys_t,
            values=values_h,
            mask=req.sequence_mask.reshape(r, 1, 1, length),
            cross_user=self.cross_user(user),
            deep_user=self.deep_user(user),
        )


class DcnAttentionTier(RankerTier[DcnAttentionState]):
    """DCNv2 (low-rank cross layers beside a deep network) with target attention.

    Args:
        dims: Uses the input widths, ``max_sequence_len``, ``tower_sizes``, ``attention_dim``,
            ``attention_heads``, ``cross_layers``, ``cross_rank`` and ``top_sizes``.
    """

    name = TierName.LARGE

    def __init__(self, dims: TierDims) -> None:
        super().__init__(dims)
        h, e = dims.attention_dim, dims.tower_sizes[-1]
        self.width = 2 * e + h  # x0 = [u, a, t]
        self.request_encoder = DcnAttentionRequestEncoder(dims)
        self.ad_tower = make_mlp(
            dims.ad_pooled_dim + dims.ad_dense_dim, dims.tower_sizes, activate_last=False
        )
        self.query_proj = nn.Linear(e, h, bias=False)
        self.cross_candidate = nn.Linear(e + h, dims.cross_rank, bias=False)
        self.cross = nn.ModuleList(
            [
                CrossLayer(self.width, dims.cross_rank, project=i > 0)
                for i in range(dims.cross_layers)
            ]
        )
        self.deep_candidate = nn.Linear(e + h, dims.top_sizes[0], bias=False)
        self.deep_rest = make_mlp(dims.top_sizes[0], dims.top_sizes[1:])
        self.out = nn.Linear(self.width + dims.top_sizes[-1], 1)

    def _check_request(self, req: RequestInputs) -> None:
        super()._check_request(req)
        if req.sequence_len > self.dims.max_sequence_len:
            raise InputError(
                f"length {req.sequence_len} exceeds the large tier's max_sequence_len "
                f"{self.dims.max_sequence_len}",
                source="RequestInputs.sequence",
                hint="keep the most recent items (inputs_from_lookup(max_sequence_len=...))",
            )

    def _attend(
        self, state: DcnAttentionState, ad: torch.Tensor, grouping: CandidateGrouping
    ) -> torch.Tensor:
        """Target attention of each candidate over its request's sequence: ``[C, H]``."""
        heads = state.keys_t.shape[1]
        dh = state.keys_t.shape[2]
        q = self.query_proj(ad) * (1.0 / math.sqrt(dh))
        padded = grouping.pad(q)  # [R, Cmax, H]
        r, width = padded.shape[0], padded.shape[1]
        qh = padded.view(r, width, heads, dh).transpose(1, 2)  # [R, heads, Cmax, dh]
        weights = masked_softmax(torch.matmul(qh, state.keys_t), state.mask)  # [R, h, Cmax, L]
        out = torch.matmul(weights, state.values)  # [R, heads, Cmax, dh]
        return grouping.unpad(out.transpose(1, 2).reshape(r, width, heads * dh))

    def _score(
        self, state: DcnAttentionState, cand: CandidateInputs, grouping: CandidateGrouping
    ) -> torch.Tensor:
        ad = self.ad_tower(torch.cat([cand.pooled, cand.dense], dim=1))
        at = torch.cat([ad, self._attend(state, ad, grouping)], dim=1)  # [C, Ea + H]
        x0 = torch.cat([grouping.rows(state.user), at], dim=1)
        x = x0
        for i, layer in enumerate(self.cross):
            vx = grouping.rows(state.cross_user) + self.cross_candidate(at) if i == 0 else None
            x = layer(x0, x, vx)
        deep = torch.relu(grouping.rows(state.deep_user) + self.deep_candidate(at))
        deep = self.deep_rest(deep)
        return self.out(torch.cat([x, deep], dim=1)).squeeze(-1)

    def request_flops(self, num_requests: int, seq_len: int) -> int:
        d, r = self.dims, num_requests
        e = d.tower_sizes[-1]
        user_in = d.user_pooled_dim + d.user_dense_dim + d.sequence_dim
        return (
            mlp_flops(r, user_in, d.tower_sizes)
            + 2 * linear_flops(r * seq_len, d.sequence_dim, d.attention_dim)
            + linear_flops(r, e, d.cross_rank)
            + linear_flops(r, e, d.top_sizes[0])
        )

    def candidate_flops(self, num_candidates: int, seq_len: int) -> int:
        d, c = self.dims, num_candidates
        e, h = d.tower_sizes[-1], d.attention_dim
        cross = sum(layer.flops(c) for layer in self.cross if isinstance(layer, CrossLayer))
        return (
            mlp_flops(c, d.ad_pooled_dim + d.ad_dense_dim, d.tower_sizes)
            + linear_flops(c, e, h)
            + 2 * (2 * c * h * seq_len)  # q K^T and weights V
            + linear_flops(c, e + h, d.cross_rank)
            + cross
            + linear_flops(c, e + h, d.top_sizes[0])
            + mlp_flops(c, d.top_sizes[0], d.top_sizes[1:])
            + linear_flops(c, self.width + d.top_sizes[-1], 1)
        )
