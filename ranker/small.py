"""The small tier: a two-tower dot-product scorer.

Request side (once per request): the user tower, an MLP over ``[pooled, dense, mean of the
behaviour sequence]`` -> ``u [R, E]``. Candidate side: the ad tower over ``[pooled, dense]`` ->
``a [C, E]`` and ``logit = a . u + bias``, computed for all candidates of a request as one batched
product ``[1, C, E] x [1, E, 1]`` against the request's own ``u`` (never a per-candidate copy).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ranker.base import RankerTier, RequestState, TierDims, TierName
from ranker.inputs import CandidateInputs, RequestInputs
from ranker.layers import CandidateGrouping, make_mlp, masked_mean, mlp_flops

__all__ = ["TwoTowerState", "TwoTowerRequestEncoder", "TwoTowerTier"]


@dataclasses.dataclass(frozen=True, slots=True)
class TwoTowerState(RequestState):
    """The small tier's request state.

    Attributes:
        user: ``[R, E]`` user tower output.
    """

    user: torch.Tensor


class TwoTowerRequestEncoder(nn.Module):
    """The user tower: ``[pooled, dense, masked mean of sequence] -> [R, E]``.

    Args:
        dims: The tier's dimensions.
    """

    def __init__(self, dims: TierDims) -> None:
        super().__init__()
        self.in_size = dims.user_pooled_dim + dims.user_dense_dim + dims.sequence_dim
        self.user_tower = make_mlp(self.in_size, dims.tower_sizes, activate_last=False)

    def forward(self, req: RequestInputs) -> TwoTowerState:
        seq = masked_mean(req.sequence, req.sequence_mask)
        x = torch.cat([req.pooled, req.dense, seq], dim=1)
        return TwoTowerState(num_requests=req.num_requests, user=self.user_tower(x))


class TwoTowerTier(RankerTier[TwoTowerState]):
    """Two towers and a dot product (the cheapest tier).

    Args:
        dims: Uses the input widths and ``tower_sizes``.
    """

    name = TierName.SMALL

    def __init__(self, dims: TierDims) -> None:
        super().__init__(dims)
        self.request_encoder = TwoTowerRequestEncoder(dims)
        self.ad_tower = make_mlp(
            dims.ad_pooled_dim + dims.ad_dense_dim, dims.tower_sizes, activate_last=False
        )
        self.bias = nn.Parameter(torch.zeros(()))

    def _score(
        self, state: TwoTowerState, cand: CandidateInputs, grouping: CandidateGrouping
    ) -> torch.Tensor:
        ad = self.ad_tower(torch.cat([cand.pooled, cand.dense], dim=1))
        # [R, Cmax, E] x [R, E, 1]: each request's candidates against its own user vector.
        dots = torch.bmm(grouping.pad(ad), state.user.unsqueeze(2))
        return grouping.unpad(dots).squeeze(-1) + self.bias

    def request_flops(self, num_requests: int, seq_len: int) -> int:
        d = self.dims
        in_size = d.user_pooled_dim + d.user_dense_dim + d.sequence_dim
        return mlp_flops(num_requests, in_size, d.tower_sizes)

    def candidate_flops(self, num_candidates: int, seq_len: int) -> int:
        d = self.dims
        tower = mlp_flops(num_candidates, d.ad_pooled_dim + d.ad_dense_dim, d.tower_sizes)
        return tower + 2 * num_candidates * d.tower_sizes[-1]
