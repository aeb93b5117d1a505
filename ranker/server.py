"""The gRPC Rank server (``adrank serve``): a thin servicer over :class:`ranker.serving.Ranker`.

A servicer method converts the request (:func:`query_from_proto`), calls the ranker and converts
the result (:func:`response_to_proto`): no try/except here. Errors become status codes in
:class:`adrank.rpc.ErrorMappingInterceptor` (InputError -> INVALID_ARGUMENT naming the field,
DeadlineExceededError -> DEADLINE_EXCEEDED, StoreError -> UNAVAILABLE); tokens are checked by
:class:`adrank.rpc.TokenAuthInterceptor`; :meth:`RankMetrics.track_errors
<ranker.metrics_export.RankMetrics.track_errors>` counts failures by code on the way out.

The call's gRPC deadline reaches the ranker as ``deadline_s``: a call whose deadline passes while
its features are read or its embeddings looked up is answered DEADLINE_EXCEEDED without being
scored. The ranker is shared by the handler threads (it is thread-safe: lookups run one at a
time, feature reads and scoring overlap).

:func:`build_server` registers the standard health service and server reflection, applies the
message-size limits and binds the port (127.0.0.1 by default; other addresses need TLS);
:meth:`RankServer.stop` reports NOT_SERVING, lets in-flight calls finish within a grace period,
waits for the handler threads, then runs ``on_stop`` (closing the lookup runtime and the feature
source).

Example::

    ranker = Ranker(load_model(model_dir), plan, plan_dir, lookup, FeatureStore.open(store))
    server = build_server(ranker, ListenConfig(port=0))
    server.start()
    ...  # RankClient(server.address).rank(user_id, ad_ids, context)
    server.stop()
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from adrank import rpc
from adrank.errors import InputError
from ranker.metrics_export import RankMetrics
from ranker.pb.v1 import ranker_pb2 as pb
from ranker.pb.v1 import ranker_pb2_grpc as pb_grpc
from ranker.serving import Ranker, RankResult

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "DEFAULT_PORT",
    "SERVICE_NAME",
    "RankQuery",
    "RankServer",
    "RankServicer",
    "build_server",
    "describe_to_proto",
    "query_from_proto",
    "response_to_proto",
]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 50063
"""Default TCP port of ``adrank serve`` (0 picks a free one)."""
DEFAULT_MAX_WORKERS = 4
"""Handler threads: one request's features are read while another's is scored."""
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RankService"].full_name
"""Full name of the service (``adrank.ranker.v1.RankService``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class RankQuery:
    """A decoded :class:`RankRequest <ranker.pb.v1.ranker_pb2.RankRequest>`: what
    :meth:`Ranker.rank <ranker.serving.Ranker.rank>` takes.

    Attributes:
        user_id: Raw user id.
        ad_ids: int64 ``[candidates]`` raw ad ids, in request order.
        context: Column -> int64 ids (sparse and sequence columns) or a float (dense columns).
        latency_budget_ms: Budget of the whole call (None: none).
        force_tier: Tier to score with (None: route).
        request_id: The caller's id of the request.
        as_of_us: Point-in-time feature read (None: newest versions).
    """

    user_id: int
    ad_ids: np.ndarray
    context: dict[str, np.ndarray | float]
    latency_budget_ms: float | None
    force_tier: str | None
    request_id: int
    as_of_us: int | None = None


def query_from_proto(request: pb.RankRequest) -> RankQuery:
    """Decode a request (the ranker checks the values).

    Raises:
        InputError: A column sent both as ids and as a dense value (every such column at once).
    """
    sparse = request.context.sparse
    dense = request.context.dense
    both = sorted(set(sparse) & set(dense))
    if both:
        raise InputError.from_problems(
            [
                InputError(
                    "sent both in context.sparse and in context.dense",
                    source=f"context[{name}]",
                    hint="send ids in context.sparse and numbers in context.dense, once each",
                )
                for name in both
            ]
        )
    context: dict[str, np.ndarray | float] = {
        name: np.array(ids.ids, dtype=np.int64) for name, ids in sparse.items()
    }
    context.update({name: float(v) for name, v in dense.items()})
    return RankQuery(
        user_id=int(request.user_id),
        ad_ids=np.array(request.ad_ids, dtype=np.int64),
        context=context,
        latency_budget_ms=(
            float(request.latency_budget_ms) if request.HasField("latency_budget_ms") else None
        ),
        force_tier=request.force_tier or None,
        request_id=int(request.request_id),
        as_of_us=int(request.as_of_us) if request.HasField("as_of_us") else None,
    )


def response_to_proto(result: RankResult, request_id: int) -> pb.RankResponse:
    """Encode a ranker's result."""
    t = result.timings_ms
    return pb.RankResponse(
        scores=result.scores.tolist(),
        tier=result.tier,
        reason=result.reason,
        plan_fingerprint=result.plan_fingerprint,
        feature_misses=result.feature_misses,
        timings=pb.StageTimings(
            features_ms=t["features"],
            lookup_ms=t["lookup"],
            score_ms=t["score"],
            total_ms=t["total"],
        ),
        request_id=request_id,
    )


def describe_to_proto(ranker: Ranker, world_size: int) -> pb.DescribeModelResponse:
    """What :meth:`RankServicer.DescribeModel` answers for ``ranker``."""
    return pb.DescribeModelResponse(
        plan_fingerprint=ranker.plan_fingerprint,
        tiers=list(ranker.tier_names),
        safe_tier=ranker.tier_names[ranker.model.router.safe_tier],
        sparse_context=list(ranker.sparse_context),
        sequence_context=list(ranker.sequence_context),
        dense_context=list(ranker.dense_context),
        max_sequence_len=ranker.model.max_sequence_len,
        world_size=world_size,
    )


def _deadline_s(context: grpc.ServicerContext) -> float | None:
    """The call's deadline on ``time.monotonic()``'s clock (None: the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class RankServicer(pb_grpc.RankServiceServicer):  # type: ignore[misc]
    """The RankService methods over a ranker.

    Args:
        ranker: The ranker (shared by the handler threads).
        metrics: Where answered and failed requests are counted.
        world_size: Devices the embedding tables are sharded over (DescribeModel).
    """

    def __init__(self, ranker: Ranker, metrics: RankMetrics, world_size: int) -> None:
        self._ranker = ranker
        self._metrics = metrics
        self._description = describe_to_proto(ranker, world_size)

    def Rank(  # noqa: N802 - the name is the RPC's
        self, request: pb.RankRequest, context: grpc.ServicerContext
    ) -> pb.RankResponse:
        """Scores of the request's candidates with the routed (or forced) tier."""
        with self._metrics.track_errors():
            q = query_from_proto(request)
            result = self._ranker.rank(
                q.user_id,
                q.ad_ids,
                q.context,
                latency_budget_ms=q.latency_budget_ms,
                request_id=q.request_id,
                force_tier=q.force_tier,
                deadline_s=_deadline_s(context),
                as_of_us=q.as_of_us,
            )
            self._metrics.observe(result, len(q.ad_ids))
            return response_to_proto(result, q.request_id)

    def DescribeModel(  # noqa: N802 - the name is the RPC's
        self, request: pb.DescribeModelRequest, context: grpc.ServicerContext
    ) -> pb.DescribeModelResponse:
        """The context columns the model needs, and its tiers."""
        return self._description


class RankServer(rpc.RpcServer):
    """A built (bound, not yet started) Rank server. Use :func:`build_server`.

    Args:
        bound: The bound gRPC server.
        ranker: The ranker served.
        metrics: Its metrics.
        on_stop: Called once after the last handler returned.
    """

    def __init__(
        self,
        bound: rpc.BoundServer,
        ranker: Ranker,
        metrics: RankMetrics,
        *,
        on_stop: Callable[[], None] | None,
    ) -> None:
        super().__init__(
            bound,
            label="ranking server",
            detail=f"tiers {', '.join(ranker.tier_names)}",
            on_stop=on_stop,
        )
        self._ranker = ranker
        self._metrics = metrics

    @property
    def ranker(self) -> Ranker:
        """The ranker served."""
        return self._ranker

    @property
    def metrics(self) -> RankMetrics:
        """The server's metrics (its own registry)."""
        return self._metrics


def build_server(
    ranker: Ranker,
    listen: rpc.ListenConfig,
    *,
    metrics: RankMetrics | None = None,
    world_size: int | None = None,
    on_stop: Callable[[], None] | None = None,
) -> RankServer:
    """Build and bind a Rank server (call :meth:`RankServer.start` to serve).

    Args:
        ranker: The ranker to serve.
        listen: Where and how to listen.
        metrics: Where requests are counted (default: new metrics in their own registry).
        world_size: Devices of the embedding runtime, for DescribeModel (default: the lookup
            runtime's ``layout.world_size``, else 1).
        on_stop: Releases what the ranker uses (runtime, feature source), after the last handler
            returned; also called when binding fails.

    Returns:
        The bound server.

    Raises:
        InputError: An invalid listen configuration (every problem at once), unreadable TLS
            files, or a port that cannot be bound.
        NotFoundError: The token file does not exist.
    """
    try:
        if metrics is None:
            metrics = RankMetrics(ranker.tier_names)
        if world_size is None:
            layout: Any = getattr(ranker.lookup, "layout", None)
            world_size = int(getattr(layout, "world_size", 1))
        servicer = RankServicer(ranker, metrics, world_size)

        def add_services(server: grpc.Server) -> None:
            pb_grpc.add_RankServiceServicer_to_server(servicer, server)

        bound = rpc.bind_server(
            listen,
            add_services=add_services,
            service_names=(SERVICE_NAME,),
            server_label="ranking server",
            thread_name_prefix="ranking-server",
        )
    except BaseException:
        if on_stop is not None:
            on_stop()
        raise
    return RankServer(bound, ranker, metrics, on_stop=on_stop)
