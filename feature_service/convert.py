"""Conversion between the gRPC messages of :mod:`feature_service.pb.v1` and the domain types.

Both directions for both ends: the server turns requests into :class:`FeatureRead` values and
frames into responses; the client turns ids into requests and responses back into
:class:`FeatureFrame` values. Arrays travel as little-endian byte buffers and validity as
LSB-first bitmaps (Arrow's layout), so each column costs a copy on the server and a zero-copy
``np.frombuffer`` view on the client (decoded arrays are read-only).

Also here: the two errors the RPC layer adds to :mod:`adrank.errors` (a passed deadline and a
refused token), since the server raises them and the client maps the status codes back to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from adrank.errors import InputError, StoreError
from feature_service.pb.v1 import feature_store_pb2 as pb
from feature_service.types import (
    Dtype,
    FeatureColumn,
    FeatureFrame,
    FeatureRead,
    FeatureSpec,
    RequestFeatures,
    Shape,
)

__all__ = [
    "ReadTime",
    "EntityIdsLike",
    "ids_to_proto",
    "ids_from_proto",
    "read_time_to_proto",
    "read_time_from_proto",
    "features_request",
    "request_features_request",
    "read_from_proto",
    "request_reads_from_proto",
    "frame_to_proto",
    "frame_from_proto",
    "features_response",
    "request_features_response",
    "request_features_from_proto",
]

EntityIdsLike = Sequence[int] | Sequence[str] | np.ndarray
"""Raw entity ids as callers pass them: ints (or an integer array) or strings."""


@dataclass(frozen=True, slots=True)
class ReadTime:
    """When a read looks at the store.

    Args:
        as_of_us: Point-in-time read at this time (microseconds); None reads the newest versions.
        now_us: For newest-version reads, apply the group's TTL relative to this time
            (microseconds); None leaves the choice to the server.
    """

    as_of_us: int | None = None
    now_us: int | None = None


_DTYPE_TO_PB = {
    Dtype.INT64: pb.DTYPE_INT64,
    Dtype.FLOAT32: pb.DTYPE_FLOAT32,
    Dtype.FLOAT64: pb.DTYPE_FLOAT64,
    Dtype.STRING: pb.DTYPE_STRING,
    Dtype.BOOL: pb.DTYPE_BOOL,
}
_DTYPE_FROM_PB = {v: k for k, v in _DTYPE_TO_PB.items()}
_SHAPE_TO_PB = {
    Shape.SCALAR: pb.SHAPE_SCALAR,
    Shape.VECTOR: pb.SHAPE_VECTOR,
    Shape.LIST: pb.SHAPE_LIST,
}
_SHAPE_FROM_PB = {v: k for k, v in _SHAPE_TO_PB.items()}
_I8 = np.dtype("<i8")


# ---------------------------------------------------------------------- requests (client side)


def ids_to_proto(ids: EntityIdsLike, out: pb.EntityIds, field: str = "ids") -> None:
    """Fill ``out`` with raw entity ids.

    Args:
        ids: Integer ids (a sequence or an integer array) or string ids.
        out: The message to fill (a field of a request).
        field: Request field name, for errors.

    Raises:
        InputError: Ids that are neither all integers nor all strings, or out of the int64 range.
    """
    items = ids if isinstance(ids, np.ndarray) else list(ids)
    try:
        arr = np.asarray(items)
    except ValueError as exc:  # ragged nested sequences
        raise InputError(
            "entity ids must be a one-dimensional sequence of ints or strings", source=field
        ) from exc
    if arr.ndim != 1:
        raise InputError(
            f"entity ids must be a one-dimensional sequence, found shape {arr.shape}", source=field
        )
    if arr.shape[0] == 0:
        return
    kind = arr.dtype.kind
    if kind == "i":
        out.int_ids.extend(arr.tolist())
        return
    if kind == "u":
        if int(arr.max()) > np.iinfo(np.int64).max:
            raise InputError("entity ids exceed the int64 range", source=field)
        out.int_ids.extend(arr.tolist())
        return
    values = arr.tolist()
    # numpy turns [1, "a"] into the strings ["1", "a"]: check the originals of a string array.
    originals = values if kind == "O" or isinstance(items, np.ndarray) else items
    if kind in "UO":
        bad = [x for x in originals if not isinstance(x, str)]
        if not bad:
            out.string_ids.extend(values)
            return
        ints = [x for x in bad if isinstance(x, int) and not isinstance(x, bool)]
        if kind == "O" and len(ints) == len(originals):  # Python ints beyond uint64
            raise InputError("entity ids exceed the int64 range", source=field)
        found = f"{type(bad[0]).__name__} {bad[0]!r}"
    else:
        found = f"{arr.dtype} values"
    raise InputError(
        f"entity ids must be all integers or all strings, found {found}",
        source=field,
        hint="pass ints (np.int64) for groups with integer ids, str for string ids",
    )


def read_time_to_proto(time: ReadTime, out: pb.ReadTime) -> None:
    """Fill ``out`` from ``time`` (unset fields stay absent)."""
    if time.as_of_us is not None:
        out.as_of_us = int(time.as_of_us)
    if time.now_us is not None:
        out.now_us = int(time.now_us)


def features_request(
    group: str,
    ids: EntityIdsLike,
    features: Sequence[str] | None = None,
    time: ReadTime | None = None,
) -> pb.GetFeaturesRequest:
    """Build a GetFeatures request.

    Args:
        group: Feature group.
        ids: Raw entity ids.
        features: Features to return (None or empty: all).
        time: When to read (default: newest versions).

    Raises:
        InputError: Bad ids.
    """
    req = pb.GetFeaturesRequest(group=group, features=_names(features))
    ids_to_proto(ids, req.ids)
    if time is not None:
        read_time_to_proto(time, req.time)
    return req


def request_features_request(
    *,
    user_group: str,
    user_id: int | str,
    candidate_group: str,
    candidate_ids: EntityIdsLike,
    user_features: Sequence[str] | None = None,
    candidate_features: Sequence[str] | None = None,
    time: ReadTime | None = None,
) -> pb.GetRequestFeaturesRequest:
    """Build a GetRequestFeatures request (one user and its candidates).

    Raises:
        InputError: Bad ids.
    """
    req = pb.GetRequestFeaturesRequest(
        user_group=user_group,
        user_features=_names(user_features),
        candidate_group=candidate_group,
        candidate_features=_names(candidate_features),
    )
    ids_to_proto(cast(EntityIdsLike, [user_id]), req.user_id, "user_id")
    ids_to_proto(candidate_ids, req.candidate_ids, "candidate_ids")
    if time is not None:
        read_time_to_proto(time, req.time)
    return req


def _names(features: Sequence[str] | None) -> list[str]:
    if features is None:
        return []
    return [features] if isinstance(features, str) else list(features)


# ---------------------------------------------------------------------- requests (server side)


def ids_from_proto(msg: pb.EntityIds, field: str) -> np.ndarray | list[str]:
    """Raw entity ids of a request: an int64 array, or a list of strings.

    Args:
        msg: The ids message.
        field: Request field name, for errors.

    Raises:
        InputError: Both int and string ids set, or an empty string id.
    """
    n_int, n_str = len(msg.int_ids), len(msg.string_ids)
    if n_int and n_str:
        raise InputError(
            f"entity ids must be int_ids or string_ids, not both (found {n_int} int and {n_str} "
            "string ids)",
            source=field,
            hint="send int_ids for groups with integer ids, string_ids for string ids",
        )
    if n_str:
        ids = list(msg.string_ids)
        empty = [i for i, s in enumerate(ids) if not s]
        if empty:
            raise InputError(
                f"{len(empty)} string ids are empty (positions {empty[:10]})",
                source=field,
                hint="drop the empty ids; an entity id must be a non-empty string",
            )
        return ids
    return np.array(msg.int_ids, dtype=np.int64)


def read_time_from_proto(msg: pb.ReadTime) -> ReadTime:
    """The read time of a request (absent fields are None)."""
    return ReadTime(
        msg.as_of_us if msg.HasField("as_of_us") else None,
        msg.now_us if msg.HasField("now_us") else None,
    )


def read_from_proto(req: pb.GetFeaturesRequest) -> tuple[FeatureRead, ReadTime]:
    """The read a GetFeatures request asks for.

    Raises:
        InputError: Every problem of the request (missing group, bad ids, duplicate features).
    """
    problems: list[InputError] = []
    read = _read(req.group, req.ids, req.features, "group", "ids", "features", problems)
    if problems:
        raise InputError.from_problems(problems)
    assert read is not None
    return read, read_time_from_proto(req.time)


def request_reads_from_proto(
    req: pb.GetRequestFeaturesRequest,
) -> tuple[FeatureRead, FeatureRead, ReadTime]:
    """The user read and the candidate read a GetRequestFeatures request asks for.

    Raises:
        InputError: Every problem of the request (missing groups, not exactly one user id, bad ids,
            duplicate features).
    """
    problems: list[InputError] = []
    user = _read(
        req.user_group,
        req.user_id,
        req.user_features,
        "user_group",
        "user_id",
        "user_features",
        problems,
    )
    if user is not None and len(user.entity_ids) != 1:
        problems.append(
            InputError(
                f"a request has exactly one user id, found {len(user.entity_ids)}",
                source="user_id",
                hint="send the candidates' ids in candidate_ids, or use GetFeatures for many users",
            )
        )
    cands = _read(
        req.candidate_group,
        req.candidate_ids,
        req.candidate_features,
        "candidate_group",
        "candidate_ids",
        "candidate_features",
        problems,
    )
    if problems:
        raise InputError.from_problems(problems)
    assert user is not None and cands is not None
    return user, cands, read_time_from_proto(req.time)


def _read(
    group: str,
    ids: pb.EntityIds,
    features: Sequence[str],
    group_field: str,
    ids_field: str,
    features_field: str,
    problems: list[InputError],
) -> FeatureRead | None:
    if not group:
        problems.append(
            InputError(f"{group_field} is empty; name a feature group", source=group_field)
        )
    feats = list(features)
    seen: set[str] = set()
    dups: set[str] = set()
    for f in feats:
        (dups if f in seen else seen).add(f)
    if dups:
        problems.append(
            InputError(
                f"features {sorted(dups)} are requested more than once",
                source=features_field,
                hint="list each feature once",
            )
        )
    try:
        raw = ids_from_proto(ids, ids_field)
    except InputError as exc:
        problems.append(exc)
        return None
    return FeatureRead(group, raw, feats or None)


# ---------------------------------------------------------------------- responses (server side)

# Per-call costs matter here (64 columns per ranking request), so the wire form of each spec is
# cached and the validity bitmaps of all columns are packed and unpacked with one numpy call.
_CACHE_MAX = 4096


class _SpecWire:
    """A spec's wire enums and numpy dtype, cached by spec identity (the store reuses its specs)."""

    __slots__ = ("spec", "dtype_pb", "shape_pb", "np_dtype")

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.dtype_pb = _DTYPE_TO_PB[spec.dtype]
        self.shape_pb = _SHAPE_TO_PB[spec.shape]
        self.np_dtype = spec.dtype.numpy


