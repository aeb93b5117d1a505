"""RankClient: the Python client of ``adrank serve``, returning the ranker's own result type.

:meth:`RankClient.rank` takes what :meth:`Ranker.rank <ranker.serving.Ranker.rank>` takes (a
user id, candidate ad ids and one flat context mapping) and returns a
:class:`~ranker.serving.RankResult`, so code can switch between an in-process ranker and a
remote one. The context's columns are sorted into the request's ``sparse`` (ids) and ``dense``
(numbers) maps by what the server's model needs (its DescribeModel answer, fetched once per
client and cached); columns the model does not use go by their type (ints and lists of ints as
ids, other numbers as dense values) and the server ignores them.

Deadlines, retries (UNAVAILABLE only) and the mapping of status codes to adrank errors come from
:class:`adrank.rpc.RpcClient`: INVALID_ARGUMENT -> InputError whose ``source`` names the field
(``context[geo]``), DEADLINE_EXCEEDED -> DeadlineExceededError, UNAUTHENTICATED ->
UnauthenticatedError, UNAVAILABLE (server down, or its feature server or sharded runtime failed)
-> StoreError.

Example::

    with RankClient("127.0.0.1:50063", timeout_s=0.1) as client:
        result = client.rank(
            7,                                        # user id
            [101, 102, 103],                          # candidate ads
            {"device": 2, "hour": 14, "geo": 31,      # request-level ids
             "user_clicked_ads": [88, 17], "user_clicked_categories": [4, 4],
             "user_activity": 0.4, "history_len": 2},
            latency_budget_ms=30,
        )
        result.scores, result.tier, result.reason
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

from adrank import rpc
from adrank.errors import InputError
from ranker.pb.v1 import ranker_pb2 as pb
from ranker.pb.v1 import ranker_pb2_grpc as pb_grpc
from ranker.serving import RankResult

__all__ = ["ContextLike", "RankClient", "RankerDescription"]

logger = logging.getLogger(__name__)

ContextLike = Mapping[str, Sequence[int] | np.ndarray | int | float]
"""Request-level values by column: ids (an int or a list of ints) or numbers."""


@dataclasses.dataclass(frozen=True, slots=True)
class RankerDescription:
    """What a ranking server's model needs and offers (its DescribeModel answer).

    Attributes:
        plan_fingerprint: Plan the embeddings follow.
        tiers: Tier names, smallest first.
        safe_tier: Tier of cold-start users.
        sparse_context: Context columns of ids (one id each, e.g. ``device``).
        sequence_context: Context columns of behaviour sequences (lists of equal length).
        dense_context: Context columns of numbers.
        max_sequence_len: Most recent sequence items the tiers use.
        world_size: Devices the embedding tables are sharded over.
    """

    plan_fingerprint: str
    tiers: tuple[str, ...]
    safe_tier: str
    sparse_context: tuple[str, ...]
    sequence_context: tuple[str, ...]
    dense_context: tuple[str, ...]
    max_sequence_len: int
    world_size: int


class RankClient(rpc.RpcClient):
    """Client of ``adrank serve``.

    Args:
        target: ``host:port`` of the server.
        timeout_s: Default deadline per call, retries included (seconds; default 1).
        retries: Retries after UNAVAILABLE (default 2).
        backoff_s: First retry delay, doubled per retry (seconds).
        token: Shared token, sent as ``authorization: Bearer <token>``.
        root_certificates: PEM root certificates to verify the server with; setting it (or
            ``tls=True``, which uses the system roots) makes the channel TLS.
        tls: Use TLS with the system's root certificates.
        server_name_override: Host name to verify in the server's certificate.
        max_receive_bytes: Largest response accepted (default 64 MiB).

    Raises:
        InputError: Bad arguments.
    """

    server_label = "ranking server"
    serve_command = "adrank serve"
    stub_class = pb_grpc.RankServiceStub

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._description: RankerDescription | None = None
        self._description_lock = threading.Lock()

    def rank(
        self,
        user_id: int,
        ad_ids: Sequence[int] | np.ndarray,
        context: ContextLike,
        *,
        latency_budget_ms: float | None = None,
        force_tier: str | None = None,
        request_id: int = 0,
        timeout_s: float | None = None,
        as_of_us: int | None = None,
    ) -> RankResult:
        """Scores of ``ad_ids`` for ``user_id`` (the server's Rank).

        Args:
            user_id: Raw user id.
            ad_ids: Raw candidate ad ids, in request order.
            context: Request-level values by column (see :class:`RankerDescription`): ids for
                sparse and sequence columns, numbers for dense ones.
            latency_budget_ms: Budget of the whole call in milliseconds: the server downgrades the
                tier when the routed one would not fit (None: no budget).
            force_tier: Score with this tier instead of routing.
            request_id: The caller's id of the request (recorded in the server's router log).
            as_of_us: Read features as of this time (microseconds; None: newest versions).
            timeout_s: Deadline of this call, retries included (default: the client's); the first
                call also fetches the model's description within it.

        Returns:
            Scores (float32, request order), tier, reason, feature misses, the server's stage
            timings and the plan fingerprint.

        Raises:
            InputError: A context value that is neither ids nor a number (checked here), or
                what the server refused (missing columns, no candidates, unknown tier...; the
                ``source`` names the field).
            DeadlineExceededError: No answer within the deadline.
            UnauthenticatedError: The server refused the token.
            StoreError: The server is unavailable (after retries), or its feature server or
                sharded runtime failed.
        """
        dense_names = set(self.describe(timeout_s=timeout_s).dense_context)
        request = pb.RankRequest(
            user_id=_int(user_id, "user_id"),
            ad_ids=_ids(ad_ids, "ad_ids").tolist(),
            force_tier=force_tier or "",
            request_id=int(request_id),
        )
        if latency_budget_ms is not None:
            request.latency_budget_ms = float(latency_budget_ms)
        if as_of_us is not None:
            request.as_of_us = int(as_of_us)
        _fill_context(request.context, context, dense_names)
        response = self.call("Rank", self._stub.Rank, request, timeout_s)
        t = response.timings
        return RankResult(
            scores=np.array(response.scores, dtype=np.float32),
            tier=response.tier,
            reason=response.reason,
            feature_misses=int(response.feature_misses),
            timings_ms={
                "features": t.features_ms,
                "lookup": t.lookup_ms,
                "score": t.score_ms,
                "total": t.total_ms,
            },
            plan_fingerprint=response.plan_fingerprint,
        )

    def describe(self, *, timeout_s: float | None = None) -> RankerDescription:
        """The server's model: context columns, tiers, plan (fetched once, then cached).

        Raises:
            As :meth:`rank`.
        """
        with self._description_lock:
            if self._description is None:
                r = self.call(
                    "DescribeModel",
                    self._stub.DescribeModel,
                    pb.DescribeModelRequest(),
                    timeout_s,
                )
                self._description = RankerDescription(
                    plan_fingerprint=r.plan_fingerprint,
                    tiers=tuple(r.tiers),
                    safe_tier=r.safe_tier,
                    sparse_context=tuple(r.sparse_context),
                    sequence_context=tuple(r.sequence_context),
                    dense_context=tuple(r.dense_context),
                    max_sequence_len=int(r.max_sequence_len),
                    world_size=int(r.world_size),
                )
            return self._description


def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _int(v: Any, where: str) -> int:
    if not _is_int(v):
        raise InputError(f"expected an integer id, found {v!r}", source=where)
    return int(v)


def _ids(v: Any, where: str) -> np.ndarray:
    """An int or a sequence of ints as int64 (uint64 ids keep their bits)."""
    if _is_int(v):
        return np.array([int(v)], dtype=np.int64)
    arr = None
    if not isinstance(v, (str, bytes, Mapping)) and isinstance(v, (Sequence, np.ndarray)):
        try:
            arr = np.asarray(v)
        except (ValueError, OverflowError):
            arr = None
    if arr is None or arr.ndim != 1 or not (arr.dtype.kind in "iu" or arr.size == 0):
        text = repr(v)
        raise InputError(
            f"expected integer ids, found {text if len(text) <= 60 else text[:57] + '...'}",
            source=where,
        )
    return arr.astype(np.int64, copy=False)


def _fill_context(out: pb.Context, context: ContextLike, dense_names: set[str]) -> None:
    """Sort ``context`` into ``out.sparse`` and ``out.dense``; every bad value at once."""
    problems: list[InputError] = []
    for name, value in context.items():
        where = f"context[{name}]"
        dense = name in dense_names or (
            not _is_int(value) and isinstance(value, Real) and not isinstance(value, bool)
        )
        if dense:
            if isinstance(value, Real) and not isinstance(value, bool):
                x = float(value)
                if math.isfinite(x):
                    out.dense[name] = x
                    continue
            problems.append(InputError(f"expected a finite number, found {value!r}", source=where))
            continue
        try:
            out.sparse[name].ids.extend(_ids(value, where).tolist())
        except InputError as exc:
            problems.append(exc)
    if problems:
        raise InputError.from_problems(problems)
