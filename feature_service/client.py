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
from collections.abc import Sequence
from typing import Any

from adrank import rpc
from feature_service import convert
from feature_service.convert import EntityIdsLike, ReadTime
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

DEFAULT_TIMEOUT_S = rpc.DEFAULT_TIMEOUT_S
"""Deadline of one call, retries included (seconds)."""
DEFAULT_RETRIES = rpc.DEFAULT_RETRIES
"""Retries after an UNAVAILABLE answer (so at most 3 attempts)."""
DEFAULT_BACKOFF_S = rpc.DEFAULT_BACKOFF_S
"""First retry delay; doubled each retry (seconds)."""
DEFAULT_CLIENT_MAX_RECEIVE_BYTES = rpc.DEFAULT_CLIENT_MAX_RECEIVE_BYTES
"""Largest response accepted (64 MiB, the server's default send limit)."""


class FeatureClient(rpc.RpcClient):
    """Client of ``adrank serve-features``.

    Channel, deadlines, retries and error mapping come from :class:`adrank.rpc.RpcClient`
    (``health()``, ``wait_ready()``, ``close()``, context manager).

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

    server_label = "feature server"
    serve_command = "adrank serve-features"
    stub_class = pb_grpc.FeatureServiceStub

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

    def _call(self, method: str, request: Any, timeout_s: float | None) -> Any:
        return self.call(method, getattr(self._stub, method), request, timeout_s)