_wire_cache: dict[int, _SpecWire] = {}


def _wire(spec: FeatureSpec) -> _SpecWire:
    w = _wire_cache.get(id(spec))
    if w is None or w.spec is not spec:  # `is` guards against a recycled id
        if len(_wire_cache) >= _CACHE_MAX:
            _wire_cache.clear()
        w = _wire_cache[id(spec)] = _SpecWire(spec)
    return w


def frame_to_proto(frame: FeatureFrame, out: pb.Frame) -> None:
    """Fill ``out`` with ``frame``'s columns as little-endian buffers and bitmaps."""
    n = len(frame)
    out.group = frame.group
    out.num_rows = n
    out.entity_keys = _le_bytes(frame.entity_keys, _I8)
    out.event_us = _le_bytes(frame.event_us, _I8)
    out.created_us = _le_bytes(frame.created_us, _I8)
    cols = list(frame.columns.items())
    bitmaps = _bitmaps([frame.found] + [c.valid for _name, c in cols], n)
    out.found = bitmaps[0]
    add = out.columns.add
    for (name, col), valid in zip(cols, bitmaps[1:], strict=True):
        w = _wire(col.spec)
        values, offsets = col.values, col.offsets
        if offsets is not None and (offsets[0] != 0 or values.shape[0] != offsets[-1]):
            # A sliced column (e.g. from Arrow) may hold values outside its rows: send only its own.
            start, stop = int(offsets[0]), int(offsets[-1])
            values, offsets = values[start:stop], offsets - start
        add(
            name=name,
            dtype=w.dtype_pb,
            shape=w.shape_pb,
            dim=col.spec.dim,
            values=_le_bytes(values, w.np_dtype),
            offsets=b"" if offsets is None else _le_bytes(offsets, _I8),
            valid=valid,
        )


