"""The one server interceptor that turns errors into gRPC status codes and enforces deadlines.

Servicer methods contain no try/except: whatever they raise ends here.

* An :class:`~adrank.errors.AdrankError` becomes the status named by its ``grpc_code_name``
  (InputError -> INVALID_ARGUMENT, NotFoundError -> NOT_FOUND, StoreError -> UNAVAILABLE, ...) with
  its message as the details; its ``source`` and ``hint`` travel as the UTF-8 trailing metadata
  ``adrank-source-bin`` and ``adrank-hint-bin`` so the client can rebuild the same error.
* Any other exception is a bug: INTERNAL with a generic message, and the traceback is logged.
* A call whose deadline has passed (or that the client cancelled) before the handler runs is not
  served: DEADLINE_EXCEEDED without touching the store. It is checked again before the response is
  sent, so a late answer is not serialised for a client that has given up.

Only unary-unary methods are wrapped; streaming ones (reflection, health Watch) pass through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from adrank.errors import AdrankError, DeadlineExceededError

__all__ = ["ErrorMappingInterceptor", "SOURCE_METADATA_KEY", "HINT_METADATA_KEY", "status_code_of"]

logger = logging.getLogger(__name__)

SOURCE_METADATA_KEY = "adrank-source-bin"
"""Trailing metadata key of an error's ``source`` (UTF-8 bytes; ``-bin`` keys may hold any)."""
HINT_METADATA_KEY = "adrank-hint-bin"
"""Trailing metadata key of an error's ``hint`` (UTF-8 bytes)."""

_INTERNAL_MESSAGE = "internal error in the feature server (logged on the server); please report it"

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def status_code_of(error: AdrankError) -> grpc.StatusCode:
    """The status code ``error`` maps to (INTERNAL when its ``grpc_code_name`` is unknown)."""
    code = getattr(grpc.StatusCode, error.grpc_code_name, None)
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Maps exceptions of unary-unary handlers to status codes and enforces deadlines."""

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
            _wrap(handler.unary_unary, handler_call_details.method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _wrap(behavior: Behavior, method: str) -> Behavior:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            _require_time_left(context, method, "before it was served")
            response = behavior(request, context)
            _require_time_left(context, method, "while it was served")
            return response
        except AdrankError as exc:
            _abort(context, exc)
        except Exception:
            code = context.code()
            if code is not None and code is not grpc.StatusCode.OK:
                raise  # the handler already set a status itself (context.abort): keep it
            logger.exception("unexpected error in %s", method)
            context.abort(grpc.StatusCode.INTERNAL, _INTERNAL_MESSAGE)

    return handle


def _require_time_left(context: grpc.ServicerContext, method: str, when: str) -> None:
    remaining = context.time_remaining()
    if (remaining is not None and remaining <= 0) or not context.is_active():
        raise DeadlineExceededError(
            f"the call's deadline passed (or the client cancelled it) {when}",
            source=method,
            hint="give the call a longer deadline (timeout_s), or ask for fewer ids per call",
        )


def _abort(context: grpc.ServicerContext, exc: AdrankError) -> None:
    metadata = []
    if exc.source:
        metadata.append((SOURCE_METADATA_KEY, exc.source.encode("utf-8")))
    if exc.hint:
        metadata.append((HINT_METADATA_KEY, exc.hint.encode("utf-8")))
    if metadata:
        context.set_trailing_metadata(tuple(metadata))
    context.abort(status_code_of(exc), exc.message)
