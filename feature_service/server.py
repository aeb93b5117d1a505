"""The gRPC feature server: a thin servicer over :class:`FeatureStore` and :func:`build_server`.

A servicer method converts the request (:mod:`feature_service.convert`), calls the store core and
converts the response: no RocksDB calls and no try/except here. Errors become status codes in
:class:`~feature_service.interceptors.ErrorMappingInterceptor`, tokens are checked by
:class:`~feature_service.auth.TokenAuthInterceptor`.

:func:`build_server` opens the store read-only, refuses a non-loopback address without TLS,
registers the standard health service (``grpc.health.v1.Health``) and server reflection, applies
the message-size limits, and binds the port; :meth:`FeatureServer.stop` reports NOT_SERVING, lets
in-flight calls finish within a grace period, then closes the store.

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
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from adrank.errors import InputError
from feature_service import convert
from feature_service.auth import TokenAuthInterceptor, is_loopback_host, load_token
from feature_service.interceptors import ErrorMappingInterceptor
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

DEFAULT_HOST = "127.0.0.1"
"""Address the server binds unless told otherwise: loopback only."""
DEFAULT_PORT = 50061
"""Default TCP port (0 picks a free one)."""
DEFAULT_MAX_RECEIVE_BYTES = 4 << 20
"""Largest request accepted (4 MiB, gRPC's default: ~450k int ids); larger ones get
RESOURCE_EXHAUSTED."""
DEFAULT_MAX_SEND_BYTES = 64 << 20
"""Largest response sent (64 MiB); a larger one fails with RESOURCE_EXHAUSTED. A ranking request
(1 user + 500 ads x 32 float features) is ~70 KB."""
DEFAULT_MAX_WORKERS = 8
"""Handler threads. Reads release the GIL in RocksDB, so a few more threads than cores help."""
DEFAULT_GRACE_S = 5.0
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
        return self.tls_cert_path is not None or self.tls_key_path is not None


def validate_server_config(config: ServerConfig) -> None:
    """Check a configuration before anything is opened or bound.

    Raises:
        InputError: Every problem at once: a non-loopback host without TLS, half a TLS pair,
            missing certificate/key/token files, out-of-range port, limits or worker count.
    """
    problems: list[InputError] = []
    if not config.host.strip():
        problems.append(InputError("host is empty", source="host", hint="e.g. 127.0.0.1"))
    elif not is_loopback_host(config.host) and not config.tls:
        problems.append(
            InputError(
                f"serving on {config.host!r}, a non-loopback address, requires TLS; none was "
                "configured",
                source="host",
                hint="pass --tls-cert and --tls-key (PEM files), or bind 127.0.0.1",
            )
        )
    if (config.tls_cert_path is None) != (config.tls_key_path is None):
        problems.append(
            InputError(
                "TLS needs both a certificate and a private key, found only one",
                source="tls_cert_path" if config.tls_key_path is None else "tls_key_path",
                hint="pass both --tls-cert and --tls-key",
            )
        )
    for field, path in (
        ("tls_cert_path", config.tls_cert_path),
        ("tls_key_path", config.tls_key_path),
        ("token_path", config.token_path),
    ):
        if path is not None and not Path(path).is_file():
            problems.append(InputError(f"{field}: file does not exist", source=str(path)))
    if not 0 <= config.port <= 65535:
        problems.append(InputError(f"port must be in 0..65535, found {config.port}", source="port"))
    for field, value in (
        ("max_receive_bytes", config.max_receive_bytes),
        ("max_send_bytes", config.max_send_bytes),
        ("max_workers", config.max_workers),
    ):
        if value <= 0:
            problems.append(InputError(f"{field} must be positive, found {value}", source=field))
    if config.grace_s < 0:
        problems.append(
            InputError(f"grace_s must be >= 0, found {config.grace_s}", source="grace_s")
        )
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


class FeatureServer:
    """A built (bound, not yet started) feature server. Use :func:`build_server`."""

    def __init__(
        self,
        server: grpc.Server,
        health_servicer: health.HealthServicer,
        store: FeatureStore,
        *,
        owns_store: bool,
        host: str,
        port: int,
        tls: bool,
        grace_s: float,
    ) -> None:
        self._server = server
        self._health = health_servicer
        self._store = store
        self._owns_store = owns_store
        self._host = host
        self._port = port
        self._tls = tls
        self._grace_s = grace_s
        self._stopped = False

    @property
    def port(self) -> int:
        """The bound TCP port (the one picked when the config asked for port 0)."""
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` as a client dials it (IPv6 hosts in brackets)."""
        return _hostport(self._host, self._port)

    @property
    def tls(self) -> bool:
        """The port speaks TLS."""
        return self._tls

    @property
    def store(self) -> FeatureStore:
        """The store served."""
        return self._store

    def start(self) -> None:
        """Start serving and report SERVING on the health service."""
        self._server.start()
        self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "feature server listening on %s (%s), store %s",
            self.address,
            "TLS" if self._tls else "plaintext",
            self._store.path,
        )

    def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight ones finish, close the store.

        Idempotent.

        Args:
            grace_s: Seconds in-flight calls get (default: the config's); then they are cancelled.
        """
        if self._stopped:
            return
        self._stopped = True
        grace = self._grace_s if grace_s is None else grace_s
        self._health.enter_graceful_shutdown()
        start = time.perf_counter()
        self._server.stop(grace).wait()
        if self._owns_store:
            self._store.close()
        logger.info("feature server stopped in %.2f s", time.perf_counter() - start)

    def wait_for_termination(self, timeout_s: float | None = None) -> bool:
        """Block until the server stops; return True if it did within ``timeout_s``."""
        return bool(self._server.wait_for_termination(timeout_s))

    def __enter__(self) -> FeatureServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
        NotFoundError: No store at ``config.store_path``.
        StoreError: RocksDB could not open the store.
    """
    validate_server_config(config)
    credentials = _server_credentials(config) if config.tls else None
    token = load_token(config.token_path) if config.token_path is not None else None
    owns_store = store is None
    if store is None:
        store = FeatureStore.open(
            config.store_path, read_only=True, block_cache_bytes=config.block_cache_bytes
        )
    try:
        server, health_servicer, port = _make_grpc_server(
            config, store, credentials, token, clock_us
        )
    except BaseException:
        if owns_store:
            store.close()
        raise
    return FeatureServer(
        server,
        health_servicer,
        store,
        owns_store=owns_store,
        host=config.host,
        port=port,
        tls=credentials is not None,
        grace_s=config.grace_s,
    )


def _make_grpc_server(
    config: ServerConfig,
    store: FeatureStore,
    credentials: grpc.ServerCredentials | None,
    token: str | None,
    clock_us: Callable[[], int],
) -> tuple[grpc.Server, health.HealthServicer, int]:
    interceptors: list[grpc.ServerInterceptor] = []
    if token is not None:
        interceptors.append(TokenAuthInterceptor(token))  # outermost: refuse before any work
    interceptors.append(ErrorMappingInterceptor())
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=config.max_workers, thread_name_prefix="feature-server"
        ),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", config.max_receive_bytes),
            ("grpc.max_send_message_length", config.max_send_bytes),
            # Fail loudly when the port is taken instead of sharing it with another server.
            ("grpc.so_reuseport", 0),
        ],
    )
    servicer = FeatureServicer(
        store, ttl_at_server_clock=config.ttl_at_server_clock, clock_us=clock_us
    )
    pb_grpc.add_FeatureServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)  # until start()
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = _hostport(config.host, config.port)
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError
        raise InputError(
            f"cannot bind {address}: {exc}",
            source=address,
            hint="the port may be in use: pass another --port (0 picks a free one)",
        ) from exc
    if port == 0:
        raise InputError(
            f"cannot bind {address}",
            source=address,
            hint="the port may be in use: pass another --port (0 picks a free one)",
        )
    return server, health_servicer, port


def _server_credentials(config: ServerConfig) -> grpc.ServerCredentials:
    assert config.tls_cert_path is not None and config.tls_key_path is not None
    pair = []
    for path in (config.tls_key_path, config.tls_cert_path):
        try:
            pair.append(Path(path).read_bytes())
        except OSError as exc:
            raise InputError(f"cannot read TLS file: {exc}", source=path) from exc
    for path, data in zip((config.tls_key_path, config.tls_cert_path), pair, strict=True):
        if b"-----BEGIN" not in data:
            raise InputError(
                "not a PEM file (no -----BEGIN line)",
                source=path,
                hint="pass the PEM certificate chain and the PEM private key",
            )
    return grpc.ssl_server_credentials([(pair[0], pair[1])])


def _hostport(host: str, port: int) -> str:
    h = host.strip()
    if ":" in h and not h.startswith("["):
        h = f"[{h}]"  # an IPv6 literal
    return f"{h}:{port}"
