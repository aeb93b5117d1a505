"""What every tier shares: its name, its dimensions, the per-request state and request-centric
scoring (``encode_request`` once per request, ``score`` per candidate), with the naive
per-candidate path beside it as the reference.

A tier is split in two by construction: ``tier.request_encoder`` (a module whose forward turns
:class:`~ranker.inputs.RequestInputs` into the tier's :class:`RequestState`) holds every parameter
that touches only the request, and the tier's other modules are the only ones ``score`` runs. A
layer that mixes both sides (``W [u; a]``) is split as ``W_u u + W_a a``: ``W_u`` (and the bias)
sits in the request encoder, ``W_a`` in the tier, so ``score`` never runs a request-side
parameter and its cost grows only with the candidates' own work.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from typing import ClassVar, Generic, TypeVar

import torch
from torch import nn

from adrank.errors import InputError
from ranker.inputs import CandidateInputs, RequestInputs
from ranker.layers import CandidateGrouping

__all__ = ["TierName", "TierDims", "RequestState", "RankerTier", "StateT"]


class TierName(enum.Enum):
    """The three tiers, cheapest first."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


_INPUT_WIDTHS = frozenset(
    {"user_pooled_dim", "user_dense_dim", "sequence_dim", "ad_pooled_dim", "ad_dense_dim"}
)


@dataclasses.dataclass(frozen=True, slots=True)
class TierDims:
    """Input widths (fixed by the features) and layer sizes (the tiers' hyperparameters).

    Attributes:
        user_pooled_dim: ``Du``: width of :attr:`RequestInputs.pooled`.
        user_dense_dim: ``nu``: width of :attr:`RequestInputs.dense`.
        sequence_dim: ``Ds``: width of one item of :attr:`RequestInputs.sequence`.
        ad_pooled_dim: ``Da``: width of :attr:`CandidateInputs.pooled`.
        ad_dense_dim: ``na``: width of :attr:`CandidateInputs.dense`.
        max_sequence_len: Longest sequence the large tier takes (it learns one key offset per
            position).
        tower_sizes: Layer widths of the user and ad towers (small, large); the last is the
            width of the user and ad representations.
        interaction_dim: Medium: common width of the interacting vectors.
        user_vectors: Medium: vectors the user's pooled embeddings are projected to.
        ad_vectors: Medium: vectors the ad's pooled embeddings are projected to.
        bottom_sizes: Medium: hidden widths of the bottom MLPs over dense features (each ends
            with a layer of ``interaction_dim``).
        top_sizes: Medium: the top MLP; large: the deep network beside the cross layers.
        attention_dim: Large: width ``H`` of the attention's keys, values and queries.
        attention_heads: Large: heads (``attention_dim`` must be a multiple).
        cross_layers: Large: DCNv2 cross layers.
        cross_rank: Large: rank of each cross layer's ``U V`` factorisation.
    """

    user_pooled_dim: int
    user_dense_dim: int
    sequence_dim: int
    ad_pooled_dim: int
    ad_dense_dim: int
    max_sequence_len: int = 512
    tower_sizes: tuple[int, ...] = (256, 128)
    interaction_dim: int = 32
    user_vectors: int = 8
    ad_vectors: int = 4
    bottom_sizes: tuple[int, ...] = (64,)
    top_sizes: tuple[int, ...] = (256, 64)
    attention_dim: int = 64
    attention_heads: int = 1
    cross_layers: int = 3
    cross_rank: int = 64

    def validate(self) -> None:
        """Check every field at once.

        Raises:
            InputError: Naming each bad field (``TierDims.<field>``).
        """
        problems: list[InputError] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            sizes = value if isinstance(value, tuple) else (value,)
            minimum = 0 if f.name in _INPUT_WIDTHS else 1
            if not all(isinstance(v, int) and v >= minimum for v in sizes):
                problems.append(
                    InputError(
                        f"expected integers >= {minimum}, got {value!r}",
                        source=f"TierDims.{f.name}",
                    )
                )
        for name in ("tower_sizes", "top_sizes"):
            if not getattr(self, name):
                problems.append(InputError("needs at least one layer", source=f"TierDims.{name}"))
        heads = self.attention_heads
        if isinstance(heads, int) and heads >= 1 and self.attention_dim % heads:
            problems.append(
                InputError(
                    f"attention_dim {self.attention_dim} is not a multiple of {heads} heads",
                    source="TierDims.attention_dim",
                )
            )
        if problems:
            raise InputError.from_problems(problems)


@dataclasses.dataclass(frozen=True, slots=True)
class RequestState:
    """Everything a tier computes from the request alone; each tier extends it with its tensors.

    Attributes:
        num_requests: ``R``: rows of every request-level tensor in the state.
    """

    num_requests: int


StateT = TypeVar("StateT", bound=RequestState)


