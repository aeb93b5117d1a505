"""Building blocks the tiers share: candidates grouped by request, masked pooling and softmax,
MLPs, and the DCNv2 cross layer.

The request-centric trick lives in :class:`CandidateGrouping`: request-level tensors (one row per
request) meet candidate-level tensors (one row per candidate) either by broadcasting rows
(:meth:`CandidateGrouping.rows`: an ``expand`` view with one request, never a copy) or by one
batched matmul over candidates padded per request (:meth:`CandidateGrouping.pad` /
:meth:`CandidateGrouping.unpad`: with one request these are views and the batched matmul is a
single ``[C, k] x [k, n]`` product).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import nn
from torchrec.modules.mlp import MLP

__all__ = [
    "CandidateGrouping",
    "CrossLayer",
    "make_mlp",
    "masked_mean",
    "masked_softmax",
    "mlp_flops",
    "linear_flops",
]


@dataclasses.dataclass(frozen=True, slots=True)
class CandidateGrouping:
    """Which candidates belong to which request, in the shapes batched ops want.

    Three layouts, from cheapest to most general:

    * one request (``request_index`` None): every candidate is in request 0; ``pad`` adds a
      leading dim of 1 and ``rows`` expands (both views);
    * one candidate per request in order (``request_index == arange(C)``, what per-candidate
      scoring produces): ``pad`` adds a dim of 1 in the middle and ``rows`` is the identity;
    * anything else: candidates are placed at ``(request, slot)`` of a zero-padded
      ``[R, max candidates per request, ...]`` tensor (one scatter), so a request-level
      ``[R, k, n]`` operand meets its candidates in one batched matmul without being copied per
      candidate.

    Example: ``request_index = [1, 0, 1]`` gives ``slot = [0, 0, 1]`` and ``max_per_request = 2``;
    ``pad(x)`` is ``[[x1, 0], [x0, x2]]``.

    Attributes:
        num_requests: ``R``.
        num_candidates: ``C``.
        request_index: int64 ``[C]``, or None in the one-request and identity layouts.
        slot: int64 ``[C]``: each candidate's position within its request (general layout only).
        max_per_request: The padded width (``C`` for one request, 1 for the identity layout).
        identity: True in the one-candidate-per-request-in-order layout.
    """

    num_requests: int
    num_candidates: int
    request_index: torch.Tensor | None
    slot: torch.Tensor | None
    max_per_request: int
    identity: bool = False

    @classmethod
    def build(
        cls, request_index: torch.Tensor | None, num_requests: int, num_candidates: int
    ) -> CandidateGrouping:
        """Group candidates; ``request_index`` must already be checked against ``num_requests``.

        Args:
            request_index: int64 ``[C]``, or None when every candidate belongs to request 0.
            num_requests: ``R``.
            num_candidates: ``C``.
        """
        if request_index is None:
            return cls(1, num_candidates, None, None, num_candidates)
        if num_requests == num_candidates and torch.equal(
            request_index, torch.arange(num_candidates, device=request_index.device)
        ):
            return cls(num_requests, num_candidates, None, None, 1, identity=True)
        counts = torch.bincount(request_index, minlength=num_requests)
        # Stable sort keeps candidates' order within each request; slot = rank in the request.
        order = torch.argsort(request_index, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(request_index)
        slot[order] = (
            torch.arange(num_candidates, device=request_index.device) - starts[request_index[order]]
        )
        width = int(counts.max()) if num_candidates else 0
        return cls(num_requests, num_candidates, request_index, slot, width)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """Request rows ``[R, ...]`` -> one row per candidate ``[C, ...]``.

        With one request this is ``x[0]`` expanded (stride 0 along candidates, no copy); meant for
        elementwise ops that broadcast, never for a matmul operand (use :meth:`pad` for those).
        """
        if self.identity:
            return x
        if self.request_index is None:
            return x[:1].expand(self.num_candidates, *x.shape[1:])
        return x.index_select(0, self.request_index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Candidate rows ``[C, ...]`` -> ``[R, max_per_request, ...]`` (zeros where padded)."""
        if self.identity:
            return x.unsqueeze(1)
        if self.request_index is None:
            return x.unsqueeze(0)
        assert self.slot is not None
        out = x.new_zeros((self.num_requests, self.max_per_request, *x.shape[1:]))
        return out.index_put((self.request_index, self.slot), x)

    def unpad(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`pad`: ``[R, max_per_request, ...]`` -> ``[C, ...]``."""
        if self.identity:
            return y.squeeze(1)
        if self.request_index is None:
            return y.squeeze(0)
        assert self.slot is not None
        return y[self.request_index, self.slot]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [R, L, D]`` over the items where ``mask [R, L]`` is True; zeros for none.

    Elementwise (no matmul), so it adds nothing to the tiers' FLOP estimates.
    """
    m = mask.unsqueeze(-1).to(x.dtype)
    count = m.sum(dim=1).clamp(min=1.0)
    return (x * m).sum(dim=1) / count


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim keeping only ``mask`` (broadcastable to ``scores``).

    A row with no True entry (a cold-start user) gets all-zero weights instead of the NaN a
    ``-inf`` fill would give, and zero gradients: masked entries are filled with the dtype's
    lowest finite value (so a fully masked row is a finite uniform softmax) and the result is
    multiplied by the mask. A row with at least one True entry is exactly the softmax over its
    True entries, since ``exp(lowest - max)`` underflows to 0.
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * mask.to(scores.dtype)


def make_mlp(in_size: int, layer_sizes: Sequence[int], activate_last: bool = True) -> nn.Module:
    """TorchRec's MLP (Linear + ReLU per layer); no layers gives the identity.

    Args:
        in_size: Input width.
        layer_sizes: Output width of each layer.
        activate_last: Apply ReLU after the last layer too (False for embeddings and logits).
    """
    if not layer_sizes:
        return nn.Identity()
    return MLP(
        in_size, list(layer_sizes), bias=True, activation="relu", activation_on_last=activate_last
    )


def linear_flops(rows: int, in_size: int, out_size: int) -> int:
    """FLOPs of a dense layer on ``rows`` rows: 2 per multiply-add (bias and activation ignored)."""
    return 2 * rows * in_size * out_size


def mlp_flops(rows: int, in_size: int, layer_sizes: Sequence[int]) -> int:
    """FLOPs of :func:`make_mlp` ``(in_size, layer_sizes)`` on ``rows`` rows."""
    total, width = 0, in_size
    for size in layer_sizes:
        total += linear_flops(rows, width, size)
        width = size
    return total


class CrossLayer(nn.Module):
    """One low-rank DCNv2 cross layer: ``x_next = x0 * (U (V x) + b) + x``.

    As TorchRec's ``LowRankCrossNet`` layer, but one layer per module, so a tier can compute the
    first layer's ``V x0`` itself (split into a per-request and a per-candidate part: ``V [u; a]
    = V_u u + V_a a``) and pass it in as ``vx``; such a layer is built with ``project=False`` and
    has no ``V`` of its own.

    Args:
        width: Width of ``x0`` and ``x``.
        rank: Width of ``V x`` (the low rank).
        project: Own the ``V`` projection (False: ``forward`` needs ``vx``).
    """

    def __init__(self, width: int, rank: int, project: bool = True) -> None:
        super().__init__()
        self.width, self.rank = width, rank
        self.v = nn.Linear(width, rank, bias=False) if project else None
        self.u = nn.Linear(rank, width, bias=True)
        # Small U at init keeps the stack close to the identity at the start of training.
        nn.init.normal_(self.u.weight, std=1.0 / math.sqrt(rank * width))
        nn.init.zeros_(self.u.bias)

    def forward(
        self, x0: torch.Tensor, x: torch.Tensor, vx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args:
            x0: ``[N, width]`` the stack's input.
            x: ``[N, width]`` the previous layer's output.
            vx: ``[N, rank]``: ``V x`` when the caller computed it (the first layer); None
                computes it here.

        Returns:
            ``[N, width]``.
        """
        if vx is None:
            assert self.v is not None, "a layer built with project=False needs vx"
            vx = self.v(x)
        return x0 * self.u(vx) + x

    def flops(self, rows: int) -> int:
        """FLOPs of this layer's own ``V`` (if any) and ``U`` on ``rows`` rows."""
        own_v = linear_flops(rows, self.width, self.rank) if self.v is not None else 0
        return own_v + linear_flops(rows, self.rank, self.width)
