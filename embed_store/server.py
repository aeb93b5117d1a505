"""The gRPC Lookup server: a thin servicer over a lookup runtime, and :func:`build_server`.

A servicer method converts the request (:mod:`embed_store.convert`), calls the runtime and converts
the response: no try/except here. Errors become status codes in
:class:`adrank.rpc.ErrorMappingInterceptor` (InputError -> INVALID_ARGUMENT naming the field,
RankFailedError -> UNAVAILABLE, DeadlineExceededError -> DEADLINE_EXCEEDED); tokens are checked by
:class:`adrank.rpc.TokenAuthInterceptor`.

The runtime is either :class:`~embed_store.local_lookup.LocalLookup` (one process) or the sharded
runtime's :class:`~embed_store.sharded_runtime.ShardedLookup` (rank 0 of several). A lookup uses
the whole runtime, so lookups run one at a time; the handler pool is small, and decoding and
encoding of other calls overlap with the running lookup. A call that waited for the runtime past
its deadline is answered DEADLINE_EXCEEDED without being computed.

:func:`build_server` registers the standard health service and server reflection, applies the
message-size limits and binds the port (127.0.0.1 by default; other addresses need TLS);
:meth:`EmbeddingServer.stop` reports NOT_SERVING, lets in-flight calls finish within a grace
period, waits for the handler threads, then closes the runtime.

Example::

    runtime = LocalLookup.single_device(plan, checkpoint.read_block, remaps)
    server = build_server(runtime, ListenConfig(port=0), hasher=IdKeyHasher.from_plan_dir(plan, d))
    server.start()
    ...  # EmbeddingClient(server.address).lookup({"ad_id": [[1, 2], [3]]})
    server.stop()
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import grpc

from adrank import rpc
from adrank.types import ShardPlan
from embed_store import convert
from embed_store.batch import LookupBatch, LookupResult
from embed_store.layout import LookupLayout
from embed_store.pb.v1 import embeddings_pb2 as pb
from embed_store.pb.v1 import embeddings_pb2_grpc as pb_grpc

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "DEFAULT_PORT",
    "SERVICE_NAME",
    "EmbeddingServer",
    "EmbeddingServicer",
    "LookupRuntime",
    "build_server",
]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 50062
"""Default TCP port of ``adrank serve-embeddings`` (0 picks a free one)."""
DEFAULT_MAX_WORKERS = 4
"""Handler threads: lookups run one at a time, the others decode and encode meanwhile."""
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EmbeddingService"].full_name
"""Full name of the service (``adrank.embed_store.v1.EmbeddingService``)."""


class LookupRuntime(Protocol):
    """What the server needs of a lookup runtime (LocalLookup and ShardedLookup both fit)."""

    plan: ShardPlan
    layout: LookupLayout

    def lookup(self, batch: LookupBatch) -> LookupResult:
        """Pooled embeddings of ``batch``."""
        ...

    def close(self) -> None:
        """Release the runtime (stop its ranks)."""
        ...


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):  # type: ignore[misc]
    """The EmbeddingService methods over a lookup runtime.

    Args:
        runtime: The runtime serving the plan's tables.
        hasher: Hashes raw id keys (``ID_SPACE_ID_KEY`` requests).
        description: What :meth:`DescribeModel` answers.
    """

    def __init__(
        self,
        runtime: LookupRuntime,
        hasher: convert.IdKeyHasher,
        description: convert.ModelDescription,
    ) -> None:
        self._runtime = runtime
        self._hasher = hasher
        self._description = description
        self._description_proto = convert.description_to_proto(description)
        # LocalLookup's kernels are not safe to share between threads and ShardedLookup uses
        # every rank per batch: one lookup at a time either way.
        self._lock = threading.Lock()

    def Lookup(  # noqa: N802 - the name is the RPC's
        self, request: pb.LookupRequest, context: grpc.ServicerContext
    ) -> pb.LookupResponse:
        """Pooled embeddings of the request's candidate and request-level bags."""
        batch = convert.batch_from_proto(request, self._hasher)
        with self._lock:
            rpc.require_time_left(context, "Lookup", "while it waited for the runtime")
            result = self._runtime.lookup(batch)
        return convert.lookup_response(result, self._description.plan_fingerprint)

    def DescribeModel(  # noqa: N802 - the name is the RPC's
        self, request: pb.DescribeModelRequest, context: grpc.ServicerContext
    ) -> pb.DescribeModelResponse:
        """The features served and their shapes."""
        return self._description_proto


class EmbeddingServer(rpc.RpcServer):
    """A built (bound, not yet started) Lookup server. Use :func:`build_server`.

    Args:
        bound: The bound gRPC server.
        runtime: The runtime served.
        description: What it serves.
        owns_runtime: Close the runtime on stop.
    """

    def __init__(
        self,
        bound: rpc.BoundServer,
        runtime: LookupRuntime,
        description: convert.ModelDescription,
        *,
        owns_runtime: bool,
    ) -> None:
        super().__init__(
            bound,
            label="embedding server",
            detail=f"{len(description.features)} features on {description.world_size} devices",
            on_stop=runtime.close if owns_runtime else None,
        )
        self._runtime = runtime
        self._description = description

    @property
    def runtime(self) -> LookupRuntime:
        """The runtime served."""
        return self._runtime

    @property
    def description(self) -> convert.ModelDescription:
        """What the server serves (its DescribeModel answer)."""
        return self._description


def build_server(
    runtime: LookupRuntime,
    listen: rpc.ListenConfig,
    *,
    hasher: convert.IdKeyHasher | None = None,
    owns_runtime: bool = True,
) -> EmbeddingServer:
    """Build and bind a Lookup server (call :meth:`EmbeddingServer.start` to serve).

    Args:
        runtime: A started runtime.
        listen: Where and how to listen.
        hasher: Hashes raw id keys; default: the plan's seeds without dedicated keys (id keys of
            features with dedicated rows are then refused; use
            :meth:`~embed_store.convert.IdKeyHasher.from_plan_dir`).
        owns_runtime: Close the runtime on stop, and when binding fails.

    Returns:
        The bound server.

    Raises:
        InputError: An invalid listen configuration (every problem at once), unreadable TLS
            files, or a port that cannot be bound.
        NotFoundError: The token file does not exist.
    """
    try:
        description = convert.describe_model(
            runtime.plan,
            runtime.layout,
            world_size=runtime.layout.world_size,
            max_receive_bytes=listen.max_receive_bytes,
            max_send_bytes=listen.max_send_bytes,
        )
        servicer = EmbeddingServicer(
            runtime, hasher or convert.IdKeyHasher(runtime.plan, {}), description
        )

        def add_services(server: grpc.Server) -> None:
            pb_grpc.add_EmbeddingServiceServicer_to_server(servicer, server)

        bound = rpc.bind_server(
            listen,
            add_services=add_services,
            service_names=(SERVICE_NAME,),
            server_label="embedding server",
            thread_name_prefix="embedding-server",
        )
    except BaseException:
        if owns_runtime:
            runtime.close()
        raise
    return EmbeddingServer(bound, runtime, description, owns_runtime=owns_runtime)
