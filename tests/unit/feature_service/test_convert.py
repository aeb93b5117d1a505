"""Proto <-> domain conversion: the documented wire layout, exact round trips of every dtype and
shape with nulls (hypothesis), request validation, and malformed responses."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrank.errors import InputError, StoreError
from feature_service import (
    Dtype,
    EntityIdKind,
    FeatureFrame,
    FeatureGroup,
    FeatureSpec,
    RequestFeatures,
    Shape,
)
from feature_service import convert as C
from feature_service.ingest import columns_from_arrow
from feature_service.pb.v1 import feature_store_pb2 as pb

SPECS = (
    FeatureSpec("i", Dtype.INT64),
    FeatureSpec("f", Dtype.FLOAT32),
    FeatureSpec("d", Dtype.FLOAT64),
    FeatureSpec("b", Dtype.BOOL),
    FeatureSpec("s", Dtype.STRING),
    FeatureSpec("v", Dtype.FLOAT32, Shape.VECTOR, dim=3),
    FeatureSpec("l", Dtype.INT64, Shape.LIST),
    FeatureSpec("lf", Dtype.FLOAT64, Shape.LIST),
)
GROUP = FeatureGroup("g", "ad", EntityIdKind.INT, SPECS)


def frame_of(rows: list[dict], found: list[bool] | None = None, group: str = "g") -> FeatureFrame:
    """A frame built the way the store builds one (columns_from_arrow over an Arrow table)."""
    n = len(rows)
    table = pa.table(
        {
            "i": pa.array([r["i"] for r in rows], pa.int64()),
            "f": pa.array([r["f"] for r in rows], pa.float32()),
            "d": pa.array([r["d"] for r in rows], pa.float64()),
            "b": pa.array([r["b"] for r in rows], pa.bool_()),
            "s": pa.array([r["s"] for r in rows], pa.string()),
            "v": pa.array([r["v"] for r in rows], pa.list_(pa.float32(), 3)),
            "l": pa.array([r["l"] for r in rows], pa.list_(pa.int64())),
            "lf": pa.array([r["lf"] for r in rows], pa.list_(pa.float64())),
        }
    )
    cols = columns_from_arrow(table, GROUP, "test")
    found_arr = np.array(found if found is not None else [True] * n, dtype=bool)
    return FeatureFrame(
        group,
        np.arange(100, 100 + n, dtype=np.int64),
        found_arr,
        np.where(found_arr, np.arange(n, dtype=np.int64) * 7 + 1, 0),
        np.where(found_arr, np.arange(n, dtype=np.int64) * 3, 0),
        cols,
    )


def roundtrip(frame: FeatureFrame) -> FeatureFrame:
    msg = pb.Frame()
    C.frame_to_proto(frame, msg)
    wire = msg.SerializeToString()  # through the bytes a client receives
    return C.frame_from_proto(pb.Frame.FromString(wire))


def assert_same(a: FeatureFrame, b: FeatureFrame) -> None:
    assert a.group == b.group and list(a.columns) == list(b.columns)
    assert a.to_arrow().equals(b.to_arrow())
    for name, col in a.columns.items():
        assert b.columns[name].spec.describe() == col.spec.describe()


def test_wire_layout_is_the_documented_one() -> None:
    # The proto's example: list<int64> rows [7, 8], null, [9].
    rows = [
        {"i": 1, "f": 0.5, "d": 2.0, "b": True, "s": "ab", "v": [1, 2, 3], "l": [7, 8], "lf": []},
        {"i": None, "f": None, "d": None, "b": None, "s": None, "v": None, "l": None, "lf": None},
        {"i": 3, "f": 1.5, "d": -1.0, "b": False, "s": "é", "v": [4, 5, 6], "l": [9], "lf": [0.25]},
    ]
    msg = pb.Frame()
    C.frame_to_proto(frame_of(rows, found=[True, False, True]), msg)
    cols = {c.name: c for c in msg.columns}
    assert msg.num_rows == 3 and msg.group == "g"
    assert msg.found == bytes([0b101])
    assert msg.entity_keys == np.array([100, 101, 102], "<i8").tobytes()
    lst = cols["l"]
    assert (lst.dtype, lst.shape) == (pb.DTYPE_INT64, pb.SHAPE_LIST)
    assert lst.values == np.array([7, 8, 9], "<i8").tobytes()
    assert lst.offsets == np.array([0, 2, 2, 3], "<i8").tobytes()
    assert lst.valid == bytes([0b101])
    assert (
        cols["s"].values == "abé".encode()
        and cols["s"].offsets == np.array([0, 2, 2, 4], "<i8").tobytes()
    )
    assert (
        cols["v"].dim == 3
        and cols["v"].values == np.array([1, 2, 3, 0, 0, 0, 4, 5, 6], "<f4").tobytes()
    )
    assert cols["b"].values == bytes([1, 0, 0]) and cols["i"].offsets == b""


def test_frame_round_trip_keeps_values_nulls_and_specs() -> None:
    rows = [
        {"i": -5, "f": 0.1, "d": 1e300, "b": True, "s": "x", "v": [0, 1, 2], "l": [], "lf": [1.5]},
        {"i": None, "f": None, "d": None, "b": None, "s": None, "v": None, "l": None, "lf": None},
    ]
    frame = frame_of(rows, found=[True, False])
    back = roundtrip(frame)
    assert_same(frame, back)
    assert back["v"].values.shape == (2, 3)
    assert back.found.tolist() == [True, False]
    # Decoded arrays are views of the message bytes: no copies, and read-only.
    assert not back["f"].values.flags.writeable


def test_empty_frame_round_trips() -> None:
    frame = frame_of([])
    back = roundtrip(frame)
    assert len(back) == 0 and list(back.columns) == [s.name for s in SPECS]
    assert back["v"].values.shape == (0, 3)


_row = st.fixed_dictionaries(
    {
        "i": st.none() | st.integers(-(2**63), 2**63 - 1),
        "f": st.none() | st.floats(width=32, allow_nan=False),
        "d": st.none() | st.floats(allow_nan=False),
        "b": st.none() | st.booleans(),
        "s": st.none() | st.text(max_size=5),
        "v": st.none() | st.lists(st.floats(width=32, allow_nan=False), min_size=3, max_size=3),
        "l": st.none() | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
        "lf": st.none() | st.lists(st.floats(allow_nan=False), max_size=3),
    }
)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(_row, max_size=20), data=st.data())
def test_any_frame_round_trips_exactly(rows: list[dict], data: st.DataObject) -> None:
    found = data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    frame = frame_of(rows, found)
    assert_same(frame, roundtrip(frame))


def test_request_features_round_trip() -> None:
    user = frame_of(
        [dict.fromkeys(["i", "f", "d", "b", "s", "v", "l", "lf"])], [False], group="users"
    )
    cands = frame_of(
        [{"i": 1, "f": 2.0, "d": 3.0, "b": True, "s": "", "v": [1, 1, 1], "l": [1], "lf": []}] * 4,
        group="ads",
    )
    msg = C.request_features_response(RequestFeatures(user, cands))
    back = C.request_features_from_proto(
        pb.GetRequestFeaturesResponse.FromString(msg.SerializeToString())
    )
    assert_same(user, back.user)
    assert_same(cands, back.candidates)


# ---------------------------------------------------------------------- requests


def test_ids_to_proto_takes_ints_uints_and_strings() -> None:
    m = pb.EntityIds()
    C.ids_to_proto(np.array([3, -1], dtype=np.int64), m)
    assert list(m.int_ids) == [3, -1] and not m.string_ids
    m = pb.EntityIds()
    C.ids_to_proto(np.array([7], dtype=np.uint32), m)
    assert list(m.int_ids) == [7]
    m = pb.EntityIds()
    C.ids_to_proto(["a", "b"], m)
    assert list(m.string_ids) == ["a", "b"] and not m.int_ids
    m = pb.EntityIds()
    C.ids_to_proto([], m)
    assert not m.int_ids and not m.string_ids


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([1.5, 2.0], "found float64 values"),
        ([True, False], "found bool values"),
        (np.array([1.5]), "found float64 values"),
        ([1, "a"], "found int 1"),
        (np.array(["a", 1], dtype=object), "found int 1"),
        (["a", ["b"]], "one-dimensional sequence of ints or strings"),
        ([[1, 2], [3]], "one-dimensional sequence of ints or strings"),
        ([2**64], "int64 range"),
        (np.array([2**63], dtype=np.uint64), "int64 range"),
        (np.zeros((2, 2), dtype=np.int64), "one-dimensional"),
    ],
)
def test_ids_to_proto_rejects_malformed_ids(ids: object, expected: str) -> None:
    with pytest.raises(InputError) as info:
        C.ids_to_proto(ids, pb.EntityIds(), "candidate_ids")  # type: ignore[arg-type]
    assert expected in str(info.value) and info.value.source == "candidate_ids"


def test_read_from_proto_reads_group_ids_features_and_time() -> None:
    req = C.features_request("ads", [5, 6], ["ctr", "emb"], C.ReadTime(as_of_us=0))
    read, time = C.read_from_proto(pb.GetFeaturesRequest.FromString(req.SerializeToString()))
    assert read.group == "ads" and list(read.entity_ids) == [5, 6]
    assert list(read.features or []) == ["ctr", "emb"]
    # as_of_us = 0 is a time, not "unset": presence is tracked.
    assert time == C.ReadTime(as_of_us=0, now_us=None)
    read, time = C.read_from_proto(C.features_request("ads", ["x"]))
    assert read.features is None and read.entity_ids == ["x"] and time == C.ReadTime()


def test_read_from_proto_reports_every_problem_at_once() -> None:
    req = pb.GetFeaturesRequest(group="", features=["a", "b", "a"])
    req.ids.int_ids.append(1)
    req.ids.string_ids.append("x")
    with pytest.raises(InputError) as info:
        C.read_from_proto(req)
    text = str(info.value)
    assert "3 problems" in text
    assert "group is empty" in text and "['a']" in text and "not both" in text


def test_empty_string_ids_are_rejected() -> None:
    req = C.features_request("pages", ["a", "", "b", ""])
    with pytest.raises(InputError) as info:
        C.read_from_proto(req)
    assert "positions [1, 3]" in str(info.value) and info.value.source == "ids"


def test_request_reads_need_exactly_one_user_id() -> None:
    req = C.request_features_request(
        user_group="users", user_id=1, candidate_group="ads", candidate_ids=[4, 5]
    )
    user, cands, time = C.request_reads_from_proto(req)
    assert list(user.entity_ids) == [1] and list(cands.entity_ids) == [4, 5]
    assert time == C.ReadTime()
    req.user_id.int_ids.append(2)
    req.candidate_group = ""
    with pytest.raises(InputError) as info:
        C.request_reads_from_proto(req)
    text = str(info.value)
    assert "exactly one user id, found 2" in text and "candidate_group is empty" in text


# ---------------------------------------------------------------------- malformed responses


def _good() -> pb.Frame:
    rows = [{"i": 1, "f": 0.5, "d": 2.0, "b": True, "s": "ab", "v": [1, 2, 3], "l": [7], "lf": []}]
    msg = pb.Frame()
    C.frame_to_proto(frame_of(rows * 3), msg)
    return msg


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda m: setattr(m, "entity_keys", m.entity_keys[:-1]), "entity_keys holds 23 bytes"),
        (lambda m: setattr(m, "found", b""), "found bitmap"),
        (lambda m: setattr(m.columns[1], "values", b"\0" * 4), "values hold 4 bytes"),
        (lambda m: setattr(m.columns[1], "valid", b""), "column 1 valid bitmap"),
        (
            lambda m: setattr(m.columns[6], "offsets", np.array([0, 2, 1, 3], "<i8").tobytes()),
            "offsets do not slice",
        ),
        (lambda m: setattr(m.columns[6], "values", b"\0" * 7), "not whole"),
        (lambda m: setattr(m.columns[0], "dtype", 99), "unknown dtype 99"),
    ],
)
def test_malformed_frames_are_store_errors(corrupt, expected: str) -> None:
    msg = _good()
    corrupt(msg)
    with pytest.raises(StoreError) as info:
        C.frame_from_proto(msg, "127.0.0.1:1 GetFeatures")
    assert expected in str(info.value)
    assert "127.0.0.1:1 GetFeatures" in (info.value.source or "")


def test_a_user_frame_of_two_rows_is_malformed() -> None:
    rows = [{"i": 1, "f": 0.5, "d": 2.0, "b": True, "s": "ab", "v": [1, 2, 3], "l": [7], "lf": []}]
    two = frame_of(rows * 2)
    msg = C.request_features_response(RequestFeatures(two, two))
    with pytest.raises(StoreError, match="user frame has 2 rows"):
        C.request_features_from_proto(msg)