def features_response(frame: FeatureFrame) -> pb.GetFeaturesResponse:
    """The GetFeatures response for ``frame``."""
    resp = pb.GetFeaturesResponse()
    frame_to_proto(frame, resp.frame)
    return resp


def request_features_response(features: RequestFeatures) -> pb.GetRequestFeaturesResponse:
    """The GetRequestFeatures response for a request's user and candidate frames."""
    resp = pb.GetRequestFeaturesResponse()
    frame_to_proto(features.user, resp.user)
    frame_to_proto(features.candidates, resp.candidates)
    return resp


def _le_bytes(a: np.ndarray, dtype: np.dtype[Any]) -> bytes:
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


def _bitmaps(masks: list[np.ndarray], n: int) -> list[bytes]:
    """LSB-first bitmaps of equally long bool masks, packed in one call."""
    width = (n + 7) // 8
    packed = np.packbits(np.stack(masks), axis=1, bitorder="little").tobytes()
    return [packed[i * width : (i + 1) * width] for i in range(len(masks))]


# ---------------------------------------------------------------------- responses (client side)

_spec_cache: dict[tuple[str, int, int, int], tuple[FeatureSpec, np.dtype[Any], int]] = {}


def _spec(c: pb.Column, where: str) -> tuple[FeatureSpec, np.dtype[Any], int]:
    """The column's spec, its numpy dtype and values per row (0: variable width), cached."""
    key = (c.name, c.dtype, c.shape, c.dim)
    entry = _spec_cache.get(key)
    if entry is None:
        dtype = _DTYPE_FROM_PB.get(c.dtype)
        shape = _SHAPE_FROM_PB.get(c.shape)
        if dtype is None or shape is None:
            raise _malformed(
                f"{where} column {c.name!r}", f"unknown dtype {c.dtype} or shape {c.shape}"
            )
        spec = FeatureSpec(c.name, dtype, shape, int(c.dim))
        per_row = 0 if not spec.fixed_width else (spec.dim if shape is Shape.VECTOR else 1)
        if len(_spec_cache) >= _CACHE_MAX:
            _spec_cache.clear()
        entry = _spec_cache[key] = (spec, dtype.numpy, per_row)
    return entry


