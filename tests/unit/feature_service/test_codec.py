"""Value codec: round trips for every dtype and shape (nulls, empty and long lists), schema
versions, corrupt values, and the column checks at the write boundary."""

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrank.errors import InputError
from feature_service.codec import HEADER_BYTES, ValueCodec, check_columns, read_headers
from feature_service.types import (
    Dtype,
    EntityIdKind,
    FeatureColumn,
    FeatureGroup,
    FeatureSpec,
    Shape,
)


def column(spec: FeatureSpec, rows: list[Any]) -> FeatureColumn:
    """Build a column from Python values (None = null) the obvious way."""
    valid = np.array([r is not None for r in rows], dtype=bool)
    dt = spec.dtype.numpy
    if spec.dtype is Dtype.STRING:
        parts = [(r or "").encode() for r in rows]
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        return FeatureColumn(spec, np.frombuffer(b"".join(parts), dtype=np.uint8), valid, offsets)
    if spec.shape is Shape.SCALAR:
        return FeatureColumn(spec, np.array([0 if r is None else r for r in rows], dtype=dt), valid)
    if spec.shape is Shape.VECTOR:
        vals = [[0] * spec.dim if r is None else r for r in rows]
        return FeatureColumn(spec, np.array(vals, dtype=dt).reshape(len(rows), spec.dim), valid)
    flat = [x for r in rows if r is not None for x in r]
    offsets = np.concatenate([[0], np.cumsum([0 if r is None else len(r) for r in rows])]).astype(
        np.int64
    )
    return FeatureColumn(spec, np.array(flat, dtype=dt), valid, offsets)


def group_of(*specs: FeatureSpec, version: int = 1) -> FeatureGroup:
    return FeatureGroup("g", "thing", EntityIdKind.INT, tuple(specs), None, version)


def _element(dtype: Dtype) -> st.SearchStrategy[Any]:
    return {
        Dtype.INT64: st.integers(-(2**63), 2**63 - 1),
        Dtype.FLOAT32: st.floats(allow_nan=False, width=32),
        Dtype.FLOAT64: st.floats(allow_nan=False),
        Dtype.BOOL: st.booleans(),
        Dtype.STRING: st.text(max_size=12),
    }[dtype]


@st.composite
def specs(draw: st.DrawFn, name: str) -> FeatureSpec:
    dtype = draw(st.sampled_from(list(Dtype)))
    shapes = [Shape.SCALAR] if dtype is Dtype.STRING else list(Shape)
    shape = draw(st.sampled_from(shapes))
    return FeatureSpec(name, dtype, shape, draw(st.integers(1, 4)) if shape is Shape.VECTOR else 0)


def _value(spec: FeatureSpec) -> st.SearchStrategy[Any]:
    el = _element(spec.dtype)
    if spec.shape is Shape.VECTOR:
        return st.lists(el, min_size=spec.dim, max_size=spec.dim)
    if spec.shape is Shape.LIST:
        return st.lists(el, max_size=6)
    return el


@st.composite
def groups_and_rows(draw: st.DrawFn) -> tuple[FeatureGroup, list[dict[str, Any]]]:
    n_feats = draw(st.integers(1, 10))  # > 8 features exercises a 2-byte null bitmap
    group = group_of(*[draw(specs(f"f{i}")) for i in range(n_feats)])
    rows = draw(
        st.lists(
            st.fixed_dictionaries({s.name: st.none() | _value(s) for s in group.features}),
            max_size=20,
        )
    )
    return group, rows


@settings(max_examples=150, deadline=None)
@given(data=groups_and_rows(), times=st.data())
def test_round_trip_every_dtype_and_shape_with_nulls(
    data: tuple[FeatureGroup, list[dict[str, Any]]], times: st.DataObject
) -> None:
    group, rows = data
    n = len(rows)
    ev = np.array(
        times.draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)),
        dtype=np.int64,
    )
    cr = np.array(
        times.draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)),
        dtype=np.int64,
    )
    cols = {s.name: column(s, [r[s.name] for r in rows]) for s in group.features}
    check_columns(group, cols, n)
    codec = ValueCodec(group)
    values = codec.encode(ev, cr, cols)
    assert len(values) == n
    dec = codec.decode(values)
    assert dec.found.all()
    np.testing.assert_array_equal(dec.event_us, ev)
    np.testing.assert_array_equal(dec.created_us, cr)
    hdr_ev, hdr_cr = read_headers(values)
    np.testing.assert_array_equal(hdr_ev, ev)
    np.testing.assert_array_equal(hdr_cr, cr)
    for s in group.features:
        assert dec.columns[s.name].to_pylist() == cols[s.name].to_pylist(), s


