"""FeatureClient: the Python client of the feature server, returning domain types.

Reads come back as :class:`~feature_service.types.FeatureFrame` (columnar numpy; ``to_arrow()``
for Arrow) and :class:`~feature_service.types.RequestFeatures`, exactly what
:class:`~feature_service.store.FeatureStore` returns in process, so code can switch between a local
store and a remote one. Arrays are read-only views of the response bytes.

Every call has a deadline (``timeout_s``, covering retries). Only UNAVAILABLE (server down or
restarting, or a store failure) is retried, with exponential backoff; reads are idempotent.
Status codes come back as adrank errors: INVALID_ARGUMENT / RESOURCE_EXHAUSTED / OUT_OF_RANGE ->
InputError, NOT_FOUND -> NotFoundError, DEADLINE_EXCEEDED -> DeadlineExceededError,
UNAUTHENTICATED / PERMISSION_DENIED -> UnauthenticatedError, anything else -> StoreError, with the
server's ``source`` and ``hint`` when it sent them.

Example::

    with FeatureClient("127.0.0.1:50061", timeout_s=0.05) as client:
        request = client.get_request(user_group="users", user_id=42,
                                     candidate_group="ads", candidate_ids=ad_ids)
        request.candidates["ctr_7d"].values
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adrank.errors import (
    DeadlineExceededError,
    InputError,
    NotFoundError,
    StoreError,
    UnauthenticatedError,
)
from feature_service import convert
from feature_service.auth import bearer_metadata
from feature_service.convert import EntityIdsLike, ReadTime
from feature_service.interceptors import HINT_METADATA_KEY, SOURCE_METADATA_KEY
from feature_service.pb.v1 import feature_store_pb2_grpc as pb_grpc
from feature_service.types import FeatureFrame, RequestFeatures

__all__ = [
    "FeatureClient",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_RETRIES",
    "DEFAULT_BACKOFF_S",
    "DEFAULT_CLIENT_MAX_RECEIVE_BYTES",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 1.0
"""Deadline of one call, retries included (seconds)."""
DEFAULT_RETRIES = 2
"""Retries after an UNAVAILABLE answer (so at most 3 attempts)."""
DEFAULT_BACKOFF_S = 0.02
"""First retry delay; doubled each retry (seconds)."""
DEFAULT_CLIENT_MAX_RECEIVE_BYTES = 64 << 20
"""Largest response accepted (64 MiB, the server's default send limit)."""

_INPUT_CODES = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
)
_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class FeatureClient:
    """Client of ``adrank serve-features``.

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
        InputError: Bad arguments.
    """

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
        self._stub = pb_grpc.FeatureServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    @property
    def target(self) -> str:
        """``host:port`` of the server."""
        return self._target

    def close(self) -> None:
        """Close the channel. Idempotent."""
        self._channel.close()

    def __enter__(self) -> FeatureClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    def get_features(
        self,
        group: str,
        ids: EntityIdsLike,
        features: Sequence[str] | None = None,
        *,
        as_of_us: int | None = None,
        now_us: int | None = None,
        timeout_s: float | None = None,
    ) -> FeatureFrame:
        """One group's features for a list of entities (the server's GetFeatures).

        Args:
            group: Feature group.
            ids: Raw entity ids (ints for integer-id groups, str for string-id groups); the frame
                keeps their order.
            features: Features to return, in this order (default: all).
            as_of_us: Point-in-time read at this time (microseconds); default: newest versions.
            now_us: For newest-version reads, apply TTL relative to this time (default: the
                server's choice, normally its clock).
            timeout_s: Deadline of this call, retries included (default: the client's).

        Returns:
            One row per id: ``found`` False and null values where no (live) version exists.

        Raises:
            NotFoundError: Unknown group or feature (the message lists the known ones).
            InputError: Malformed ids or arguments, or a request or response over the size limits.
            DeadlineExceededError: No answer within the deadline.
            UnauthenticatedError: The server refused the token.
            StoreError: The server is unavailable (after retries) or failed.
        """
        request = convert.features_request(group, ids, features, ReadTime(as_of_us, now_us))
        response = self._call("GetFeatures", request, timeout_s)
        return convert.frame_from_proto(response.frame, f"{self._target} GetFeatures")

    def get_request(
        self,
        *,
        user_group: str,
        user_id: int | str,
        candidate_group: str,
        candidate_ids: EntityIdsLike,
        user_features: Sequence[str] | None = None,
        candidate_features: Sequence[str] | None = None,
        as_of_us: int | None = None,
        now_us: int | None = None,
        timeout_s: float | None = None,
    ) -> RequestFeatures:
        """One ranking request's user and candidate features in one call (GetRequestFeatures).

        Args:
            user_group: Group of the request's user.
            user_id: The user's raw id.
            candidate_group: Group of the candidates (e.g. ads).
            candidate_ids: Raw candidate ids, in ranking order (kept in the result).
            user_features: User features to return (default: all).
            candidate_features: Candidate features to return (default: all).
            as_of_us: Point-in-time read at this time (microseconds).
            now_us: For newest-version reads, apply TTL relative to this time.
            timeout_s: Deadline of this call, retries included.

        Returns:
            The user's frame (one row) and the candidates' frame.

        Raises:
            As :meth:`get_features`.
        """
        request = convert.request_features_request(
            user_group=user_group,
            user_id=user_id,
            candidate_group=candidate_group,
            candidate_ids=candidate_ids,
            user_features=user_features,
            candidate_features=candidate_features,
            time=ReadTime(as_of_us, now_us),
        )
        response = self._call("GetRequestFeatures", request, timeout_s)
        return convert.request_features_from_proto(response, f"{self._target} GetRequestFeatures")

    def health(self, service: str = "", *, timeout_s: float | None = None) -> str:
        """The server's health status (``SERVING``, ``NOT_SERVING``, ...) for ``service``.

        Args:
            service: Service name; ``""`` is the server as a whole.
            timeout_s: Deadline (default: the client's).

        Raises:
            As :meth:`get_features` (NotFoundError for an unknown service name).
        """
        request = health_pb2.HealthCheckRequest(service=service)
        response = self._call("Check", request, timeout_s, self._health.Check)
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
                f"feature server {self._target} did not come up within {wait:.1f} s",
                source=self._target,
                hint="check that `adrank serve-features` is running on this address",
            ) from exc

    # ------------------------------------------------------------------ plumbing

    def _call(
        self,
        method: str,
        request: Any,
        timeout_s: float | None,
        callable_: Any = None,
    ) -> Any:
        """Call ``method`` within one deadline, retrying UNAVAILABLE; map failures to errors."""
        rpc = callable_ if callable_ is not None else getattr(self._stub, method)
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
                code = call.code()
                if code is grpc.StatusCode.UNAVAILABLE and attempt < self._retries:
                    delay = min(self._backoff_s * (2**attempt), max(0.0, remaining))
                    logger.debug("%s %s unavailable, retry in %.3f s", self._target, method, delay)
                    time.sleep(delay)
                    attempt += 1
                    continue
                details = call.details() or code.name
                source, hint = _error_metadata(call)
                where = source or f"{self._target} {method}"
                if code is grpc.StatusCode.NOT_FOUND:
                    raise NotFoundError(details, source=where, hint=hint) from exc
                if code in _INPUT_CODES:
                    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and hint is None:
                        hint = (
                            "a message is over the size limits: request fewer ids or features "
                            "per call, or raise the server's --max-receive-bytes/--max-send-bytes "
                            "and the client's max_receive_bytes"
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
                        hint=hint or "pass the server's token (FeatureClient(token=...))",
                    ) from exc
                if code is grpc.StatusCode.UNAVAILABLE:
                    details = f"feature server unavailable after {attempt + 1} attempts: {details}"
                    hint = hint or "check that `adrank serve-features` is running on this address"
                raise StoreError(f"{code.name}: {details}", source=where, hint=hint) from exc


def _error_metadata(call: grpc.Call) -> tuple[str | None, str | None]:
    """The ``source`` and ``hint`` the server attached to an error, if any."""
    found: dict[str, str] = {}
    for key, value in call.trailing_metadata() or ():
        if key in (SOURCE_METADATA_KEY, HINT_METADATA_KEY):
            raw = value if isinstance(value, bytes) else str(value).encode()
            found[key] = raw.decode("utf-8", errors="replace")
    return found.get(SOURCE_METADATA_KEY), found.get(HINT_METADATA_KEY)
