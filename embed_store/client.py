"""EmbeddingClient: the Python client of ``adrank serve-embeddings``, returning the runtime's types.

:meth:`EmbeddingClient.lookup` returns a :class:`~embed_store.batch.LookupResult` (KeyedTensors of
pooled embeddings, candidate-level and request-level), exactly what
:meth:`LocalLookup.lookup <embed_store.local_lookup.LocalLookup.lookup>` returns in process, so
code can switch between a local runtime and a remote one. Tensors are fresh and writable.

Deadlines, retries (UNAVAILABLE only) and the mapping of status codes to adrank errors come from
:class:`adrank.rpc.RpcClient`: INVALID_ARGUMENT -> InputError whose ``source`` names the field
(``candidates.values[ad_id]``), DEADLINE_EXCEEDED -> DeadlineExceededError, UNAUTHENTICATED ->
UnauthenticatedError, UNAVAILABLE (server down, or a rank of its runtime failed) -> StoreError.

Example::

    with EmbeddingClient("127.0.0.1:50062", timeout_s=0.05) as client:
        model = client.describe()
        result = client.lookup(
            {"ad_id": [[17], [42, 43]]},           # one bag per candidate
            requests={"user_id": [[7, 8, 9]]},     # one bag per request, looked up once
            id_space=IdSpace.ID_KEY,               # raw id keys: the server hashes them
        )
        result.candidates["ad_id"]                 # [2, dim] float32
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from adrank import rpc
from embed_store import convert
from embed_store.batch import JaggedIds, LookupResult
from embed_store.convert import IdSpace, ModelDescription
from embed_store.pb.v1 import embeddings_pb2 as pb
from embed_store.pb.v1 import embeddings_pb2_grpc as pb_grpc

__all__ = ["BagsLike", "EmbeddingClient", "IdSpace", "ModelDescription"]

logger = logging.getLogger(__name__)

BagsLike = Mapping[str, Sequence[Sequence[int]]] | JaggedIds
"""Bags of ids: ``{feature: [[ids of bag 0], [ids of bag 1], ...]}`` or a JaggedIds."""


class EmbeddingClient(rpc.RpcClient):
    """Client of ``adrank serve-embeddings``.

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

    server_label = "embedding server"
    serve_command = "adrank serve-embeddings"
    stub_class = pb_grpc.EmbeddingServiceStub

    def lookup(
        self,
        candidates: BagsLike,
        requests: BagsLike | None = None,
        *,
        candidate_request: torch.Tensor | np.ndarray | Sequence[int] | None = None,
        id_space: IdSpace = IdSpace.HASHED,
        timeout_s: float | None = None,
    ) -> LookupResult:
        """Pooled embeddings of one batch (the server's Lookup).

        Args:
            candidates: One bag per candidate: ``{feature: [[ids of candidate 0], ...]}`` (every
                feature with the same number of bags) or :class:`~embed_store.batch.JaggedIds`.
            requests: One bag per request for request-level features (looked up once per
                request, not once per candidate), in the same forms; None for none.
            candidate_request: The request each candidate belongs to (None: all to request 0).
            id_space: ``HASHED`` ids (in each table's ``[0, hashed_rows)``) or raw ``ID_KEY``s
                that the server hashes with the plan's seeds.
            timeout_s: Deadline of this call, retries included (default: the client's).

        Returns:
            ``candidates`` ``[num_candidates, sum of dims]`` and ``requests``
            ``[num_requests, sum of dims]`` (None without request features) as KeyedTensors in
            the order the features were given.

        Raises:
            InputError: Unknown features, ids out of range, malformed bags, or a message over the
                size limits (``source`` names the field).
            DeadlineExceededError: No answer within the deadline.
            UnauthenticatedError: The server refused the token.
            StoreError: The server is unavailable (after retries), or its runtime failed.
        """
        cand = _jagged(candidates, "candidates")
        req = _jagged(requests, "requests") if requests is not None else None
        request = convert.lookup_request(cand, req, candidate_request, id_space)
        response = self.call("Lookup", self._stub.Lookup, request, timeout_s)
        sent = (
            torch.as_tensor(np.asarray(candidate_request, dtype=np.int64).ravel())
            if candidate_request is not None
            else None
        )
        return convert.result_from_proto(response, sent, f"{self.target} Lookup")

    def describe(self, *, timeout_s: float | None = None) -> ModelDescription:
        """The features the server serves, their tables, dims, pooling, id ranges and precision.

        Raises:
            As :meth:`lookup`.
        """
        response = self.call(
            "DescribeModel", self._stub.DescribeModel, pb.DescribeModelRequest(), timeout_s
        )
        return convert.description_from_proto(response, f"{self.target} DescribeModel")


def _jagged(bags: BagsLike, where: str) -> JaggedIds:
    if isinstance(bags, JaggedIds):
        return bags
    ids = JaggedIds.from_lists(bags)
    ids.validate(where)
    return ids
