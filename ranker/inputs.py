"""What the ranker tiers take: already looked-up embeddings, once per request and per candidate.

The tiers own no embedding tables: training produces these tensors from TorchRec modules (with
gradients), serving from the embed_store runtime (:class:`embed_store.batch.LookupResult`, turned
into inputs by :func:`inputs_from_lookup`). Request-level tensors have one row per *request*;
candidate-level tensors one row per *candidate*, and ``request_index`` says which request each
candidate belongs to (None: all belong to request 0, the one-request serving case)::

    RequestInputs (R = 2 requests, L = 3)          CandidateInputs (C = 3 candidates)
      pooled        [2, Du]  user ids, pooled        pooled        [3, Da]  ad ids, pooled
      dense         [2, nu]  user_activity, ...      dense         [3, na]  ad_quality, bid
      sequence      [2, 3, Ds] clicked ads/cats      request_index [0, 0, 1]
      sequence_mask [[T, T, F],   <- 2 items
                     [F, F, F]]   <- cold start: no history

Constructors check structure only (ranks, dtypes, matching row counts: no data is read), so they
stay cheap on the serving path; :meth:`CandidateInputs.check_request_index` checks the index
values against a request count and is called by the tiers before scoring.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from adrank.errors import InputError
from embed_store.batch import LookupResult

__all__ = ["RequestInputs", "CandidateInputs", "inputs_from_lookup"]


def _check_float(
    name: str, t: object, ndim: int, problems: list[InputError], shape_doc: str
) -> bool:
    """Append a problem unless ``t`` is a floating tensor of rank ``ndim``; True when it is."""
    if not isinstance(t, torch.Tensor):
        problems.append(
            InputError(f"expected a tensor {shape_doc}, got {type(t).__name__}", source=name)
        )
        return False
    if t.dim() != ndim or not t.is_floating_point():
        problems.append(
            InputError(
                f"expected a {ndim}-D floating tensor {shape_doc}, got {t.dim()}-D {t.dtype} "
                f"of shape {tuple(t.shape)}",
                source=name,
            )
        )
        return False
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class RequestInputs:
    """Request-level inputs: one row per request, computed on once per request by every tier.

    Attributes:
        pooled: float ``[R, Du]``: the request's pooled embeddings (user and context features),
            concatenated.
        dense: float ``[R, nu]``: dense request features (normalised by the caller).
        sequence: float ``[R, L, Ds]``: the user's behaviour sequence, one ``Ds``-wide row per
            item (the sequence features' embeddings concatenated), most recent first, padded to
            ``L``.
        sequence_mask: bool ``[R, L]``: True where ``sequence`` holds an item. A cold-start user
            has an all-False row; ``L`` may be 0.

    Raises:
        InputError: On construction, naming every field whose rank, dtype or row count is wrong.
    """

    pooled: torch.Tensor
    dense: torch.Tensor
    sequence: torch.Tensor
    sequence_mask: torch.Tensor

    def __post_init__(self) -> None:
        problems: list[InputError] = []
        ok = _check_float("RequestInputs.pooled", self.pooled, 2, problems, "[R, Du]")
        ok &= _check_float("RequestInputs.dense", self.dense, 2, problems, "[R, nu]")
        ok &= _check_float("RequestInputs.sequence", self.sequence, 3, problems, "[R, L, Ds]")
        mask = self.sequence_mask
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
            found = (
                f"{mask.dim()}-D {mask.dtype}"
                if isinstance(mask, torch.Tensor)
                else type(mask).__name__
            )
            problems.append(
                InputError(
                    f"expected a 2-D bool tensor [R, L], got {found}",
                    source="RequestInputs.sequence_mask",
                )
            )
            ok = False
        if ok:
            rows = self.pooled.shape[0]
            for name, t in (("dense", self.dense), ("sequence", self.sequence)):
                if t.shape[0] != rows:
                    problems.append(
                        InputError(
                            f"has {t.shape[0]} rows but pooled has {rows} (one row per request)",
                            source=f"RequestInputs.{name}",
                        )
                    )
            if tuple(mask.shape) != tuple(self.sequence.shape[:2]):
                problems.append(
                    InputError(
                        f"shape {tuple(mask.shape)} must be sequence's [R, L] = "
                        f"{tuple(self.sequence.shape[:2])}",
                        source="RequestInputs.sequence_mask",
                    )
                )
            dtypes = {t.dtype for t in (self.pooled, self.dense, self.sequence)}
            if len(dtypes) > 1:
                problems.append(
                    InputError(
                        f"pooled, dense and sequence must share one dtype, got "
                        f"{self.pooled.dtype}, {self.dense.dtype}, {self.sequence.dtype}",
                        source="RequestInputs.dense",
                    )
                )
        if problems:
            raise InputError.from_problems(problems)

    @property
    def num_requests(self) -> int:
        """Rows (requests)."""
        return int(self.pooled.shape[0])

    @property
    def sequence_len(self) -> int:
        """Padded sequence length ``L``."""
        return int(self.sequence.shape[1])

    def take(self, rows: torch.Tensor) -> RequestInputs:
        """The inputs of the requests ``rows`` (int64 ``[n]``, repeats allowed), copied.

        This is what per-candidate scoring does (one copy of the request per candidate); the
        request-centric path never calls it.
        """
        return RequestInputs(
            pooled=self.pooled.index_select(0, rows),
            dense=self.dense.index_select(0, rows),
            sequence=self.sequence.index_select(0, rows),
            sequence_mask=self.sequence_mask.index_select(0, rows),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class CandidateInputs:
    """Candidate-level inputs: one row per candidate ad.

    Attributes:
        pooled: float ``[C, Da]``: the candidate's pooled embeddings (ad, advertiser, campaign,
            category, creative type, position), concatenated.
        dense: float ``[C, na]``: dense candidate features (normalised by the caller).
        request_index: int64 ``[C]``: the request (row of :class:`RequestInputs`) of each
            candidate, in any order; None when every candidate belongs to the single request 0.

    Raises:
        InputError: On construction, naming every field whose rank, dtype or row count is wrong.
    """

    pooled: torch.Tensor
    dense: torch.Tensor
    request_index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        problems: list[InputError] = []
        ok = _check_float("CandidateInputs.pooled", self.pooled, 2, problems, "[C, Da]")
        ok &= _check_float("CandidateInputs.dense", self.dense, 2, problems, "[C, na]")
        if ok:
            if self.dense.shape[0] != self.pooled.shape[0]:
                problems.append(
                    InputError(
                        f"has {self.dense.shape[0]} rows but pooled has {self.pooled.shape[0]} "
                        "(one row per candidate)",
                        source="CandidateInputs.dense",
                    )
                )
            if self.dense.dtype != self.pooled.dtype:
                problems.append(
                    InputError(
                        f"dtype {self.dense.dtype} differs from pooled's {self.pooled.dtype}",
                        source="CandidateInputs.dense",
                    )
                )
        ri = self.request_index
        if ri is not None:
            if not isinstance(ri, torch.Tensor) or ri.dtype != torch.int64 or ri.dim() != 1:
                found = f"{ri.dim()}-D {ri.dtype}" if isinstance(ri, torch.Tensor) else type(ri)
                problems.append(
                    InputError(
                        f"expected a 1-D int64 tensor [C] or None, got {found}",
                        source="CandidateInputs.request_index",
                    )
                )
            elif ok and ri.shape[0] != self.pooled.shape[0]:
                problems.append(
                    InputError(
                        f"has {ri.shape[0]} entries but there are {self.pooled.shape[0]} "
                        "candidates",
                        source="CandidateInputs.request_index",
                    )
                )
        if problems:
            raise InputError.from_problems(problems)

    @property
    def num_candidates(self) -> int:
        """Rows (candidates)."""
        return int(self.pooled.shape[0])

    def check_request_index(self, num_requests: int) -> None:
        """Check that every candidate points at one of ``num_requests`` requests.

        Raises:
            InputError: ``request_index`` out of range, or None with more than one request.
        """
        ri = self.request_index
        if ri is None:
            if num_requests != 1:
                raise InputError(
                    f"request_index is None (one request) but there are {num_requests} requests",
                    source="CandidateInputs.request_index",
                    hint="pass the request row of every candidate",
                )
            return
        if ri.numel() and (int(ri.min()) < 0 or int(ri.max()) >= num_requests):
            raise InputError(
                f"values must lie in [0, {num_requests}), found [{int(ri.min())}, {int(ri.max())}]",
                source="CandidateInputs.request_index",
            )


def _padded_sequence(
    result: LookupResult,
    features: Sequence[str],
    num_requests: int,
    max_len: int | None,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[R, L, sum of dims]`` items and ``[R, L]`` mask from the result's jagged sequences."""
    problems: list[InputError] = []
    missing = [f for f in features if f not in result.sequences]
    if missing:
        raise InputError(
            f"sequence features {missing} are not in the lookup result (it has "
            f"{sorted(result.sequences)})",
            source="LookupResult.sequences",
            hint="look the sequence features up as request-level features",
        )
    jagged = [result.sequences[f] for f in features]
    lengths = [j.lengths().to(torch.int64) for j in jagged]
    for f, ln in zip(features, lengths, strict=True):
        if ln.numel() != num_requests:
            problems.append(
                InputError(
                    f"has {ln.numel()} bags, expected one per request ({num_requests})",
                    source=f"LookupResult.sequences[{f!r}]",
                )
            )
    if not problems:
        for f, ln in zip(features[1:], lengths[1:], strict=True):
            if not torch.equal(ln, lengths[0]):
                problems.append(
                    InputError(
                        f"lengths differ from {features[0]!r}'s: the sequence features must "
                        "describe the same items",
                        source=f"LookupResult.sequences[{f!r}]",
                    )
                )
    if problems:
        raise InputError.from_problems(problems)
    dims = [int(j.values().shape[1]) if j.values().dim() == 2 else 0 for j in jagged]
    if not features:
        empty = torch.zeros((num_requests, 0, 0), dtype=dtype)
        return empty, torch.zeros((num_requests, 0), dtype=torch.bool)
    lens = lengths[0]
    longest = int(lens.max()) if lens.numel() else 0
    width = longest if max_len is None else min(longest, max_len)
    # Items are most recent first, so truncating to `width` keeps the most recent ones.
    kept = lens.clamp(max=width)
    starts = torch.cumsum(lens, 0) - lens
    rows = torch.repeat_interleave(torch.arange(num_requests), kept)
    pos = torch.arange(int(kept.sum())) - torch.repeat_interleave(
        torch.cumsum(kept, 0) - kept, kept
    )
    src = torch.repeat_interleave(starts, kept) + pos
    seq = torch.zeros((num_requests, width, sum(dims)), dtype=dtype)
    col = 0
    for j, d in zip(jagged, dims, strict=True):
        seq[rows, pos, col : col + d] = j.values().index_select(0, src).to(dtype)
        col += d
    mask = torch.arange(width).unsqueeze(0) < kept.unsqueeze(1)
    return seq, mask


