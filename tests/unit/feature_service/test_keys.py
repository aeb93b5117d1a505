"""Key layouts: byte order equals the intended numeric order, and every key round-trips."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feature_service import keys as K

i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(a=i64, b=i64)
def test_entity_encoding_preserves_signed_order(a: int, b: int) -> None:
    ka, kb = K.latest_keys([a, b])
    assert len(ka) == K.ENTITY_PREFIX_BYTES
    assert (ka < kb) == (a < b)
    assert (ka == kb) == (a == b)


@given(entity=i64, e1=i64, c1=i64, e2=i64, c2=i64)
def test_versions_of_one_entity_sort_newest_event_then_newest_created_first(
    entity: int, e1: int, c1: int, e2: int, c2: int
) -> None:
    k1, k2 = K.version_keys([entity, entity], [e1, e2], [c1, c2])
    assert len(k1) == K.VERSION_KEY_BYTES
    # Newest first: a larger (event, created) pair sorts earlier.
    assert (k1 < k2) == ((e1, c1) > (e2, c2))


@given(a=i64, b=i64, e1=i64, e2=i64)
def test_entity_dominates_the_version_order(a: int, b: int, e1: int, e2: int) -> None:
    if a == b:
        return
    k1, k2 = K.version_keys([a, b], [e1, e2], 0)
    assert (k1 < k2) == (a < b)
    assert k1[: K.ENTITY_PREFIX_BYTES] == K.entity_prefix(a)


@given(entity=i64, event=i64, created=i64, as_of=i64)
def test_as_of_seek_lands_on_versions_at_or_before_t(
    entity: int, event: int, created: int, as_of: int
) -> None:
    (vk,) = K.version_keys([entity], [event], [created])
    (sk,) = K.seek_keys([entity], as_of)
    assert len(sk) == K.SEEK_KEY_BYTES
    # A seek to sk reaches vk (vk >= sk) exactly when the version is not from the future.
    assert (vk >= sk) == (event <= as_of)


@given(st.lists(st.tuples(i64, i64, i64), max_size=50))
def test_version_keys_round_trip(rows: list[tuple[int, int, int]]) -> None:
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    ev = np.array([r[1] for r in rows], dtype=np.int64)
    cr = np.array([r[2] for r in rows], dtype=np.int64)
    keys = K.version_keys(ids, ev, cr)
    got = K.decode_version_keys(keys)
    np.testing.assert_array_equal(got[0], ids)
    np.testing.assert_array_equal(got[1], ev)
    np.testing.assert_array_equal(got[2], cr)
    np.testing.assert_array_equal(K.decode_latest_keys(K.latest_keys(ids)), ids)


def test_keys_start_with_the_format_version_and_keep_trailing_zero_bytes() -> None:
    (k,) = K.version_keys([0], [-1], [-1])
    assert k[0] == K.KEY_FORMAT_VERSION
    # NOT of sign-flipped -1 is 0x80 followed by zero bytes: they must survive the split.
    assert k[-8:] == b"\x80" + b"\x00" * 7
    assert len(k) == K.VERSION_KEY_BYTES


def test_decode_refuses_foreign_keys() -> None:
    (k,) = K.version_keys([1], [2], [3])
    with pytest.raises(ValueError, match="format version"):
        K.decode_version_keys([b"\x09" + k[1:]])
    with pytest.raises(ValueError, match="25-byte"):
        K.decode_version_keys([k[:-1]])


def test_meta_keys_are_prefix_scoped_per_group() -> None:
    assert K.group_def_key("ads").startswith(K.group_def_prefix())
    assert K.checkpoint_key("ads", "sha256:x").startswith(K.checkpoint_prefix("ads"))
    # Group "ad" must not see "ads" checkpoints: the name is 0-terminated in the prefix.
    assert not K.checkpoint_key("ads", "x").startswith(K.checkpoint_prefix("ad"))
    assert len({K.store_marker_key(), K.group_def_prefix(), K.checkpoint_prefix("")}) == 3
