"""The medium tier: a DLRM-style interaction model.

Vectors of one common width ``d``: on the user side ``Ku = user_vectors + 2`` (the bottom MLP of
the dense features, the projected mean of the behaviour sequence, and the pooled embeddings
projected to ``user_vectors`` vectors); on the ad side ``Ka = ad_vectors + 1`` (dense bottom MLP
and projected pooled embeddings). The interaction terms are their pairwise dot products; the top
MLP reads ``[user dense vector, user-user terms, user-ad terms, ad-ad terms, ad dense vector]``.

Request-centric split: the user vectors, the user-user terms and the user part of the top MLP's
first layer (``W_u [dense_u; uu] + b``) are computed once per request. Per candidate: the ad
vectors, the user-ad terms (all candidates of a request against its ``[Ku, d]`` user vectors in
one batched product), the ad-ad terms and the ad part of the first layer, added to the request's
part broadcast without a copy.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ranker.base import RankerTier, RequestState, TierDims, TierName
from ranker.inputs import CandidateInputs, RequestInputs
from ranker.layers import (
    CandidateGrouping,
    linear_flops,
    make_mlp,
    masked_mean,
    mlp_flops,
)

__all__ = ["DlrmState", "DlrmRequestEncoder", "DlrmTier"]


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


@dataclasses.dataclass(frozen=True, slots=True)
class DlrmState(RequestState):
    """The medium tier's request state.

    Attributes:
        user_vectors: ``[R, Ku, d]`` the user-side interaction vectors.
        top_user: ``[R, top_sizes[0]]`` the user part of the top MLP's first layer, bias
            included (before the ReLU).
    """

    user_vectors: torch.Tensor
    top_user: torch.Tensor


class DlrmRequestEncoder(nn.Module):
    """User vectors, user-user interactions and the user half of the top MLP's first layer.

    Args:
        dims: The tier's dimensions.
    """

    pair_index: torch.Tensor

    def __init__(self, dims: TierDims) -> None:
        super().__init__()
        d = dims.interaction_dim
        self.num_vectors = dims.user_vectors + 2
        self.user_proj = nn.Linear(dims.user_pooled_dim, dims.user_vectors * d)
        self.user_bottom = make_mlp(dims.user_dense_dim, (*dims.bottom_sizes, d))
        self.sequence_proj = nn.Linear(dims.sequence_dim, d)
        self.top_user = nn.Linear(d + _pairs(self.num_vectors), dims.top_sizes[0])
        self.register_buffer(
            "pair_index",
            torch.triu_indices(self.num_vectors, self.num_vectors, 1),
            persistent=False,
        )

    def forward(self, req: RequestInputs) -> DlrmState:
        r = req.num_requests
        dense = self.user_bottom(req.dense)
        seq = self.sequence_proj(masked_mean(req.sequence, req.sequence_mask))
        pooled = self.user_proj(req.pooled).view(r, self.num_vectors - 2, dense.shape[1])
        vectors = torch.cat([dense.unsqueeze(1), seq.unsqueeze(1), pooled], dim=1)
        gram = torch.bmm(vectors, vectors.transpose(1, 2))
        uu = gram[:, self.pair_index[0], self.pair_index[1]]
        top = self.top_user(torch.cat([dense, uu], dim=1))
        return DlrmState(num_requests=r, user_vectors=vectors, top_user=top)


class DlrmTier(RankerTier[DlrmState]):
    """DLRM-style dot interactions between user-side and ad-side vectors, then a top MLP.

    Args:
        dims: Uses the input widths, ``interaction_dim``, ``user_vectors``, ``ad_vectors``,
            ``bottom_sizes`` and ``top_sizes``.
    """

    name = TierName.MEDIUM
    pair_index: torch.Tensor

    def __init__(self, dims: TierDims) -> None:
        super().__init__(dims)
        d = dims.interaction_dim
        ku, ka = dims.user_vectors + 2, dims.ad_vectors + 1
        self.request_encoder = DlrmRequestEncoder(dims)
        self.ad_proj = nn.Linear(dims.ad_pooled_dim, dims.ad_vectors * d)
        self.ad_bottom = make_mlp(dims.ad_dense_dim, (*dims.bottom_sizes, d))
        self.top_ad = nn.Linear(d + ka * ku + _pairs(ka), dims.top_sizes[0], bias=False)
        self.top_rest = make_mlp(dims.top_sizes[0], dims.top_sizes[1:])
        self.out = nn.Linear(dims.top_sizes[-1], 1)
        self.register_buffer("pair_index", torch.triu_indices(ka, ka, 1), persistent=False)

    def _score(
        self, state: DlrmState, cand: CandidateInputs, grouping: CandidateGrouping
    ) -> torch.Tensor:
        c = cand.num_candidates
        dense = self.ad_bottom(cand.dense)
        pooled = self.ad_proj(cand.pooled).view(c, self.dims.ad_vectors, dense.shape[1])
        ad = torch.cat([dense.unsqueeze(1), pooled], dim=1)  # [C, Ka, d]
        ka, d = ad.shape[1], ad.shape[2]
        # User-ad terms: [R, Cmax * Ka, d] x [R, d, Ku], one product per request (with one
        # request a single [C * Ka, d] x [d, Ku] matmul against the request's own vectors).
        padded = grouping.pad(ad)
        r, width = padded.shape[0], padded.shape[1]
        ua = torch.bmm(padded.reshape(r, width * ka, d), state.user_vectors.transpose(1, 2))
        ku = state.user_vectors.shape[1]
        ua = grouping.unpad(ua.reshape(r, width, ka * ku))  # [C, Ka * Ku]
        gram = torch.bmm(ad, ad.transpose(1, 2))
        aa = gram[:, self.pair_index[0], self.pair_index[1]]
        first = grouping.rows(state.top_user) + self.top_ad(torch.cat([dense, ua, aa], dim=1))
        return self.out(self.top_rest(torch.relu(first))).squeeze(-1)

    def request_flops(self, num_requests: int, seq_len: int) -> int:
        dims, r = self.dims, num_requests
        d, ku = dims.interaction_dim, dims.user_vectors + 2
        return (
            linear_flops(r, dims.user_pooled_dim, dims.user_vectors * d)
            + mlp_flops(r, dims.user_dense_dim, (*dims.bottom_sizes, d))
            + linear_flops(r, dims.sequence_dim, d)
            + 2 * r * ku * ku * d
            + linear_flops(r, d + _pairs(ku), dims.top_sizes[0])
        )

    def candidate_flops(self, num_candidates: int, seq_len: int) -> int:
        dims, c = self.dims, num_candidates
        d, ku, ka = dims.interaction_dim, dims.user_vectors + 2, dims.ad_vectors + 1
        return (
            linear_flops(c, dims.ad_pooled_dim, dims.ad_vectors * d)
            + mlp_flops(c, dims.ad_dense_dim, (*dims.bottom_sizes, d))
            + 2 * c * ka * d * ku
            + 2 * c * ka * ka * d
            + linear_flops(c, d + ka * ku + _pairs(ka), dims.top_sizes[0])
            + mlp_flops(c, dims.top_sizes[0], dims.top_sizes[1:])
            + linear_flops(c, dims.top_sizes[-1], 1)
        )