def inputs_from_lookup(
    result: LookupResult,
    request_dense: torch.Tensor,
    candidate_dense: torch.Tensor,
    sequence_features: Sequence[str] = (),
    max_sequence_len: int | None = None,
) -> tuple[RequestInputs, CandidateInputs]:
    """Tier inputs from an embed_store lookup and the dense features.

    Args:
        result: The lookup: request-level pooled features (``result.requests``, one row per
            request), candidate-level pooled features and, for the behaviour sequence, unpooled
            request-level features in ``result.sequences``.
        request_dense: float ``[R, nu]``.
        candidate_dense: float ``[C, na]``.
        sequence_features: Names of the sequence features, concatenated along the item width in
            this order (they must have the same length per request). Empty: no sequence (``L`` =
            ``Ds`` = 0).
        max_sequence_len: Keep at most this many (most recent) items per request; None keeps all.

    Returns:
        ``(request_inputs, candidate_inputs)`` in the dtype of ``request_dense``.

    Raises:
        InputError: No request-level features, row counts that disagree, a missing sequence
            feature or sequence features of different lengths.
    """
    if result.requests is None:
        raise InputError(
            "the lookup has no request-level features; the tiers need the user's",
            source="LookupResult.requests",
            hint="look the user/context features up as request features (LookupBatch.requests)",
        )
    pooled_req = result.requests.values()
    dtype = request_dense.dtype
    seq, mask = _padded_sequence(
        result, sequence_features, int(pooled_req.shape[0]), max_sequence_len, dtype
    )
    req = RequestInputs(
        pooled=pooled_req.to(dtype), dense=request_dense, sequence=seq, sequence_mask=mask
    )
    cand = CandidateInputs(
        pooled=result.candidates.values().to(dtype),
        dense=candidate_dense,
        request_index=result.candidate_request,
    )
    return req, cand
