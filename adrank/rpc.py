"""gRPC plumbing shared by adrank's servers and clients (feature server, embedding server).

The one module of :mod:`adrank` that imports grpc: ``import adrank`` never loads it (the planner
side stays grpc-free); the server and client packages import this module explicitly.

Server side:

* :class:`ErrorMappingInterceptor`: an :class:`~adrank.errors.AdrankError` becomes the status
  named by its ``grpc_code_name`` (InputError -> INVALID_ARGUMENT, NotFoundError -> NOT_FOUND,
  StoreError -> UNAVAILABLE, ...). The details are its message followed by ``" (at SOURCE)"``
  when it names a place, so clients that read only the details (grpcurl, other languages) still
  learn which field is wrong; ``source`` and ``hint`` also travel as the UTF-8 trailing metadata
  ``adrank-source-bin`` and ``adrank-hint-bin``, from which :class:`RpcClient` rebuilds the
  same error. Any other
  exception is a bug: INTERNAL with a generic message, and the traceback is logged. A call whose
  deadline has passed (or that the client cancelled) before the handler runs is not served
  (DEADLINE_EXCEEDED); it is checked again before the response is sent. Only unary-unary methods
  are wrapped; streaming ones (reflection, health Watch) pass through.
* :class:`TokenAuthInterceptor` and :func:`load_token`: an optional shared token, sent as
  ``authorization: Bearer <token>``, compared in constant time; health checks are exempt.
* :class:`ListenConfig` and :func:`listen_problems`: a server binds 127.0.0.1 by default; any
  other address (a routable interface, ``0.0.0.0``, a host name) is refused unless TLS is
  configured, so nothing crosses a network in clear text.
* :func:`bind_server` and :class:`RpcServer`: a bound server with the standard health service
  (``grpc.health.v1.Health``) and server reflection, message-size limits, a handler pool, and a
  stop that reports NOT_SERVING, lets in-flight calls finish within a grace period, waits for the
  handler threads and only then releases what the handlers use.

Client side: :class:`RpcClient`, the channel, per-call deadlines (covering retries), retries of
UNAVAILABLE with exponential backoff, and status codes mapped back to adrank errors with the
server's ``source`` and ``hint``.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import logging
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from adrank.errors import (
    AdrankError,
    DeadlineExceededError,
    InputError,
    NotFoundError,
    StoreError,
    UnauthenticatedError,
)

__all__ = [
    "AUTHORIZATION_METADATA_KEY",
    "DEFAULT_BACKOFF_S",
    "DEFAULT_CLIENT_MAX_RECEIVE_BYTES",
    "DEFAULT_GRACE_S",
    "DEFAULT_HOST",
    "DEFAULT_MAX_RECEIVE_BYTES",
    "DEFAULT_MAX_SEND_BYTES",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "HINT_METADATA_KEY",
    "SOURCE_METADATA_KEY",
    "UNAUTHENTICATED_EXEMPT_PREFIXES",
    "BoundServer",
    "ErrorMappingInterceptor",
    "ListenConfig",
    "RpcClient",
    "RpcServer",
    "TokenAuthInterceptor",
    "bearer_metadata",
    "bind_server",
    "hostport",
    "is_loopback_host",
    "listen_problems",
    "load_token",
    "require_time_left",
    "server_credentials",
    "status_code_of",
]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
"""Address servers bind unless told otherwise: loopback only."""
DEFAULT_MAX_RECEIVE_BYTES = 4 << 20
"""Largest request accepted (4 MiB, gRPC's default); larger ones get RESOURCE_EXHAUSTED."""
DEFAULT_MAX_SEND_BYTES = 64 << 20
"""Largest response sent (64 MiB); a larger one fails with RESOURCE_EXHAUSTED."""
DEFAULT_GRACE_S = 5.0
"""Seconds in-flight calls get to finish on stop."""
DEFAULT_TIMEOUT_S = 1.0
"""Client deadline of one call, retries included (seconds)."""
DEFAULT_RETRIES = 2
"""Client retries after an UNAVAILABLE answer (so at most 3 attempts)."""
DEFAULT_BACKOFF_S = 0.02
"""First client retry delay; doubled each retry (seconds)."""
DEFAULT_CLIENT_MAX_RECEIVE_BYTES = 64 << 20
"""Largest response a client accepts (64 MiB, the servers' default send limit)."""

SOURCE_METADATA_KEY = "adrank-source-bin"
"""Trailing metadata key of an error's ``source`` (UTF-8 bytes; ``-bin`` keys may hold any)."""
HINT_METADATA_KEY = "adrank-hint-bin"
"""Trailing metadata key of an error's ``hint`` (UTF-8 bytes)."""
AUTHORIZATION_METADATA_KEY = "authorization"
"""Metadata key carrying ``Bearer <token>`` (gRPC metadata keys are lower case)."""
UNAUTHENTICATED_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods served without a token: health checks reveal nothing."""

_MAX_TOKEN_BYTES = 4096
_DRAIN_SLACK_S = 30.0  # beyond the grace period, how long stop() waits for handler threads

_Behavior = Callable[[Any, grpc.ServicerContext], Any]


# -------------------------------------------------------------------------------------------------
# Errors and deadlines
# -------------------------------------------------------------------------------------------------


def status_code_of(error: AdrankError) -> grpc.StatusCode:
    """The status code ``error`` maps to (INTERNAL when its ``grpc_code_name`` is unknown)."""
    code = getattr(grpc.StatusCode, error.grpc_code_name, None)
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.INTERNAL


def require_time_left(context: grpc.ServicerContext, method: str, when: str) -> None:
    """Refuse to go on with a call whose deadline passed or that the client cancelled.

    Args:
        context: The call's context.
        method: The method, named in the error's ``source``.
        when: How far the call got, e.g. ``"before it was served"``.

    Raises:
        DeadlineExceededError: No time is left (the interceptor answers DEADLINE_EXCEEDED).
    """
    remaining = context.time_remaining()
    if (remaining is not None and remaining <= 0) or not context.is_active():
        raise DeadlineExceededError(
            f"the call's deadline passed (or the client cancelled it) {when}",
            source=method,
            hint="give the call a longer deadline (timeout_s), or ask for fewer ids per call",
        )


class ErrorMappingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Maps exceptions of unary-unary handlers to status codes and enforces deadlines.

    Args:
        server_label: Names the server in the generic INTERNAL message, e.g. ``"feature server"``.
    """

    def __init__(self, server_label: str = "server") -> None:
        self._internal_message = (
            f"internal error in the {server_label} (logged on the server); please report it"
        )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Wrap the method's handler (gRPC calls this once per call)."""
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(handler.unary_unary, handler_call_details.method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, behavior: _Behavior, method: str) -> _Behavior:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                require_time_left(context, method, "before it was served")
                response = behavior(request, context)
                require_time_left(context, method, "while it was served")
                return response
            except AdrankError as exc:
                _abort(context, exc)
            except Exception:
                code = context.code()
                if code is not None and code is not grpc.StatusCode.OK:
                    raise  # the handler already set a status itself (context.abort): keep it
                logger.exception("unexpected error in %s", method)
                context.abort(grpc.StatusCode.INTERNAL, self._internal_message)

        return handle


def _abort(context: grpc.ServicerContext, exc: AdrankError) -> None:
    metadata = []
    if exc.source:
        metadata.append((SOURCE_METADATA_KEY, exc.source.encode("utf-8")))
    if exc.hint:
        metadata.append((HINT_METADATA_KEY, exc.hint.encode("utf-8")))
    if metadata:
        context.set_trailing_metadata(tuple(metadata))
    context.abort(status_code_of(exc), exc.message + _at(exc.source))


def _at(source: str | None) -> str:
    """The suffix that names an error's place in the status details."""
    return f" (at {source})" if source else ""


# -------------------------------------------------------------------------------------------------
# Who may talk to a server
# -------------------------------------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``)."""
    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def load_token(path: str | Path) -> str:
    """Read a shared token from a file (surrounding whitespace stripped).

    Args:
        path: File holding the token: printable ASCII without spaces (it travels as metadata).

    Returns:
        The token.

    Raises:
        NotFoundError: The file does not exist.
        InputError: Unreadable, empty, too long, or not printable ASCII without spaces.
    """
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(
            "token file does not exist", source=str(p), hint="pass the file holding the token"
        )
    try:
        raw = p.read_bytes()
        mode = p.stat().st_mode
    except OSError as exc:
        raise InputError(f"cannot read the token file: {exc}", source=str(p)) from exc
    token = raw.strip()
    problem = None
    if not token:
        problem = "the token file is empty"
    elif len(token) > _MAX_TOKEN_BYTES:
        problem = f"the token is {len(token)} bytes, more than {_MAX_TOKEN_BYTES}"
    elif not all(0x21 <= b <= 0x7E for b in token):
        problem = "the token holds bytes other than printable ASCII without spaces"
    if problem:
        raise InputError(
            problem,
            source=str(p),
            hint="write a random token, e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))' > FILE`",
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "token file %s is readable by other users (mode %o); chmod 600 it", p, mode & 0o777
        )
    return token.decode("ascii")


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that presents ``token``."""
    return ((AUTHORIZATION_METADATA_KEY, f"Bearer {token}"),)


class TokenAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without the shared token with UNAUTHENTICATED.

    Args:
        token: The expected token.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Pass authorised (and exempt) calls on; answer the rest with UNAUTHENTICATED."""
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(UNAUTHENTICATED_EXEMPT_PREFIXES):
            return handler
        presented = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == AUTHORIZATION_METADATA_KEY:
                presented = value.encode() if isinstance(value, str) else bytes(value)
                break
        # compare_digest takes time independent of where the strings differ.
        if presented is not None and hmac.compare_digest(presented, self._expected):
            return handler
        reason = "no token was sent" if presented is None else "the token is wrong"
        return _denying(handler, f"{method} needs the server's token: {reason}")


def _denying(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as ``handler`` that answers UNAUTHENTICATED."""

    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            message + " (send metadata 'authorization: Bearer <token>')",
        )

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(
        deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


# -------------------------------------------------------------------------------------------------
# Listening
# -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ListenConfig:
    """Where and how a server listens.

    Args:
        host: Address to bind. Anything but loopback requires ``tls_cert_path``/``tls_key_path``.
        port: TCP port; 0 picks a free one (see :attr:`RpcServer.port`).
        tls_cert_path: PEM certificate chain of the server.
        tls_key_path: PEM private key of the server.
        token_path: File holding a shared token that clients must send (optional).
        max_receive_bytes: Largest request accepted, in bytes.
        max_send_bytes: Largest response sent, in bytes.
        max_workers: Handler threads.
        grace_s: Seconds in-flight calls get to finish on stop.
    """

    host: str = DEFAULT_HOST
    port: int = 0
    tls_cert_path: str | None = None
    tls_key_path: str | None = None
    token_path: str | None = None
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    max_send_bytes: int = DEFAULT_MAX_SEND_BYTES
    max_workers: int = 4
    grace_s: float = DEFAULT_GRACE_S

    @property
    def tls(self) -> bool:
        """TLS is configured."""
        return self.tls_cert_path is not None or self.tls_key_path is not None


def listen_problems(config: ListenConfig) -> list[InputError]:
    """Every problem of a listen configuration, found before anything is opened or bound.

    Returns:
        One error per problem (empty when fine): a non-loopback host without TLS, half a TLS pair,
        missing certificate/key/token files, out-of-range port, limits, worker count or grace.
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
    return problems


def server_credentials(cert_path: str, key_path: str) -> grpc.ServerCredentials:
    """TLS credentials from a PEM certificate chain and its PEM private key.

    Raises:
        InputError: A file is unreadable or not PEM (the file named).
    """
    pair = []
    for path in (key_path, cert_path):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read TLS file: {exc}", source=path) from exc
        if b"-----BEGIN" not in data:
            raise InputError(
                "not a PEM file (no -----BEGIN line)",
                source=path,
                hint="pass the PEM certificate chain and the PEM private key",
            )
        pair.append(data)
    return grpc.ssl_server_credentials([(pair[0], pair[1])])


def hostport(host: str, port: int) -> str:
    """``host:port`` as gRPC binds and dials it (IPv6 literals in brackets)."""
    h = host.strip()
    if ":" in h and not h.startswith("["):
        h = f"[{h}]"  # an IPv6 literal
    return f"{h}:{port}"


@dataclasses.dataclass(frozen=True, slots=True)
class BoundServer:
    """A gRPC server with its services registered and its port bound, not yet started.

    Attributes:
        server: The gRPC server.
        health: Its health servicer (every name NOT_SERVING until started).
        executor: The handler pool.
        service_names: Full names of the application services (reported on health).
        host: Bound address.
        port: Bound port.
        tls: The port speaks TLS.
        grace_s: Seconds in-flight calls get on stop.
    """

    server: grpc.Server
    health: health.HealthServicer
    executor: futures.ThreadPoolExecutor
    service_names: tuple[str, ...]
    host: str
    port: int
    tls: bool
    grace_s: float


def bind_server(
    config: ListenConfig,
    *,
    add_services: Callable[[grpc.Server], None],
    service_names: Sequence[str],
    server_label: str,
    thread_name_prefix: str,
) -> BoundServer:
    """Build a gRPC server: interceptors, limits, services, health, reflection; bind its port.

    Args:
        config: Where and how to listen.
        add_services: Registers the application's servicers on the server.
        service_names: Their full names (health and reflection list them).
        server_label: Names the server in INTERNAL messages, e.g. ``"embedding server"``.
        thread_name_prefix: Name prefix of the handler threads.

    Returns:
        The bound server.

    Raises:
        InputError: An invalid configuration (every problem at once), unreadable TLS or token
            files, or a port that cannot be bound.
        NotFoundError: The token file does not exist.
    """
    problems = listen_problems(config)
    if problems:
        raise InputError.from_problems(problems)
    credentials = None
    if config.tls_cert_path is not None and config.tls_key_path is not None:
        credentials = server_credentials(config.tls_cert_path, config.tls_key_path)
    token = load_token(config.token_path) if config.token_path is not None else None
    interceptors: list[grpc.ServerInterceptor] = []
    if token is not None:
        interceptors.append(TokenAuthInterceptor(token))  # outermost: refuse before any work
    interceptors.append(ErrorMappingInterceptor(server_label))
    executor = futures.ThreadPoolExecutor(
        max_workers=config.max_workers, thread_name_prefix=thread_name_prefix
    )
    server = grpc.server(
        executor,
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", config.max_receive_bytes),
            ("grpc.max_send_message_length", config.max_send_bytes),
            # Fail loudly when the port is taken instead of sharing it with another server.
            ("grpc.so_reuseport", 0),
        ],
    )
    add_services(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(service_names)
    for name in ("", *names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)  # until start()
    reflection.enable_server_reflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = hostport(config.host, config.port)
    hint = "the port may be in use: pass another --port (0 picks a free one)"
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError
        executor.shutdown(wait=False)
        raise InputError(f"cannot bind {address}: {exc}", source=address, hint=hint) from exc
    if port == 0:
        executor.shutdown(wait=False)
        raise InputError(f"cannot bind {address}", source=address, hint=hint)
    return BoundServer(
        server=server,
        health=health_servicer,
        executor=executor,
        service_names=names,
        host=config.host,
        port=port,
        tls=credentials is not None,
        grace_s=config.grace_s,
    )


class RpcServer:
    """A bound server's life cycle: start, health, graceful stop, then release what it serves.

    Args:
        bound: From :func:`bind_server`.
        label: Names the server in log lines, e.g. ``"feature server"``.
        detail: What it serves, for the start log line.
        on_stop: Called once after the last handler returned (closes the store or runtime).
    """

    def __init__(
        self,
        bound: BoundServer,
        *,
        label: str,
        detail: str = "",
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._bound = bound
        self._label = label
        self._detail = detail
        self._on_stop = on_stop
        self._stopped = False

    @property
    def port(self) -> int:
        """The bound TCP port (the one picked when the config asked for port 0)."""
        return self._bound.port

    @property
    def address(self) -> str:
        """``host:port`` as a client dials it (IPv6 hosts in brackets)."""
        return hostport(self._bound.host, self._bound.port)

    @property
    def tls(self) -> bool:
        """The port speaks TLS."""
        return self._bound.tls

    def start(self) -> None:
        """Start serving and report SERVING on the health service."""
        self._bound.server.start()
        for name in ("", *self._bound.service_names):
            self._bound.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "%s listening on %s (%s)%s",
            self._label,
            self.address,
            "TLS" if self.tls else "plaintext",
            f", {self._detail}" if self._detail else "",
        )

    def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight ones finish, then release.

        The handler threads are waited for (grace plus 30 s) before ``on_stop`` runs, so nothing
        a handler still uses is closed under it. Idempotent.

        Args:
            grace_s: Seconds in-flight calls get (default: the config's); then they are cancelled.
        """
        if self._stopped:
            return
        self._stopped = True
        grace = self._bound.grace_s if grace_s is None else grace_s
        self._bound.health.enter_graceful_shutdown()
        start = time.perf_counter()
        self._bound.server.stop(grace).wait()
        drained = threading.Event()

        def drain() -> None:
            self._bound.executor.shutdown(wait=True)
            drained.set()

        threading.Thread(target=drain, name=f"{self._label} drain", daemon=True).start()
        if not drained.wait(grace + _DRAIN_SLACK_S):
            logger.warning(
                "%s: handlers still running %.0f s after stop; leaving what they use open",
                self._label,
                grace + _DRAIN_SLACK_S,
            )
        elif self._on_stop is not None:
            self._on_stop()
        logger.info("%s stopped in %.2f s", self._label, time.perf_counter() - start)

    def wait_for_termination(self, timeout_s: float | None = None) -> bool:
        """Block until the server stops; return True if it did within ``timeout_s``."""
        return bool(self._bound.server.wait_for_termination(timeout_s))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -------------------------------------------------------------------------------------------------
# Clients
# -------------------------------------------------------------------------------------------------

_INPUT_CODES = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
)
_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class RpcClient:
    """Channel, deadlines, retries and error mapping shared by adrank's gRPC clients.

    Every call has a deadline (``timeout_s``, covering retries). Only UNAVAILABLE (server down or
    restarting, or a store/rank failure) is retried, with exponential backoff: the calls of
    adrank's servers are reads, so idempotent. Status codes come back as adrank errors:
    INVALID_ARGUMENT / RESOURCE_EXHAUSTED / OUT_OF_RANGE -> InputError, NOT_FOUND ->
    NotFoundError, DEADLINE_EXCEEDED -> DeadlineExceededError, UNAUTHENTICATED /
    PERMISSION_DENIED -> UnauthenticatedError, anything else -> StoreError, with the server's
    ``source`` and ``hint`` when it sent them.

    A client of one service subclasses it, setting :attr:`server_label`, :attr:`serve_command`
    and :attr:`stub_class` (the stub is then ``self._stub``), and adds the service's methods,
    each one :meth:`call`.

    Args:
        target: ``host:port`` of the server.
        timeout_s: Default deadline per call, retries included (seconds).
        retries: Retries after UNAVAILABLE.
        backoff_s: First retry delay, doubled per retry (seconds).
        token: Shared token, sent as ``authorization: Bearer <token>``.
        root_certificates: PEM root certificates to verify the server with; setting it (or
            ``tls=True``, which uses the system roots) makes the channel TLS.
        tls: Use TLS with the system's root certificates.
        server_name_override: Host name to verify in the server's certificate (when ``target`` is
            an IP address or differs from the certificate's name).
        max_receive_bytes: Largest response accepted.

    Raises:
        InputError: Bad arguments (every problem at once).
    """

    server_label: ClassVar[str] = "server"
    """Names the server in messages, e.g. ``"feature server"``."""
    serve_command: ClassVar[str] = "adrank"
    """The command that runs the server, for hints, e.g. ``"adrank serve-features"``."""
    stub_class: ClassVar[type[Any] | None] = None
    """The service's generated stub class."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
        token: str | None = None,
        root_certificates: bytes | None = None,
        tls: bool = False,
        server_name_override: str | None = None,
        max_receive_bytes: int = DEFAULT_CLIENT_MAX_RECEIVE_BYTES,
    ) -> None:
        problems = []
        if not target:
            problems.append(InputError("target is empty; pass host:port", source="target"))
        if timeout_s <= 0:
            problems.append(
                InputError(f"timeout_s must be > 0, found {timeout_s}", source="timeout_s")
            )
        if retries < 0 or backoff_s < 0:
            problems.append(
                InputError(
                    f"retries and backoff_s must be >= 0, found {retries} and {backoff_s}",
                    source="retries",
                )
            )
        if max_receive_bytes <= 0:
            problems.append(
                InputError(
                    f"max_receive_bytes must be positive, found {max_receive_bytes}",
                    source="max_receive_bytes",
                )
            )
        if problems:
            raise InputError.from_problems(problems)
        self._target = target
        self._timeout_s = float(timeout_s)
        self._retries = int(retries)
        self._backoff_s = float(backoff_s)
        self._metadata = bearer_metadata(token) if token is not None else None
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", int(max_receive_bytes)),
            ("grpc.max_send_message_length", int(max_receive_bytes)),
        ]
        if server_name_override is not None:
            options.append(("grpc.ssl_target_name_override", server_name_override))
        if root_certificates is not None or tls:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._stub: Any = self.stub_class(self._channel) if self.stub_class is not None else None

    @property
    def target(self) -> str:
        """``host:port`` of the server."""
        return self._target

    def close(self) -> None:
        """Close the channel. Idempotent."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self, service: str = "", *, timeout_s: float | None = None) -> str:
        """The server's health status (``SERVING``, ``NOT_SERVING``, ...) for ``service``.

        Args:
            service: Service name; ``""`` is the server as a whole.
            timeout_s: Deadline (default: the client's).

        Raises:
            NotFoundError: Unknown service name.
            DeadlineExceededError: No answer within the deadline.
            StoreError: The server is unavailable (after retries).
        """
        request = health_pb2.HealthCheckRequest(service=service)
        response = self.call("Check", self._health.Check, request, timeout_s)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the channel is connected (server up), e.g. right after starting it.

        Raises:
            StoreError: Not connected within ``timeout_s`` (default: the client's timeout).
        """
        wait = self._timeout_s if timeout_s is None else timeout_s
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=wait)
        except grpc.FutureTimeoutError as exc:
            ready.cancel()  # stop watching the channel's connectivity
            raise StoreError(
                f"{self.server_label} {self._target} did not come up within {wait:.1f} s",
                source=self._target,
                hint=f"check that `{self.serve_command}` is running on this address",
            ) from exc

    def call(
        self, method: str, rpc: Callable[..., Any], request: Any, timeout_s: float | None
    ) -> Any:
        """Call ``rpc`` within one deadline, retrying UNAVAILABLE; map failures to errors.

        Args:
            method: The method's name, for messages.
            rpc: The stub's callable.
            request: The request message.
            timeout_s: Deadline of this call, retries included (default: the client's).

        Returns:
            The response message.

        Raises:
            InputError, NotFoundError, DeadlineExceededError, UnauthenticatedError, StoreError:
                See the class docstring.
        """
        budget_s = self._timeout_s if timeout_s is None else float(timeout_s)
        deadline = time.monotonic() + budget_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError(
                    f"no answer from {self._target} {method} within {budget_s * 1e3:.0f} ms "
                    f"({attempt} attempts, the last UNAVAILABLE)",
                    source=f"{self._target} {method}",
                    hint="raise timeout_s, or check that the server is up",
                )
            try:
                return rpc(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as exc:
                call = cast(grpc.Call, exc)
                if call.code() is grpc.StatusCode.UNAVAILABLE and attempt < self._retries:
                    delay = min(self._backoff_s * (2**attempt), max(0.0, remaining))
                    logger.debug("%s %s unavailable, retry in %.3f s", self._target, method, delay)
                    time.sleep(delay)
                    attempt += 1
                    continue
                code = call.code()
                source, hint = _error_metadata(call)
                details = (call.details() or code.name).removesuffix(_at(source))
                where = source or f"{self._target} {method}"
                if code is grpc.StatusCode.NOT_FOUND:
                    raise NotFoundError(details, source=where, hint=hint) from exc
                if code in _INPUT_CODES:
                    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and hint is None:
                        hint = (
                            "a message is over the size limits: send fewer ids per call, or "
                            "raise the server's --max-receive-bytes/--max-send-bytes and the "
                            "client's max_receive_bytes"
                        )
                    raise InputError(details, source=where, hint=hint) from exc
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise DeadlineExceededError(
                        f"{method} did not finish within {budget_s * 1e3:.0f} ms: {details}",
                        source=where,
                        hint=hint or "raise timeout_s, or ask for fewer ids per call",
                    ) from exc
                if code in _AUTH_CODES:
                    raise UnauthenticatedError(
                        details,
                        source=where,
                        hint=hint or f"pass the server's token ({type(self).__name__}(token=...))",
                    ) from exc
                if code is grpc.StatusCode.UNAVAILABLE:
                    tries = attempt + 1
                    details = f"{self.server_label} unavailable after {tries} attempts: {details}"
                    hint = hint or f"check that `{self.serve_command}` is running on this address"
                raise StoreError(f"{code.name}: {details}", source=where, hint=hint) from exc


def _error_metadata(call: grpc.Call) -> tuple[str | None, str | None]:
    """The ``source`` and ``hint`` the server attached to an error, if any."""
    found: dict[str, str] = {}
    for key, value in call.trailing_metadata() or ():
        if key in (SOURCE_METADATA_KEY, HINT_METADATA_KEY):
            raw = value if isinstance(value, bytes) else str(value).encode()
            found[key] = raw.decode("utf-8", errors="replace")
    return found.get(SOURCE_METADATA_KEY), found.get(HINT_METADATA_KEY)
