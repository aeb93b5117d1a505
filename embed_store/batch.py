"""What a lookup takes and returns: jagged ids per feature, request-level and candidate-level.

A ranking request has one user and many candidate ads. Request-level features (the user's ids,
context) have one bag per *request*; candidate-level features (the ad's ids) one bag per
*candidate*. A :class:`LookupBatch` carries both, so the runtime looks a user feature up once per
request and the caller broadcasts it over that request's candidates
(``result.request_for_candidates()`` or, better, inside its batched ops) instead of looking it up
once per candidate.

Ids are in each table's ``hashed_id`` space (DESIGN.md "The id spaces"): what TorchRec calls the
index into the table before pruning. :func:`embed_store.frontend.hash_id_keys` turns raw id keys
into them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from adrank.errors import InputError

__all__ = ["JaggedIds", "LookupBatch", "LookupResult"]


@dataclasses.dataclass(frozen=True, slots=True)
class JaggedIds:
    """Bags of ids for several features over the same bags (TorchRec's KeyedJaggedTensor layout).

    Attributes:
        features: Feature names, in the order of ``lengths``.
        values: int64 ids, all bags of the first feature, then the second...
        lengths: int64 ``[len(features) * batch_size]``: ids per bag, feature-major.
        batch_size: Bags per feature.
    """

    features: tuple[str, ...]
    values: torch.Tensor
    lengths: torch.Tensor
    batch_size: int

    @classmethod
    def from_kjt(cls, kjt: KeyedJaggedTensor) -> JaggedIds:
        """Wrap a KeyedJaggedTensor with one stride (no variable batch per feature)."""
        return cls(
            features=tuple(kjt.keys()),
            values=kjt.values().to(torch.int64),
            lengths=kjt.lengths().to(torch.int64),
            batch_size=int(kjt.stride()) if kjt.keys() else 0,
        )

    @classmethod
    def from_lists(cls, bags: Mapping[str, Sequence[Sequence[int]]]) -> JaggedIds:
        """Build from ``{feature: [[ids of bag 0], [ids of bag 1], ...]}`` (same bag count each).

        Raises:
            InputError: Features with different bag counts.
        """
        counts = {f: len(b) for f, b in bags.items()}
        if len(set(counts.values())) > 1:
            raise InputError(
                f"every feature needs the same number of bags, got {counts}", source="bags"
            )
        batch = next(iter(counts.values()), 0)
        values = [i for f in bags for bag in bags[f] for i in bag]
        lengths = [len(bag) for f in bags for bag in bags[f]]
        return cls(
            features=tuple(bags),
            values=torch.tensor(values, dtype=torch.int64),
            lengths=torch.tensor(lengths, dtype=torch.int64),
            batch_size=batch,
        )

    def to_kjt(self) -> KeyedJaggedTensor:
        """The same bags as a TorchRec KeyedJaggedTensor."""
        return KeyedJaggedTensor.from_lengths_sync(
            keys=list(self.features), values=self.values, lengths=self.lengths
        )

    def validate(self, where: str) -> None:
        """Check shapes and dtypes (not ranges: the frontend knows the tables).

        Raises:
            InputError: Naming ``where`` and the inconsistent field.
        """
        problems: list[InputError] = []
        if len(set(self.features)) != len(self.features):
            dup = sorted({f for f in self.features if self.features.count(f) > 1})
            problems.append(InputError(f"features listed twice: {dup}", source=where))
        if self.batch_size < 0:
            problems.append(
                InputError(f"batch_size must be >= 0, got {self.batch_size}", source=where)
            )
        if self.values.dim() != 1 or self.lengths.dim() != 1:
            problems.append(InputError("values and lengths must be 1-D", source=where))
        elif self.lengths.numel() != len(self.features) * self.batch_size:
            problems.append(
                InputError(
                    f"lengths has {self.lengths.numel()} entries, expected features x batch_size = "
                    f"{len(self.features)} x {self.batch_size}",
                    source=f"{where}.lengths",
                )
            )
        elif self.lengths.numel() and int(self.lengths.min()) < 0:
            problems.append(InputError("lengths must be >= 0", source=f"{where}.lengths"))
        elif int(self.lengths.sum()) != self.values.numel():
            problems.append(
                InputError(
                    f"lengths sum to {int(self.lengths.sum())} but there are {self.values.numel()} "
                    "values",
                    source=f"{where}.values",
                )
            )
        if problems:
            raise InputError.from_problems(problems)


@dataclasses.dataclass(frozen=True, slots=True)
class LookupBatch:
    """One lookup: candidate-level bags, and request-level bags looked up once per request.

    Attributes:
        candidates: One bag per candidate for each candidate-level feature.
        requests: One bag per request for each request-level feature (None: no request features).
        candidate_request: int64 ``[candidates.batch_size]``: the request each candidate belongs
            to (None: every candidate belongs to request 0, the one-request case).
    """

    candidates: JaggedIds
    requests: JaggedIds | None = None
    candidate_request: torch.Tensor | None = None

    @property
    def num_candidates(self) -> int:
        """Candidate bags (rows of the candidate-level output)."""
        return self.candidates.batch_size

    @property
    def num_requests(self) -> int:
        """Request bags (rows of the request-level output)."""
        return self.requests.batch_size if self.requests is not None else 0


@dataclasses.dataclass(frozen=True, slots=True)
class LookupResult:
    """Pooled embeddings: candidate-level per candidate, request-level once per request.

    Attributes:
        candidates: ``[num_candidates, sum of dims]`` KeyedTensor of the candidate features.
        requests: ``[num_requests, sum of dims]`` KeyedTensor of the request features, or None.
        candidate_request: As in :class:`LookupBatch`.
        sequences: Unpooled (sequence) features: one JaggedTensor of ``[ids, dim]`` per feature.
    """

    candidates: KeyedTensor
    requests: KeyedTensor | None = None
    candidate_request: torch.Tensor | None = None
    sequences: Mapping[str, JaggedTensor] = dataclasses.field(default_factory=dict)

    def request_for_candidates(self) -> KeyedTensor | None:
        """Request-level embeddings broadcast to one row per candidate.

        Meant for callers that need the per-candidate form; scoring code should broadcast inside
        its batched ops instead. With one request the rows are an ``expand`` (no copy).
        """
        if self.requests is None:
            return None
        req = self.requests.values()
        n = self.candidates.values().shape[0]
        if self.candidate_request is None:
            rows = req[:1].expand(n, -1)
        else:
            rows = req.index_select(0, self.candidate_request)
        return KeyedTensor(
            keys=self.requests.keys(), length_per_key=self.requests.length_per_key(), values=rows
        )
