"""Who may talk to the feature server: the loopback/TLS rule and the shared-token check.

* A server binds 127.0.0.1 by default. Any other address (a routable interface, ``0.0.0.0``, a
  host name) is refused unless TLS is configured, so features never cross a network in clear text.
* An optional shared token: clients send ``authorization: Bearer <token>`` metadata; a call with a
  missing or wrong token gets UNAUTHENTICATED before any handler runs. Tokens are compared in
  constant time. The health service is exempt, so load balancers and probes need no token.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from adrank.errors import InputError, NotFoundError

__all__ = [
    "AUTHORIZATION_METADATA_KEY",
    "UNAUTHENTICATED_EXEMPT_PREFIXES",
    "TokenAuthInterceptor",
    "is_loopback_host",
    "load_token",
    "bearer_metadata",
]

logger = logging.getLogger(__name__)

AUTHORIZATION_METADATA_KEY = "authorization"
"""Metadata key carrying ``Bearer <token>`` (gRPC metadata keys are lower case)."""
UNAUTHENTICATED_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods served without a token: health checks reveal no features."""

_MAX_TOKEN_BYTES = 4096


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
