"""Small dims and seeded inputs shared by the ranker tests."""

from __future__ import annotations

import torch

from ranker.base import TierDims
from ranker.inputs import CandidateInputs, RequestInputs

DIMS = TierDims(
    user_pooled_dim=12,
    user_dense_dim=3,
    sequence_dim=6,
    ad_pooled_dim=10,
    ad_dense_dim=2,
    max_sequence_len=20,
    tower_sizes=(16, 8),
    interaction_dim=4,
    user_vectors=3,
    ad_vectors=2,
    bottom_sizes=(5,),
    top_sizes=(12, 6),
    attention_dim=8,
    attention_heads=2,
    cross_layers=2,
    cross_rank=4,
)


def make_requests(
    lengths: list[int], seq_len: int, seed: int = 0, dims: TierDims = DIMS
) -> RequestInputs:
    """One request per entry of ``lengths`` (items present; 0 = cold start), padded to seq_len."""
    g = torch.Generator().manual_seed(seed)
    r = len(lengths)
    mask = torch.arange(seq_len).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return RequestInputs(
        pooled=torch.randn(r, dims.user_pooled_dim, generator=g),
        dense=torch.randn(r, dims.user_dense_dim, generator=g),
        sequence=torch.randn(r, seq_len, dims.sequence_dim, generator=g),
        sequence_mask=mask,
    )


def make_candidates(
    n: int, request_index: list[int] | None, seed: int = 1, dims: TierDims = DIMS
) -> CandidateInputs:
    """``n`` seeded candidates of the given requests (None: all of the single request)."""
    g = torch.Generator().manual_seed(seed)
    return CandidateInputs(
        pooled=torch.randn(n, dims.ad_pooled_dim, generator=g),
        dense=torch.randn(n, dims.ad_dense_dim, generator=g),
        request_index=None
        if request_index is None
        else torch.tensor(request_index, dtype=torch.int64),
    )