def frame_from_proto(msg: pb.Frame, source: str = "response") -> FeatureFrame:
    """Decode a frame; arrays are read-only views of the message's bytes (no copy).

    Args:
        msg: The frame message.
        source: Where it came from (server address and method), for errors.

    Raises:
        StoreError: The frame is malformed (lengths that do not match, unknown enum values): a
            server of another version, or a bug.
    """
    n = int(msg.num_rows)
    where = f"{source} frame {msg.group!r}"
    keys = _array(msg.entity_keys, _I8, n, where, "entity_keys")
    event_us = _array(msg.event_us, _I8, n, where, "event_us")
    created_us = _array(msg.created_us, _I8, n, where, "created_us")
    cols = list(msg.columns)
    masks = _unbitmaps([msg.found] + [c.valid for c in cols], n, where)
    columns: dict[str, FeatureColumn] = {}
    for c, valid in zip(cols, masks[1:], strict=True):
        columns[c.name] = _column(c, valid, n, where)
    return FeatureFrame(msg.group, keys, masks[0], event_us, created_us, columns)


def request_features_from_proto(
    msg: pb.GetRequestFeaturesResponse, source: str = "response"
) -> RequestFeatures:
    """Decode a GetRequestFeatures response.

    Raises:
        StoreError: A malformed frame (see :func:`frame_from_proto`).
    """
    user = frame_from_proto(msg.user, source)
    if len(user) != 1:
        raise StoreError(
            f"malformed response: the user frame has {len(user)} rows, expected 1", source=source
        )
    return RequestFeatures(user, frame_from_proto(msg.candidates, source))