def test_missing_values_decode_as_not_found_and_null() -> None:
    a = FeatureSpec("a", Dtype.INT64)
    b = FeatureSpec("b", Dtype.STRING)
    codec = ValueCodec(group_of(a, b))
    (v,) = codec.encode(np.array([5]), np.array([6]), {"a": column(a, [7]), "b": column(b, ["x"])})
    dec = codec.decode([None, v, None], ["b"])
    assert dec.found.tolist() == [False, True, False]
    assert dec.event_us.tolist() == [0, 5, 0]
    assert list(dec.columns) == ["b"]
    assert dec.columns["b"].to_pylist() == [None, "x", None]
    assert codec.decode([None, None]).columns["a"].to_pylist() == [None, None]


def test_values_of_an_older_schema_version_read_new_features_as_null() -> None:
    a = FeatureSpec("a", Dtype.FLOAT32)
    lst = FeatureSpec("l", Dtype.INT64, Shape.LIST)
    v1 = group_of(a, lst)
    old = ValueCodec(v1).encode(
        np.array([1, 2]),
        np.array([0, 0]),
        {"a": column(a, [1.5, None]), "l": column(lst, [[1, 2], []])},
    )
    v2 = group_of(
        a,
        lst,
        FeatureSpec("b", Dtype.INT64, since_version=2),
        FeatureSpec("s", Dtype.STRING, since_version=2),
        version=2,
    )
    codec2 = ValueCodec(v2)
    b, s = v2.features[2], v2.features[3]
    new = codec2.encode(
        np.array([3]),
        np.array([0]),
        {
            "a": column(a, [2.5]),
            "l": column(lst, [[9]]),
            "b": column(b, [4]),
            "s": column(s, ["z"]),
        },
    )
    dec = codec2.decode([new[0], old[0], None, old[1]])
    assert dec.columns["a"].to_pylist() == [2.5, 1.5, None, None]
    assert dec.columns["l"].to_pylist() == [[9], [1, 2], None, []]
    assert dec.columns["b"].to_pylist() == [4, None, None, None]
    assert dec.columns["s"].to_pylist() == ["z", None, None, None]


def test_layout_is_the_documented_one() -> None:
    a = FeatureSpec("a", Dtype.INT64)
    s = FeatureSpec("s", Dtype.STRING)
    (v,) = ValueCodec(group_of(a, s)).encode(
        np.array([1]), np.array([2]), {"a": column(a, [3]), "s": column(s, ["hi"])}
    )
    assert v[0] == 1  # codec format
    assert int.from_bytes(v[1:3], "little") == 1  # schema version
    assert int.from_bytes(v[3:11], "little", signed=True) == 1
    assert int.from_bytes(v[11:19], "little", signed=True) == 2
    assert v[HEADER_BYTES] == 0  # null bitmap: nothing null
    assert int.from_bytes(v[20:28], "little", signed=True) == 3
    assert v[28:] == (2).to_bytes(4, "little") + b"hi"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v[:-1],  # truncated list data
        lambda v: v[:10],  # truncated header
        lambda v: b"\x07" + v[1:],  # unknown codec format
        lambda v: v[:1] + (9).to_bytes(2, "little") + v[3:],  # unknown schema version
        lambda v: v + b"\x00",  # trailing garbage
    ],
)
def test_corrupt_values_raise(mutate: Any) -> None:
    lst = FeatureSpec("l", Dtype.FLOAT64, Shape.LIST)
    codec = ValueCodec(group_of(lst))
    (v,) = codec.encode(np.array([1]), np.array([2]), {"l": column(lst, [[1.0, 2.0]])})
    with pytest.raises(ValueError):
        codec.decode([mutate(v)])


def test_check_columns_names_every_bad_feature() -> None:
    a = FeatureSpec("a", Dtype.INT64)
    vec = FeatureSpec("vec", Dtype.FLOAT32, Shape.VECTOR, dim=3)
    lst = FeatureSpec("lst", Dtype.INT64, Shape.LIST)
    group = group_of(a, vec, lst)
    cols = {
        "a": FeatureColumn(a, np.zeros(2, dtype=np.float64), np.ones(2, dtype=bool)),  # wrong dtype
        "vec": FeatureColumn(
            vec, np.zeros((2, 2), dtype=np.float32), np.ones(2, dtype=bool)
        ),  # wrong dim
        "extra": column(a, [1, 2]),
    }
    with pytest.raises(InputError) as ei:
        check_columns(group, cols, 2)
    msg = str(ei.value)
    for culprit in ("'a'", "'vec'", "lst", "extra"):
        assert culprit in msg
    bad_offsets = FeatureColumn(
        lst, np.zeros(1, dtype=np.int64), np.ones(2, dtype=bool), np.array([0, 2, 1])
    )
    with pytest.raises(InputError, match="lst"):
        check_columns(group_of(lst), {"lst": bad_offsets}, 2)
