import mmh3
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrank.constants import STRING_ID_SEED
from adrank.hashing import id_keys_from_arrow, murmur3_64, string_id_keys


def _reference(key: int, seed: int) -> int:
    return mmh3.hash64(int(key).to_bytes(8, "little", signed=True), seed, signed=False)[0]


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=50),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_murmur3_64_matches_mmh3_bit_for_bit(keys: list[int], seed: int) -> None:
    got = murmur3_64(np.array(keys, dtype=np.int64), seed)
    assert got.dtype == np.uint64
    assert [int(x) for x in got] == [_reference(k, seed) for k in keys]


def test_murmur3_64_rejects_out_of_range_seed() -> None:
    with pytest.raises(ValueError, match="32-bit"):
        murmur3_64(np.zeros(1, dtype=np.int64), 2**32)


def test_string_keys_match_mmh3_of_utf8() -> None:
    values = ["68fd1e64", "", "ümlaut"]
    got = string_id_keys(values)
    assert list(got) == [mmh3.hash64(v.encode(), STRING_ID_SEED)[0] for v in values]


def test_id_keys_from_arrow_strings_with_nulls() -> None:
    keys, valid = id_keys_from_arrow(pa.array(["a", None, "b", "a"]))
    assert valid.tolist() == [True, False, True, True]
    assert keys[0] == keys[3] == string_id_keys(["a"])[0]
    assert keys[2] == string_id_keys(["b"])[0]


def test_id_keys_from_arrow_ints_are_their_own_keys() -> None:
    keys, valid = id_keys_from_arrow(
        pa.chunked_array([pa.array([5, None], pa.int32()), pa.array([-7], pa.int32())])
    )
    assert keys.dtype == np.int64
    assert keys.tolist() == [5, 0, -7]
    assert valid.tolist() == [True, False, True]


def test_id_keys_from_arrow_rejects_floats() -> None:
    with pytest.raises(TypeError, match="double"):
        id_keys_from_arrow(pa.array([1.5]))


def test_id_keys_from_arrow_uint64_above_int64_range_keeps_bits() -> None:
    keys, valid = id_keys_from_arrow(pa.array([2**64 - 1, 2**63, 5], pa.uint64()))
    assert keys.tolist() == [-1, -(2**63), 5]
    assert valid.all()


def test_serial_and_parallel_kernels_agree_around_the_threshold() -> None:
    import adrank.hashing as hashing

    n = hashing._PARALLEL_MIN_KEYS
    keys = np.random.default_rng(3).integers(-(2**62), 2**62, n + 5, dtype=np.int64)
    big = hashing.murmur3_64(keys, 17)  # parallel kernel
    small = np.concatenate(
        [hashing.murmur3_64(keys[i : i + 1000], 17) for i in range(0, n + 5, 1000)]
    )
    assert np.array_equal(big, small)