def _malformed(where: str, what: str) -> StoreError:
    return StoreError(
        f"malformed response from the feature server: {what}",
        source=where,
        hint="use a client and server of the same adrank version",
    )


def _array(buf: bytes, dtype: np.dtype[Any], count: int, where: str, field: str) -> np.ndarray:
    if len(buf) != count * dtype.itemsize:
        raise _malformed(
            where, f"{field} holds {len(buf)} bytes, expected {count} x {dtype.itemsize}"
        )
    return np.frombuffer(buf, dtype=dtype)


def _unbitmaps(bufs: list[bytes], n: int, where: str) -> list[np.ndarray]:
    """Bool masks of ``n`` rows from LSB-first bitmaps, unpacked in one call."""
    width = (n + 7) // 8
    bad = [i for i, b in enumerate(bufs) if len(b) != width]
    if bad:
        what = "found" if bad[0] == 0 else f"column {bad[0] - 1} valid"
        raise _malformed(where, f"{what} bitmap holds {len(bufs[bad[0]])} bytes for {n} rows")
    packed = np.frombuffer(b"".join(bufs), dtype=np.uint8).reshape(len(bufs), width)
    bits = np.unpackbits(packed, axis=1, count=n, bitorder="little").view(np.bool_)
    return list(bits)


def _column(c: pb.Column, valid: np.ndarray, n: int, where: str) -> FeatureColumn:
    spec, np_dtype, per_row = _spec(c, where)
    values_buf = c.values
    if per_row:
        if len(values_buf) != n * per_row * np_dtype.itemsize:
            raise _malformed(
                f"{where} column {c.name!r}",
                f"values hold {len(values_buf)} bytes, expected {n} x {per_row} x "
                f"{np_dtype.itemsize}",
            )
        values = np.frombuffer(values_buf, dtype=np_dtype)
        if per_row > 1 or spec.shape is Shape.VECTOR:
            values = values.reshape(n, per_row)
        return FeatureColumn(spec, values, valid)
    cwhere = f"{where} column {c.name!r}"
    offsets = _array(c.offsets, _I8, n + 1, cwhere, "offsets")
    if len(values_buf) % np_dtype.itemsize:
        raise _malformed(cwhere, f"values hold {len(values_buf)} bytes, not whole {np_dtype} items")
    values = np.frombuffer(values_buf, dtype=np_dtype)
    if offsets[0] != 0 or offsets[-1] != values.shape[0] or (np.diff(offsets) < 0).any():
        raise _malformed(cwhere, f"offsets do not slice {values.shape[0]} values")
    return FeatureColumn(spec, values, valid, offsets)
