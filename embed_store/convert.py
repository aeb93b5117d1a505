"""Conversions between the Lookup service's protos and the lookup runtime's types.

The wire format (``protos/embed_store/pb/v1/embeddings.proto``) carries arrays as little-endian
byte buffers: per feature ``ids`` (int64) and ``lengths`` (int32, one per bag), pooled
embeddings as one row-major float32 matrix per side (candidates, requests), and each sequence
feature's embeddings as ``lengths`` plus a ``[ids, dim]`` float32 matrix. Decoding a request
checks every buffer and reports every problem at once, each naming its field
(``candidates.features[ad_id].lengths``), before the runtime checks feature names and id ranges.

Raw id keys (``IdSpace.ID_KEY``) are hashed here with the plan's per-feature seeds and dedicated
heavy-hitter keys (:class:`IdKeyHasher`), so a caller without the plan can still look ids up.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedTensor

from adrank.errors import InputError, StoreError
from adrank.idmap import id_keys_to_hashed, load_dedicated_keys
from adrank.types import FeatureSlot, PoolingType, Precision, ShardPlan
from embed_store.batch import JaggedIds, LookupBatch, LookupResult
from embed_store.layout import LookupLayout
from embed_store.pb.v1 import embeddings_pb2 as pb

__all__ = [
    "IdKeyHasher",
    "IdSpace",
    "ModelDescription",
    "ServedFeature",
    "batch_from_proto",
    "describe_model",
    "description_from_proto",
    "description_to_proto",
    "jagged_to_proto",
    "lookup_request",
    "lookup_response",
    "result_from_proto",
]

_IDS = np.dtype("<i8")
_LENGTHS = np.dtype("<i4")
_VALUES = np.dtype("<f4")


class IdSpace(enum.Enum):
    """Which id space a lookup's ids are in (DESIGN.md "The id spaces")."""

    HASHED = "hashed"
    """``hashed_id``: each in ``[0, hashed_rows)`` of its feature's table."""
    ID_KEY = "id_key"
    """Raw int64 id keys (string ids already turned into keys by :mod:`adrank.hashing`)."""


_ID_SPACE_TO_PROTO = {IdSpace.HASHED: pb.ID_SPACE_HASHED, IdSpace.ID_KEY: pb.ID_SPACE_ID_KEY}
_ID_SPACE_FROM_PROTO = {v: k for k, v in _ID_SPACE_TO_PROTO.items()}
_POOLING_TO_PROTO = {
    PoolingType.SUM: pb.POOLING_SUM,
    PoolingType.MEAN: pb.POOLING_MEAN,
    PoolingType.NONE: pb.POOLING_NONE,
}
_POOLING_FROM_PROTO = {v: k for k, v in _POOLING_TO_PROTO.items()}
_PRECISION_TO_PROTO = {
    Precision.FP32: pb.PRECISION_FP32,
    Precision.FP16: pb.PRECISION_FP16,
    Precision.INT8: pb.PRECISION_INT8,
    Precision.INT4: pb.PRECISION_INT4,
}
_PRECISION_FROM_PROTO = {v: k for k, v in _PRECISION_TO_PROTO.items()}


# -------------------------------------------------------------------------------------------------
# Raw id keys
# -------------------------------------------------------------------------------------------------


