"""embed_store.convert: Lookup protos <-> the runtime's batches and results, without a server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedTensor

from adrank.errors import InputError, NotFoundError, StoreError
from adrank.types import PoolingType, Precision, ShardingType, ShardPlan
from embed_store import convert
from embed_store.batch import JaggedIds, LookupResult
from embed_store.convert import IdKeyHasher, IdSpace
from embed_store.frontend import hash_id_keys
from embed_store.layout import LookupLayout
from embed_store.pb.v1 import embeddings_pb2 as pb
from tests.plan_builders import feature, make_plan, mixed_plan, sequence_plan, table

_NO_KEYS = IdKeyHasher(mixed_plan(), {})


def _ded_plan() -> ShardPlan:
    f = feature(
        "f_ded",
        7,
        10,
        num_dedicated_rows=2,
        dedicated_row_offset=10,
        dedicated_keys_file="dedicated/f_ded.npy",
    )
    t = table("t_ded", [f], 12, 4, ShardingType.TABLE_WISE, [(0, 0, 12, 0, 4)])
    return make_plan([t], 1)


@st.composite
def jagged(draw: st.DrawFn) -> JaggedIds:
    names = draw(st.lists(st.sampled_from(["f_tw", "f_cw", "f_rw"]), unique=True, max_size=3))
    batch = draw(st.integers(0, 5))
    ids = st.integers(-(2**63), 2**63 - 1)
    return JaggedIds.from_lists(
        {
            n: draw(st.lists(st.lists(ids, max_size=4), min_size=batch, max_size=batch))
            for n in names
        }
    )


@settings(max_examples=60, deadline=None)
@given(cand=jagged(), req=st.one_of(st.none(), jagged()))
def test_request_round_trip(cand: JaggedIds, req: JaggedIds | None) -> None:
    owner = list(range(cand.batch_size))
    msg = convert.lookup_request(cand, req, owner, IdSpace.HASHED)
    batch = convert.batch_from_proto(pb.LookupRequest.FromString(msg.SerializeToString()), _NO_KEYS)
    for got, want in ((batch.candidates, cand), (batch.requests, req)):
        if want is None:
            assert got is None
            continue
        assert got is not None
        assert got.features == want.features and got.batch_size == want.batch_size
        assert torch.equal(got.values, want.values) and torch.equal(got.lengths, want.lengths)
        assert got.values.dtype == torch.int64 and got.lengths.dtype == torch.int64
    expected_owner = owner if owner else None
    got_owner = batch.candidate_request
    assert (got_owner.tolist() if got_owner is not None else None) == expected_owner


def test_id_keys_are_hashed_with_the_dedicated_keys(tmp_path: Path) -> None:
    plan = _ded_plan()
    (tmp_path / "dedicated").mkdir()
    np.save(tmp_path / "dedicated" / "f_ded.npy", np.array([-4, 1000], dtype=np.int64))
    hasher = IdKeyHasher.from_plan_dir(plan, tmp_path)
    keys = [1000, 3, -4, 2**62]
    msg = convert.lookup_request(
        JaggedIds.from_lists({"f_ded": [keys[:1], keys[1:]]}), id_space=IdSpace.ID_KEY
    )
    batch = convert.batch_from_proto(msg, hasher)
    want = hash_id_keys(plan, "f_ded", np.array(keys), np.array([-4, 1000]))
    assert batch.candidates.values.tolist() == want.tolist()
    assert want[[0, 2]].tolist() == [11, 10]  # dedicated rows, by position in the sorted keys
    # Without the keys file id keys of that feature are refused, naming it.
    with pytest.raises(InputError) as info:
        convert.batch_from_proto(msg, IdKeyHasher(plan, {}))
    assert info.value.source == "f_ded"


def test_missing_dedicated_keys_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        IdKeyHasher.from_plan_dir(_ded_plan(), tmp_path / "plan.json")
    assert info.value.source == str(tmp_path / "dedicated" / "f_ded.npy")


def _raw(batch: int, **features: tuple[bytes, bytes]) -> pb.LookupRequest:
    msg = pb.LookupRequest(id_space=pb.ID_SPACE_HASHED)
    msg.candidates.batch_size = batch
    for name, (ids, lengths) in features.items():
        msg.candidates.features.add(name=name, ids=ids, lengths=lengths)
    return msg


def test_malformed_requests_name_every_field_at_once() -> None:
    msg = _raw(
        2,
        a=(b"\x00" * 7, np.array([0, 0], "<i4").tobytes()),
        b=(np.array([1, 2], "<i8").tobytes(), np.array([1], "<i4").tobytes()),
        c=(np.array([1, 2], "<i8").tobytes(), np.array([1, 2], "<i4").tobytes()),
        d=(b"", np.array([0, -1], "<i4").tobytes()),
    )
    msg.candidates.features.add(name="", ids=b"", lengths=np.zeros(2, "<i4").tobytes())
    msg.candidates.features.add(name="c", ids=b"", lengths=np.zeros(2, "<i4").tobytes())
    msg.id_space = pb.ID_SPACE_UNSPECIFIED
    msg.candidate_request = b"\x01"
    with pytest.raises(InputError) as info:
        convert.batch_from_proto(msg, _NO_KEYS)
    text = str(info.value)
    assert "8 problems" in text
    for part in (
        "id_space",
        "candidates.features[a].ids",
        "candidates.features[b].lengths",
        "c: lengths sum to 3 but there are 2 ids",
        "d: lengths must be >= 0",
        "feature 4 of candidates has no name",
        "'c' is listed twice",
        "candidate_request is 1 bytes",
    ):
        assert part in text


def test_unknown_features_pass_through_to_the_runtime() -> None:
    # The runtime's frontend names unknown features together with the ones it serves.
    msg = _raw(1, f_new=(np.array([5], "<i8").tobytes(), np.array([1], "<i4").tobytes()))
    msg.id_space = pb.ID_SPACE_ID_KEY
    batch = convert.batch_from_proto(msg, _NO_KEYS)
    assert batch.candidates.features == ("f_new",) and batch.candidates.values.tolist() == [5]


def test_result_round_trip() -> None:
    rng = np.random.default_rng(0)
    cand = KeyedTensor(
        keys=["x", "y"],
        length_per_key=[3, 2],
        values=torch.from_numpy(rng.standard_normal((4, 5), dtype=np.float32)),
    )
    req = KeyedTensor(
        keys=["u"], length_per_key=[2], values=torch.tensor([[1.5, -2.25]], dtype=torch.float32)
    )
    seq = JaggedTensor(
        values=torch.arange(12, dtype=torch.float32).reshape(3, 4),
        lengths=torch.tensor([2, 0, 1], dtype=torch.int64),
    )
    for result in (LookupResult(cand), LookupResult(cand, req, sequences={"hist": seq})):
        msg = convert.lookup_response(result, "sha256:x")
        assert msg.plan_fingerprint == "sha256:x"
        back = convert.result_from_proto(
            pb.LookupResponse.FromString(msg.SerializeToString()), None, "here"
        )
        assert back.candidates.keys() == ["x", "y"] and back.candidates.length_per_key() == [3, 2]
        assert torch.equal(back.candidates.values(), cand.values())
        assert (back.requests is None) == (result.requests is None)
        if back.requests is not None:
            assert torch.equal(back.requests.values(), req.values())
        assert list(back.sequences) == list(result.sequences)
        if back.sequences:
            assert back.sequences["hist"].lengths().tolist() == [2, 0, 1]
            assert torch.equal(back.sequences["hist"].values(), seq.values())
        back.candidates.values()[0, 0] = 7.0  # fresh, writable


def test_inconsistent_response_is_a_store_error() -> None:
    msg = pb.LookupResponse(
        candidates=pb.PooledEmbeddings(num_rows=2, features=["x"], dims=[3], values=b"\x00" * 20)
    )
    with pytest.raises(StoreError) as info:
        convert.result_from_proto(msg, None, "srv Lookup")
    assert info.value.source == "srv Lookup candidates"


def test_description_round_trip() -> None:
    plan = mixed_plan(precision=Precision.INT8)
    d = convert.describe_model(
        plan,
        LookupLayout.from_plan(plan),
        world_size=2,
        max_receive_bytes=10,
        max_send_bytes=20,
    )
    assert [f.name for f in d.features] == ["f_cw", "f_rw", "f_rw_user", "f_tw", "f_twrw"]
    assert d.feature("f_rw").pooling is PoolingType.MEAN
    assert d.feature("f_cw").precision is Precision.INT8
    msg = pb.DescribeModelResponse.FromString(convert.description_to_proto(d).SerializeToString())
    assert convert.description_from_proto(msg, "here") == d


def test_sequence_features_are_described_unpooled() -> None:
    plan = sequence_plan()
    d = convert.describe_model(
        plan, LookupLayout.from_plan(plan), world_size=2, max_receive_bytes=1, max_send_bytes=1
    )
    pooling = {f.name: f.pooling for f in d.features}
    assert pooling == {
        "f_pool": PoolingType.SUM,
        "hist_ads": PoolingType.NONE,
        "hist_ads_cand": PoolingType.NONE,
        "hist_cats": PoolingType.NONE,
        "hist_geo": PoolingType.NONE,
    }
    msg = convert.description_to_proto(d)
    assert convert.description_from_proto(msg, "here") == d
