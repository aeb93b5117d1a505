"""The gRPC feature server: a thin servicer over :class:`FeatureStore` and :func:`build_server`.

A servicer method converts the request (:mod:`feature_service.convert`), calls the store core and
converts the response: no RocksDB calls and no try/except here. Errors become status codes in
:class:`adrank.rpc.ErrorMappingInterceptor`, tokens are checked by
:class:`adrank.rpc.TokenAuthInterceptor`.

:func:`build_server` opens the store read-only, refuses a non-loopback address without TLS,
registers the standard health service (``grpc.health.v1.Health``) and server reflection, applies
the message-size limits, and binds the port (:func:`adrank.rpc.bind_server`);
:meth:`FeatureServer.stop` reports NOT_SERVING, lets in-flight calls finish within a grace period,
waits for the handler threads, then closes the store.

Example::

    server = build_server(ServerConfig(store_path="features.db", port=0))
    server.start()
    ...  # FeatureClient(f"127.0.0.1:{server.port}").get_features("ads", [1, 2, 3])
    server.stop()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from adrank import rpc
from adrank.errors import InputError
from feature_service import convert
from feature_service.pb.v1 import feature_store_pb2 as pb
from feature_service.pb.v1 import feature_store_pb2_grpc as pb_grpc
from feature_service.store import DEFAULT_BLOCK_CACHE_BYTES, FeatureStore
from feature_service.types import RequestFeatures

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_MAX_RECEIVE_BYTES",
    "DEFAULT_MAX_SEND_BYTES",
    "DEFAULT_MAX_WORKERS",
    "DEFAULT_GRACE_S",
    "SERVICE_NAME",
    "ServerConfig",
    "FeatureServicer",
    "FeatureServer",
    "build_server",
    "validate_server_config",
]

logger = logging.getLogger(__name__)

DEFAULT_HOST = rpc.DEFAULT_HOST
"""Address the server binds unless told otherwise: loopback only."""
DEFAULT_PORT = 50061
"""Default TCP port (0 picks a free one)."""
DEFAULT_MAX_RECEIVE_BYTES = rpc.DEFAULT_MAX_RECEIVE_BYTES
"""Largest request accepted (4 MiB, gRPC's default: ~450k int ids); larger ones get
RESOURCE_EXHAUSTED."""
DEFAULT_MAX_SEND_BYTES = rpc.DEFAULT_MAX_SEND_BYTES
"""Largest response sent (64 MiB); a larger one fails with RESOURCE_EXHAUSTED. A ranking request
(1 user + 500 ads x 32 float features) is ~70 KB."""
DEFAULT_MAX_WORKERS = 8
"""Handler threads. Reads release the GIL in RocksDB, so a few more threads than cores help."""
DEFAULT_GRACE_S = rpc.DEFAULT_GRACE_S
"""Seconds in-flight calls get to finish on stop."""
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FeatureService"].full_name
"""Full name of the feature service (``adrank.feature_service.v1.FeatureService``)."""


def _wall_clock_us() -> int:
    return time.time_ns() // 1_000


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How to serve a feature store.

    Args:
        store_path: Feature store directory (opened read-only).
        host: Address to bind. Anything but loopback requires ``tls_cert_path``/``tls_key_path``.
        port: TCP port; 0 picks a free one (see :attr:`FeatureServer.port`).
        tls_cert_path: PEM certificate chain of the server.
        tls_key_path: PEM private key of the server.
        token_path: File holding a shared token that clients must send (optional).
        max_receive_bytes: Largest request accepted, in bytes.
        max_send_bytes: Largest response sent, in bytes.
        max_workers: Handler threads.
        grace_s: Seconds in-flight calls get to finish on stop.
        ttl_at_server_clock: Latest reads without ``now_us`` apply each group's TTL relative to the
            server's clock (expired features are not served); False applies no TTL then.
        block_cache_bytes: RocksDB block cache of the store, in bytes.
    """

    store_path: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tls_cert_path: str | None = None
    tls_key_path: str | None = None
    token_path: str | None = None
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    max_send_bytes: int = DEFAULT_MAX_SEND_BYTES
    max_workers: int = DEFAULT_MAX_WORKERS
    grace_s: float = DEFAULT_GRACE_S
    ttl_at_server_clock: bool = True
    block_cache_bytes: int = DEFAULT_BLOCK_CACHE_BYTES

    @property
    def tls(self) -> bool:
        """TLS is configured."""
        return self.listen.tls

    @property
    def listen(self) -> rpc.ListenConfig:
        """Where and how the server listens."""
        return rpc.ListenConfig(
            host=self.host,
            port=self.port,
            tls_cert_path=self.tls_cert_path,
            tls_key_path=self.tls_key_path,
            token_path=self.token_path,
            max_receive_bytes=self.max_receive_bytes,
            max_send_bytes=self.max_send_bytes,
            max_workers=self.max_workers,
            grace_s=self.grace_s,
        )


def validate_server_config(config: ServerConfig) -> None:
    """Check a configuration before anything is opened or bound.

    Raises:
        InputError: Every problem at once: a non-loopback host without TLS, half a TLS pair,
            missing certificate/key/token files, out-of-range port, limits or worker count.
    """
    problems = rpc.listen_problems(config.listen)
    if problems:
        raise InputError.from_problems(problems)


class FeatureServicer(pb_grpc.FeatureServiceServicer):  # type: ignore[misc]
    """The FeatureService methods over a store.

    Args:
        store: An open store (read-only in a server).
        ttl_at_server_clock: See :attr:`ServerConfig.ttl_at_server_clock`.
        clock_us: The server's clock in microseconds since the epoch (tests pass a fixed one).
    """

    def __init__(
        self,
        store: FeatureStore,
        *,
        ttl_at_server_clock: bool = True,
        clock_us: Callable[[], int] = _wall_clock_us,
    ) -> None:
        self._store = store
        self._ttl_at_server_clock = ttl_at_server_clock
        self._clock_us = clock_us

    def GetFeatures(  # noqa: N802 - the name is the RPC's
        self, request: pb.GetFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.GetFeaturesResponse:
        """One group's features for a list of entities."""
        read, at = convert.read_from_proto(request)
        (frame,) = self._store.get_batch([read], as_of_us=at.as_of_us, now_us=self._now_us(at))
        return convert.features_response(frame)

    def GetRequestFeatures(  # noqa: N802 - the name is the RPC's
        self, request: pb.GetRequestFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.GetRequestFeaturesResponse:
        """One ranking request's user and candidate features, in one call."""
        user, candidates, at = convert.request_reads_from_proto(request)
        user_frame, candidate_frame = self._store.get_batch(
            [user, candidates], as_of_us=at.as_of_us, now_us=self._now_us(at)
        )
        return convert.request_features_response(RequestFeatures(user_frame, candidate_frame))

    def _now_us(self, at: convert.ReadTime) -> int | None:
        if at.now_us is not None or at.as_of_us is not None or not self._ttl_at_server_clock:
            return at.now_us
        return self._clock_us()


class FeatureServer(rpc.RpcServer):
    """A built (bound, not yet started) feature server. Use :func:`build_server`.

    Args:
        bound: The bound gRPC server.
        store: The store served.
        owns_store: Close the store on stop.
    """

    def __init__(self, bound: rpc.BoundServer, store: FeatureStore, *, owns_store: bool) -> None:
        super().__init__(
            bound,
            label="feature server",
            detail=f"store {store.path}",
            on_stop=store.close if owns_store else None,
        )
        self._store = store

    @property
    def store(self) -> FeatureStore:
        """The store served."""
        return self._store


def build_server(
    config: ServerConfig,
    *,
    store: FeatureStore | None = None,
    clock_us: Callable[[], int] = _wall_clock_us,
) -> FeatureServer:
    """Build and bind a feature server (call :meth:`FeatureServer.start` to serve).

    Args:
        config: What to serve and how.
        store: An already open store to serve instead of opening ``config.store_path`` read-only
            (the caller keeps ownership and closes it).
        clock_us: The server's clock for TTL (microseconds since the epoch).

    Returns:
        The bound server.

    Raises:
        InputError: An invalid configuration (every problem at once), unreadable TLS files, or a
            port that cannot be bound.
        NotFoundError: No store at ``config.store_path``, or no token file.
        StoreError: RocksDB could not open the store.
    """
    validate_server_config(config)
    owns_store = store is None
    if store is None:
        store = FeatureStore.open(
            config.store_path, read_only=True, block_cache_bytes=config.block_cache_bytes
        )
    servicer = FeatureServicer(
        store, ttl_at_server_clock=config.ttl_at_server_clock, clock_us=clock_us
    )

    def add_services(server: grpc.Server) -> None:
        pb_grpc.add_FeatureServiceServicer_to_server(servicer, server)

    try:
        bound = rpc.bind_server(
            config.listen,
            add_services=add_services,
            service_names=(SERVICE_NAME,),
            server_label="feature server",
            thread_name_prefix="feature-server",
        )
    except BaseException:
        if owns_store:
            store.close()
        raise
    return FeatureServer(bound, store, owns_store=owns_store)