class IdKeyHasher:
    """Hashes raw id keys into each feature's ``hashed_id`` space, as the plan says.

    Args:
        plan: The plan served.
        dedicated_keys: Feature -> its sorted dedicated heavy-hitter keys, for every feature with
            ``num_dedicated_rows > 0`` (see :meth:`from_plan_dir`).
    """

    def __init__(self, plan: ShardPlan, dedicated_keys: Mapping[str, np.ndarray]) -> None:
        self._slots: dict[str, FeatureSlot] = {f.name: f for t in plan.tables for f in t.features}
        self._dedicated = dict(dedicated_keys)

    @classmethod
    def from_plan_dir(cls, plan: ShardPlan, plan_path: str | os.PathLike[str]) -> IdKeyHasher:
        """Load the dedicated keys the plan names (relative to its directory).

        Args:
            plan: The plan.
            plan_path: ``plan.json`` or its directory.

        Raises:
            NotFoundError: A dedicated-keys file is missing.
            InputError: One is malformed, or a feature with dedicated rows names no file.
        """
        base = Path(plan_path)
        base = base if base.is_dir() else base.parent
        keys: dict[str, np.ndarray] = {}
        problems = []
        for t in plan.tables:
            for f in t.features:
                if f.num_dedicated_rows == 0:
                    continue
                loaded = load_dedicated_keys(base, f)
                if loaded is None:
                    problems.append(
                        InputError(
                            f"feature {f.name!r} has {f.num_dedicated_rows} dedicated rows but no "
                            "dedicated_keys_file",
                            source=str(base),
                            hint="re-plan, or fix the plan's dedicated_keys_file",
                        )
                    )
                else:
                    keys[f.name] = loaded
        if problems:
            raise InputError.from_problems(problems)
        return cls(plan, keys)

    def knows(self, feature: str) -> bool:
        """``feature`` is in the plan."""
        return feature in self._slots

    def hash(self, feature: str, id_keys: np.ndarray) -> np.ndarray:
        """Id keys of ``feature`` -> int64 hashed ids.

        Raises:
            InputError: ``feature`` has dedicated rows but its keys were not loaded.
            KeyError: ``feature`` is not in the plan (check :meth:`knows` first).
        """
        slot = self._slots[feature]
        dedicated = self._dedicated.get(feature)
        if slot.num_dedicated_rows and dedicated is None:
            raise InputError(
                f"feature {feature!r} has dedicated heavy-hitter rows but the server has no "
                "dedicated keys for it, so id keys cannot be hashed",
                source=feature,
                hint="send hashed ids, or start the server from the plan directory",
            )
        return id_keys_to_hashed(slot, id_keys, dedicated)


# -------------------------------------------------------------------------------------------------
# Requests
# -------------------------------------------------------------------------------------------------


def jagged_to_proto(ids: JaggedIds) -> pb.JaggedIds:
    """One side of a lookup as its proto (buffers little-endian)."""
    out = pb.JaggedIds(batch_size=ids.batch_size)
    lengths = ids.lengths.to(torch.int64).numpy()
    values = ids.values.to(torch.int64).numpy()
    per_feature = lengths.reshape(len(ids.features), ids.batch_size).sum(axis=1)
    ends = np.cumsum(per_feature)
    start = 0
    for k, name in enumerate(ids.features):
        end = int(ends[k])
        out.features.add(
            name=name,
            ids=values[start:end].astype(_IDS, copy=False).tobytes(),
            lengths=lengths[k * ids.batch_size : (k + 1) * ids.batch_size]
            .astype(_LENGTHS)
            .tobytes(),
        )
        start = end
    return out


def lookup_request(
    candidates: JaggedIds,
    requests: JaggedIds | None = None,
    candidate_request: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    id_space: IdSpace = IdSpace.HASHED,
) -> pb.LookupRequest:
    """A LookupRequest.

    Args:
        candidates: One bag per candidate.
        requests: One bag per request (request-level features), or None.
        candidate_request: The request of each candidate (None: all request 0).
        id_space: The space of the ids.

    Raises:
        InputError: Malformed jagged ids (naming the side and field).
    """
    candidates.validate("candidates")
    if requests is not None:
        requests.validate("requests")
    msg = pb.LookupRequest(
        candidates=jagged_to_proto(candidates), id_space=_ID_SPACE_TO_PROTO[id_space]
    )
    if requests is not None:
        msg.requests.CopyFrom(jagged_to_proto(requests))
    if candidate_request is not None:
        cr = np.asarray(candidate_request, dtype=np.int64).ravel()
        if cr.size and (cr.min() < 0 or cr.max() > np.iinfo(np.int32).max):
            raise InputError(
                f"candidate_request entries must be in [0, 2^31), got [{cr.min()}, {cr.max()}]",
                source="candidate_request",
            )
        msg.candidate_request = cr.astype(_LENGTHS).tobytes()
    return msg