class RankerTier(nn.Module, abc.ABC, Generic[StateT]):
    """A scoring model whose request-level work runs once per request.

    Subclasses set :attr:`name`, build ``self.request_encoder`` (a module mapping
    :class:`RequestInputs` to their state) and the candidate-side modules, and implement
    :meth:`_score` and the FLOP counts.

    Args:
        dims: The tier's dimensions (validated here).

    Raises:
        InputError: Bad ``dims``.
    """

    name: ClassVar[TierName]
    request_encoder: nn.Module

    def __init__(self, dims: TierDims) -> None:
        super().__init__()
        dims.validate()
        self.dims = dims

    # --- the request-centric path ------------------------------------------------------------
    def encode_request(self, req: RequestInputs) -> StateT:
        """Run the request-only part of the model once per request.

        Args:
            req: ``R`` requests.

        Returns:
            The state :meth:`score` takes for any number of candidates of these requests.

        Raises:
            InputError: Widths that do not match :attr:`dims`.
        """
        self._check_request(req)
        state: StateT = self.request_encoder(req)
        return state

    def score(self, state: StateT, cand: CandidateInputs) -> torch.Tensor:
        """Score candidates against their requests' state.

        Args:
            state: From :meth:`encode_request`.
            cand: ``C`` candidates; ``request_index`` points into the state's requests.

        Returns:
            float ``[C]`` logits (click log-odds).

        Raises:
            InputError: Widths that do not match :attr:`dims`, or a bad ``request_index``.
        """
        self._check_candidates(cand)
        cand.check_request_index(state.num_requests)
        grouping = CandidateGrouping.build(
            cand.request_index, state.num_requests, cand.num_candidates
        )
        return self._score(state, cand, grouping)

    def forward(self, req: RequestInputs, cand: CandidateInputs) -> torch.Tensor:
        """``score(encode_request(req), cand)``: float ``[C]`` logits."""
        return self.score(self.encode_request(req), cand)

    # --- the naive reference ---------------------------------------------------------------------
    def score_per_candidate(self, req: RequestInputs, cand: CandidateInputs) -> torch.Tensor:
        """The same logits the naive way: copy each request's inputs once per candidate, then run
        the whole model on ``C`` one-candidate requests.

        The baseline of ``adrank bench request-centric`` and the oracle of the tests; never use
        it to serve.

        Returns:
            float ``[C]`` logits, equal to :meth:`forward`'s up to float rounding.

        Raises:
            InputError: As :meth:`forward`.
        """
        cand.check_request_index(req.num_requests)
        n = cand.num_candidates
        device = cand.pooled.device
        rows = (
            cand.request_index
            if cand.request_index is not None
            else torch.zeros(n, dtype=torch.int64, device=device)
        )
        one_each = CandidateInputs(
            pooled=cand.pooled,
            dense=cand.dense,
            request_index=torch.arange(n, dtype=torch.int64, device=device),
        )
        return self.forward(req.take(rows), one_each)

    # --- cost ---------------------------------------------------------------------------------
    def flops(self, num_candidates: int, seq_len: int, per_candidate: bool = False) -> int:
        """Matrix-product FLOPs (2 per multiply-add) of scoring one request.

        Elementwise work (activations, softmax, masks) is left out; it is small next to the
        products and this is what :class:`torch.utils.flop_counter.FlopCounterMode` counts.

        Args:
            num_candidates: Candidates of the request.
            seq_len: Padded length of its behaviour sequence.
            per_candidate: Cost of :meth:`score_per_candidate` instead (the request's work
                repeated per candidate).

        Returns:
            FLOPs.
        """
        request_rows = num_candidates if per_candidate else 1
        return self.request_flops(request_rows, seq_len) + self.candidate_flops(
            num_candidates, seq_len
        )

    @abc.abstractmethod
    def request_flops(self, num_requests: int, seq_len: int) -> int:
        """Matrix-product FLOPs of :meth:`encode_request` on ``num_requests`` requests."""

    @abc.abstractmethod
    def candidate_flops(self, num_candidates: int, seq_len: int) -> int:
        """Matrix-product FLOPs of :meth:`score` on ``num_candidates`` candidates (one request,
        or one candidate per request)."""

    @abc.abstractmethod
    def _score(
        self, state: StateT, cand: CandidateInputs, grouping: CandidateGrouping
    ) -> torch.Tensor:
        """Logits ``[C]`` of checked candidates."""

    # --- checks ------------------------------------------------------------------------------
    def _param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _check_request(self, req: RequestInputs) -> None:
        d = self.dims
        problems = _width_problems(
            "RequestInputs",
            (
                ("pooled", req.pooled.shape[1], d.user_pooled_dim),
                ("dense", req.dense.shape[1], d.user_dense_dim),
                ("sequence", req.sequence.shape[2], d.sequence_dim),
            ),
        )
        dtype = self._param_dtype()
        if req.pooled.dtype != dtype:
            problems.append(
                InputError(
                    f"dtype {req.pooled.dtype} differs from the model's {dtype}",
                    source="RequestInputs.pooled",
                    hint="convert the inputs or the model (model.to(dtype))",
                )
            )
        if problems:
            raise InputError.from_problems(problems)

    def _check_candidates(self, cand: CandidateInputs) -> None:
        d = self.dims
        problems = _width_problems(
            "CandidateInputs",
            (
                ("pooled", cand.pooled.shape[1], d.ad_pooled_dim),
                ("dense", cand.dense.shape[1], d.ad_dense_dim),
            ),
        )
        dtype = self._param_dtype()
        if cand.pooled.dtype != dtype:
            problems.append(
                InputError(
                    f"dtype {cand.pooled.dtype} differs from the model's {dtype}",
                    source="CandidateInputs.pooled",
                    hint="convert the inputs or the model (model.to(dtype))",
                )
            )
        if problems:
            raise InputError.from_problems(problems)


def _width_problems(owner: str, widths: tuple[tuple[str, int, int], ...]) -> list[InputError]:
    return [
        InputError(
            f"width {found} does not match the tier's {expected} (TierDims)",
            source=f"{owner}.{name}",
        )
        for name, found, expected in widths
        if found != expected
    ]