def batch_from_proto(request: pb.LookupRequest, hasher: IdKeyHasher) -> LookupBatch:
    """Decode a LookupRequest into the runtime's batch, hashing id keys if the request has them.

    Feature names and hashed-id ranges are checked by the runtime's frontend afterwards.

    Args:
        request: The request.
        hasher: Hashes ``ID_KEY`` ids.

    Raises:
        InputError: Every malformed part at once: no or unknown id space, buffers of the wrong
            size, lengths that are negative, of the wrong count or not summing to the ids,
            duplicate or unnamed features, a bad ``candidate_request``.
    """
    problems: list[InputError] = []
    id_space = _ID_SPACE_FROM_PROTO.get(request.id_space)
    if id_space is None:
        problems.append(
            InputError(
                f"id_space is {pb.IdSpace.Name(request.id_space)}"
                if request.id_space in pb.IdSpace.values()
                else f"id_space {request.id_space} is not a known IdSpace",
                source="id_space",
                hint="set id_space to ID_SPACE_HASHED (hashed ids) or ID_SPACE_ID_KEY (raw keys)",
            )
        )
        id_space = IdSpace.HASHED  # keep decoding, to report the other problems too
    hash_with = hasher if id_space is IdSpace.ID_KEY else None
    candidates = _jagged_from_proto(request.candidates, "candidates", hash_with, problems)
    requests = (
        _jagged_from_proto(request.requests, "requests", hash_with, problems)
        if request.HasField("requests")
        else None
    )
    candidate_request = None
    if request.candidate_request:
        raw = request.candidate_request
        if len(raw) % _LENGTHS.itemsize:
            problems.append(
                InputError(
                    f"candidate_request is {len(raw)} bytes, not a multiple of 4 (int32)",
                    source="candidate_request",
                )
            )
        else:
            candidate_request = torch.from_numpy(np.frombuffer(raw, _LENGTHS).astype(np.int64))
    if problems:
        raise InputError.from_problems(problems)
    assert candidates is not None
    return LookupBatch(
        candidates=candidates, requests=requests, candidate_request=candidate_request
    )


def _jagged_from_proto(
    msg: pb.JaggedIds, where: str, hasher: IdKeyHasher | None, problems: list[InputError]
) -> JaggedIds | None:
    batch = msg.batch_size
    names: list[str] = []
    values: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    seen: set[str] = set()
    for i, f in enumerate(msg.features):
        name = f.name
        field = f"{where}.features[{name or i}]"
        if not name:
            problems.append(InputError(f"feature {i} of {where} has no name", source=field))
            continue
        if name in seen:
            problems.append(InputError(f"feature {name!r} is listed twice", source=field))
            continue
        seen.add(name)
        bad = len(problems)
        if len(f.ids) % _IDS.itemsize:
            problems.append(
                InputError(
                    f"{name}: ids is {len(f.ids)} bytes, not a multiple of 8 (int64)",
                    source=f"{field}.ids",
                )
            )
        if len(f.lengths) != batch * _LENGTHS.itemsize:
            problems.append(
                InputError(
                    f"{name}: lengths is {len(f.lengths)} bytes, expected one int32 per bag "
                    f"({batch} bags = {batch * _LENGTHS.itemsize} bytes)",
                    source=f"{field}.lengths",
                    hint=f"send one length per bag; {where}.batch_size is {batch}",
                )
            )
        if len(problems) > bad:
            continue
        ids = np.frombuffer(f.ids, _IDS)
        lens = np.frombuffer(f.lengths, _LENGTHS)
        if lens.size and int(lens.min()) < 0:
            problems.append(InputError(f"{name}: lengths must be >= 0", source=f"{field}.lengths"))
            continue
        total = int(lens.sum(dtype=np.int64))
        if total != ids.size:
            problems.append(
                InputError(
                    f"{name}: lengths sum to {total} but there are {ids.size} ids",
                    source=f"{field}.lengths",
                    hint="the lengths of a feature's bags must add up to its ids",
                )
            )
            continue
        if hasher is not None and hasher.knows(name):
            try:
                ids = hasher.hash(name, ids)
            except InputError as exc:
                problems.append(exc)
                continue
        # Unknown features pass through: the runtime reports them with the features it serves.
        names.append(name)
        values.append(ids)
        lengths.append(lens)
    if len(problems):
        return None
    return JaggedIds(
        features=tuple(names),
        values=torch.from_numpy(_concat(values, np.int64)),
        lengths=torch.from_numpy(_concat(lengths, np.int64)),
        batch_size=batch,
    )


def _concat(parts: list[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
    # Always a fresh, writable, native-order array (torch refuses read-only or byte-swapped ones).
    if not parts:
        return np.empty(0, dtype=dtype)
    return np.concatenate(parts).astype(dtype, copy=False)


# -------------------------------------------------------------------------------------------------
# Responses
# -------------------------------------------------------------------------------------------------


def lookup_response(result: LookupResult, plan_fingerprint: str) -> pb.LookupResponse:
    """The response of a lookup result (pooled features and sequence features)."""
    msg = pb.LookupResponse(
        candidates=_pooled_to_proto(result.candidates), plan_fingerprint=plan_fingerprint
    )
    if result.requests is not None:
        msg.requests.CopyFrom(_pooled_to_proto(result.requests))
    for name, jt in result.sequences.items():
        values = jt.values().detach().to(torch.float32).numpy()
        msg.sequences.add(
            feature=name,
            dim=values.shape[1],
            lengths=jt.lengths().numpy().astype(_LENGTHS).tobytes(),
            values=values.astype(_VALUES, copy=False).tobytes(),
        )
    return msg


def _pooled_to_proto(kt: KeyedTensor) -> pb.PooledEmbeddings:
    values = kt.values().detach().to(torch.float32).numpy()
    return pb.PooledEmbeddings(
        num_rows=values.shape[0],
        features=list(kt.keys()),
        dims=list(kt.length_per_key()),
        values=values.astype(_VALUES, copy=False).tobytes(),
    )


def result_from_proto(
    response: pb.LookupResponse,
    candidate_request: torch.Tensor | None,
    where: str,
) -> LookupResult:
    """A lookup result from its response (arrays are fresh, writable tensors).

    Args:
        response: The response.
        candidate_request: What the request sent (the response does not repeat it).
        where: The server and method, for errors.

    Raises:
        StoreError: The response is inconsistent (a server bug).
    """
    candidates = _pooled_from_proto(response.candidates, f"{where} candidates")
    requests = (
        _pooled_from_proto(response.requests, f"{where} requests")
        if response.HasField("requests")
        else None
    )
    sequences = {
        m.feature: _sequence_from_proto(m, f"{where} sequences[{m.feature}]")
        for m in response.sequences
    }
    return LookupResult(
        candidates=candidates,
        requests=requests,
        candidate_request=candidate_request,
        sequences=sequences,
    )


def _sequence_from_proto(msg: pb.SequenceEmbeddings, where: str) -> JaggedTensor:
    if len(msg.lengths) % _LENGTHS.itemsize:
        raise StoreError(f"malformed response: {len(msg.lengths)} length bytes", source=where)
    lengths = np.frombuffer(msg.lengths, _LENGTHS).astype(np.int64)
    ids = int(lengths.sum())
    if (lengths < 0).any() or len(msg.values) != ids * msg.dim * _VALUES.itemsize:
        raise StoreError(
            f"malformed response: lengths for {ids} ids of dim {msg.dim} but "
            f"{len(msg.values)} value bytes",
            source=where,
            hint="client and server versions may differ",
        )
    values = np.frombuffer(msg.values, _VALUES).astype(np.float32).reshape(ids, msg.dim)
    return JaggedTensor(values=torch.from_numpy(values), lengths=torch.from_numpy(lengths))


def _pooled_from_proto(msg: pb.PooledEmbeddings, where: str) -> KeyedTensor:
    dims = [int(d) for d in msg.dims]
    cols = sum(dims)
    if len(dims) != len(msg.features) or len(msg.values) != msg.num_rows * cols * 4:
        raise StoreError(
            f"malformed response: {len(msg.features)} features, {len(dims)} dims, "
            f"{msg.num_rows} rows and {len(msg.values)} value bytes do not agree",
            source=where,
            hint="client and server versions may differ",
        )
    values = np.frombuffer(msg.values, _VALUES).astype(np.float32).reshape(msg.num_rows, cols)
    return KeyedTensor(
        keys=list(msg.features), length_per_key=dims, values=torch.from_numpy(values)
    )


# -------------------------------------------------------------------------------------------------
# Describing the model
# -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ServedFeature:
    """One feature a Lookup server serves.

    Attributes:
        name: Feature name.
        table: Table holding it.
        dim: Columns of its embedding.
        pooling: SUM or MEAN; NONE for a sequence feature (one embedding per id, returned in
            :attr:`~embed_store.batch.LookupResult.sequences`).
        hashed_rows: Hashed ids must be in ``[0, hashed_rows)``.
        precision: Storage precision of its table.
        num_dedicated_rows: Heavy-hitter keys with their own row.
    """

    name: str
    table: str
    dim: int
    pooling: PoolingType
    hashed_rows: int
    precision: Precision
    num_dedicated_rows: int


@dataclasses.dataclass(frozen=True, slots=True)
class ModelDescription:
    """What a Lookup server serves.

    Attributes:
        features: Its features, in the runtime's order (tables by name, then their features).
        world_size: Ranks (devices) serving the tables.
        plan_fingerprint: ``inputs_fingerprint`` of the plan.
        max_receive_bytes: Largest request it accepts, in bytes.
        max_send_bytes: Largest response it sends, in bytes.
    """

    features: tuple[ServedFeature, ...]
    world_size: int
    plan_fingerprint: str
    max_receive_bytes: int
    max_send_bytes: int

    def feature(self, name: str) -> ServedFeature:
        """The feature called ``name``.

        Raises:
            KeyError: Not served.
        """
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


def describe_model(
    plan: ShardPlan,
    layout: LookupLayout,
    *,
    world_size: int,
    max_receive_bytes: int,
    max_send_bytes: int,
) -> ModelDescription:
    """The description of a runtime serving ``plan`` with ``layout``."""
    tables = {t.name: t for t in plan.tables}
    slots = {f.name: f for t in plan.tables for f in t.features}
    features = tuple(
        ServedFeature(
            name=name,
            table=table,
            dim=dim,
            pooling=(PoolingType.NONE if seq else PoolingType.MEAN if mean else PoolingType.SUM),
            hashed_rows=tables[table].hashed_rows,
            precision=tables[table].precision,
            num_dedicated_rows=slots[name].num_dedicated_rows,
        )
        for name, table, dim, mean, seq in zip(
            layout.features,
            layout.tables,
            layout.dims,
            layout.mean_pooled,
            layout.sequence or (False,) * len(layout.features),
            strict=True,
        )
    )
    return ModelDescription(
        features=features,
        world_size=world_size,
        plan_fingerprint=plan.inputs_fingerprint,
        max_receive_bytes=max_receive_bytes,
        max_send_bytes=max_send_bytes,
    )


def description_to_proto(d: ModelDescription) -> pb.DescribeModelResponse:
    """The DescribeModel response."""
    return pb.DescribeModelResponse(
        features=[
            pb.FeatureInfo(
                name=f.name,
                table=f.table,
                dim=f.dim,
                pooling=_POOLING_TO_PROTO[f.pooling],
                hashed_rows=f.hashed_rows,
                precision=_PRECISION_TO_PROTO[f.precision],
                num_dedicated_rows=f.num_dedicated_rows,
            )
            for f in d.features
        ],
        world_size=d.world_size,
        plan_fingerprint=d.plan_fingerprint,
        max_receive_bytes=d.max_receive_bytes,
        max_send_bytes=d.max_send_bytes,
    )


def description_from_proto(msg: pb.DescribeModelResponse, where: str) -> ModelDescription:
    """A model description from its response.

    Raises:
        StoreError: An unknown pooling or precision (client and server versions differ).
    """
    features = []
    for f in msg.features:
        pooling = _POOLING_FROM_PROTO.get(f.pooling)
        precision = _PRECISION_FROM_PROTO.get(f.precision)
        if pooling is None or precision is None:
            raise StoreError(
                f"feature {f.name!r}: unknown pooling {f.pooling} or precision {f.precision}",
                source=where,
                hint="client and server versions may differ",
            )
        features.append(
            ServedFeature(
                name=f.name,
                table=f.table,
                dim=f.dim,
                pooling=pooling,
                hashed_rows=f.hashed_rows,
                precision=precision,
                num_dedicated_rows=f.num_dedicated_rows,
            )
        )
    return ModelDescription(
        features=tuple(features),
        world_size=msg.world_size,
        plan_fingerprint=msg.plan_fingerprint,
        max_receive_bytes=msg.max_receive_bytes,
        max_send_bytes=msg.max_send_bytes,
    )
