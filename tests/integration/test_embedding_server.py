"""The gRPC Lookup service: in-process servers on 127.0.0.1:0 over a LocalLookup runtime, compared
exactly with the single-device runtime on the same checkpoint; raw ids (ID_KEY) against hashing
then HASHED; health, reflection, error codes, deadlines, size limits; and ``adrank
serve-embeddings`` in a subprocess with the real 2-rank sharded runtime."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adrank.cli import main
from adrank.errors import DeadlineExceededError, InputError, RankFailedError, StoreError
from adrank.idmap import load_dedicated_keys
from adrank.planfile import write_plan
from adrank.rpc import ListenConfig
from adrank.types import PoolingType, Precision, ShardingType, ShardPlan
from embed_store import server as server_module
from embed_store.batch import JaggedIds, LookupBatch, LookupResult
from embed_store.checkpoint import Checkpoint, init_checkpoint
from embed_store.client import EmbeddingClient, IdSpace
from embed_store.convert import IdKeyHasher, lookup_request
from embed_store.frontend import hash_id_keys
from embed_store.local_lookup import LocalLookup
from embed_store.pb.v1 import embeddings_pb2 as pb
from embed_store.pb.v1 import embeddings_pb2_grpc as pb_grpc
from embed_store.server import SERVICE_NAME, EmbeddingServer, build_server
from tests.plan_builders import feature, make_plan, mixed_plan, table
from tests.serve_cli import ServeCli

pytestmark = pytest.mark.integration

FINGERPRINT = "sha256:embedding-server-test"
DEDICATED_KEYS = np.array([5, 99], dtype=np.int64)
CANDIDATE_FEATURES = ("f_tw", "f_cw", "f_twrw", "f_rw", "hist_ads")
REQUEST_FEATURES = ("f_rw_user", "f_ded")


def _plan() -> ShardPlan:
    """mixed_plan (every sharding type over 2 ranks), a table with 2 dedicated rows and a
    row-wise sequence (unpooled) table."""
    ded = table(
        "t_ded",
        [
            feature(
                "f_ded",
                6,
                30,
                num_dedicated_rows=2,
                dedicated_row_offset=30,
                dedicated_keys_file="dedicated/f_ded.npy",
            )
        ],
        32,
        4,
        ShardingType.TABLE_WISE,
        [(0, 0, 32, 0, 4)],
    )
    seq = table(
        "s_hist",
        [feature("hist_ads", 7, 40, pooling=PoolingType.NONE)],
        40,
        4,
        ShardingType.ROW_WISE,
        [(0, 0, 20, 0, 4), (1, 20, 20, 0, 4)],
        pooling=PoolingType.NONE,
    )
    return make_plan([*mixed_plan().tables, ded, seq], 2, fingerprint=FINGERPRINT)


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("embedding_plan")
    (d / "dedicated").mkdir()
    np.save(d / "dedicated" / "f_ded.npy", DEDICATED_KEYS)
    write_plan(_plan(), d / "plan.json")
    return d


@pytest.fixture(scope="module")
def plan() -> ShardPlan:
    return _plan()


@pytest.fixture(scope="module")
def checkpoint(plan: ShardPlan, tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    return init_checkpoint(tmp_path_factory.mktemp("embedding_ckpt") / "ckpt", plan, seed=0)


@pytest.fixture(scope="module")
def reference(plan: ShardPlan, checkpoint: Checkpoint) -> Iterator[LocalLookup]:
    """The single-device runtime, in the test, to compare the server's answers with."""
    with LocalLookup.single_device(plan, checkpoint.read_block) as runtime:
        yield runtime


def _serve(
    plan: ShardPlan, checkpoint: Checkpoint, plan_dir: Path, **listen: Any
) -> EmbeddingServer:
    runtime = LocalLookup.single_device(plan, checkpoint.read_block)
    server = build_server(
        runtime,
        ListenConfig(port=0, **listen),
        hasher=IdKeyHasher.from_plan_dir(plan, plan_dir),
    )
    server.start()
    return server


@pytest.fixture(scope="module")
def server(plan: ShardPlan, checkpoint: Checkpoint, plan_dir: Path) -> Iterator[EmbeddingServer]:
    s = _serve(plan, checkpoint, plan_dir)
    yield s
    s.stop(0)


@pytest.fixture(scope="module")
def client(server: EmbeddingServer) -> Iterator[EmbeddingClient]:
    with EmbeddingClient(server.address, timeout_s=10) as c:
        yield c


def _random_bags(
    rng: np.random.Generator, plan: ShardPlan, features: tuple[str, ...], bags: int
) -> dict[str, list[list[int]]]:
    out = {}
    for f in features:
        rows = plan.table_of_feature(f)[0].hashed_rows
        out[f] = [rng.integers(0, rows, size=rng.integers(0, 5)).tolist() for _ in range(bags)]
    return out


def _assert_same(got: LookupResult, want: LookupResult) -> None:
    assert got.candidates.keys() == want.candidates.keys()
    assert got.candidates.length_per_key() == want.candidates.length_per_key()
    assert torch.equal(got.candidates.values(), want.candidates.values())
    assert (got.requests is None) == (want.requests is None)
    if got.requests is not None and want.requests is not None:
        assert got.requests.keys() == want.requests.keys()
        assert torch.equal(got.requests.values(), want.requests.values())
    assert list(got.sequences) == list(want.sequences)
    for name, jt in want.sequences.items():
        assert torch.equal(got.sequences[name].lengths(), jt.lengths())
        assert torch.equal(got.sequences[name].values(), jt.values())


# ---------------------------------------------------------------------- lookups


def test_lookup_equals_the_single_device_runtime(
    client: EmbeddingClient, reference: LocalLookup, plan: ShardPlan
) -> None:
    rng = np.random.default_rng(0)
    cand = _random_bags(rng, plan, CANDIDATE_FEATURES, 7)
    req = _random_bags(rng, plan, REQUEST_FEATURES, 3)
    owner = [0, 0, 1, 2, 2, 2, 1]
    got = client.lookup(cand, req, candidate_request=owner)
    want = reference.lookup(
        LookupBatch(
            JaggedIds.from_lists(cand),
            JaggedIds.from_lists(req),
            torch.tensor(owner, dtype=torch.int64),
        )
    )
    _assert_same(got, want)
    assert got.candidates.values().shape == (7, 8 + 16 + 4 + 8)  # the pooled features
    assert got.sequences["hist_ads"].values().shape == (sum(map(len, cand["hist_ads"])), 4)
    assert got.requests is not None and got.requests.values().shape == (3, 8 + 4)
    assert got.candidate_request is not None and got.candidate_request.tolist() == owner
    # The broadcast helper works on the client's result as on the runtime's.
    broadcast = got.request_for_candidates()
    assert broadcast is not None and torch.equal(
        broadcast.values()[4], got.requests.values()[owner[4]]
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), bags=st.integers(0, 6), requests=st.integers(0, 3))
def test_any_batch_equals_the_single_device_runtime(
    client: EmbeddingClient,
    reference: LocalLookup,
    plan: ShardPlan,
    seed: int,
    bags: int,
    requests: int,
) -> None:
    rng = np.random.default_rng(seed)
    features = tuple(f for f in CANDIDATE_FEATURES if rng.random() < 0.7) or ("f_tw",)
    cand = _random_bags(rng, plan, features, bags)
    req = _random_bags(rng, plan, REQUEST_FEATURES, requests) if requests else None
    owner = rng.integers(0, max(requests, 1), size=bags).tolist()
    got = client.lookup(cand, req, candidate_request=owner)
    want = reference.lookup(
        LookupBatch(
            JaggedIds.from_lists(cand),
            JaggedIds.from_lists(req) if req else None,
            torch.tensor(owner, dtype=torch.int64),
        )
    )
    _assert_same(got, want)


def test_id_keys_are_hashed_like_hash_id_keys(
    client: EmbeddingClient, plan: ShardPlan, plan_dir: Path
) -> None:
    rng = np.random.default_rng(1)
    keys = {
        "f_tw": rng.integers(-(2**63), 2**63 - 1, size=6, dtype=np.int64),
        "f_ded": np.array([5, 7, 99, -3], dtype=np.int64),  # 5 and 99 are dedicated keys
    }
    lengths = {"f_tw": [2, 0, 4], "f_ded": [1, 3, 0]}

    def bags(values: dict[str, np.ndarray]) -> dict[str, list[list[int]]]:
        out = {}
        for f, v in values.items():
            ends = np.cumsum(lengths[f])
            out[f] = [v[e - n : e].tolist() for e, n in zip(ends, lengths[f], strict=True)]
        return out

    slot = plan.table_of_feature("f_ded")[1]
    dedicated = load_dedicated_keys(plan_dir, slot)
    hashed = {
        f: hash_id_keys(plan, f, v, dedicated if f == "f_ded" else None) for f, v in keys.items()
    }
    # The dedicated keys land on the dedicated rows 30 and 31 (the keys file was found).
    assert hashed["f_ded"][[0, 2]].tolist() == [30, 31]
    by_key = client.lookup(bags(keys), id_space=IdSpace.ID_KEY)
    by_hash = client.lookup(bags(hashed), id_space=IdSpace.HASHED)
    _assert_same(by_key, by_hash)
    assert by_key.candidates.values().abs().sum() > 0


def test_describe_model(client: EmbeddingClient, plan: ShardPlan) -> None:
    model = client.describe()
    assert model.plan_fingerprint == FINGERPRINT and model.world_size == 1
    # Pooled features first (tables by name), then sequence features.
    names = ["f_cw", "f_ded", "f_rw", "f_rw_user", "f_tw", "f_twrw", "hist_ads"]
    assert [f.name for f in model.features] == names
    assert model.feature("hist_ads").pooling is PoolingType.NONE
    rw = model.feature("f_rw_user")
    assert (rw.table, rw.dim, rw.pooling, rw.hashed_rows) == ("t_rw", 8, PoolingType.MEAN, 60)
    ded = model.feature("f_ded")
    assert (ded.hashed_rows, ded.num_dedicated_rows, ded.precision) == (32, 2, Precision.FP32)
    assert model.feature("f_cw").pooling is PoolingType.SUM
    assert model.max_receive_bytes == 4 << 20


def test_health_and_reflection(server: EmbeddingServer, client: EmbeddingClient) -> None:
    assert client.health() == "SERVING"
    assert client.health(SERVICE_NAME) == "SERVING"
    with grpc.insecure_channel(server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflected = ProtoReflectionDescriptorDatabase(channel)
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= set(reflected.get_services())
        service = DescriptorPool(reflected).FindServiceByName(SERVICE_NAME)
        assert {m.name for m in service.methods} == {"Lookup", "DescribeModel"}


# ---------------------------------------------------------------------- bad requests


def _raw_request(**features: tuple[bytes, bytes]) -> pb.LookupRequest:
    req = pb.LookupRequest(id_space=pb.ID_SPACE_HASHED)
    req.candidates.batch_size = 2
    for name, (ids, lengths) in features.items():
        req.candidates.features.add(name=name, ids=ids, lengths=lengths)
    return req


def _i64(*v: int) -> bytes:
    return np.array(v, dtype="<i8").tobytes()


def _i32(*v: int) -> bytes:
    return np.array(v, dtype="<i4").tobytes()


@pytest.mark.parametrize(
    ("request_", "culprit", "says"),
    [
        (_raw_request(f_nope=(_i64(1), _i32(1, 0))), "f_nope", "unknown features"),
        (_raw_request(f_tw=(_i64(1, 100), _i32(1, 1))), "f_tw", "hashed-id range [0, 100)"),
        (
            _raw_request(f_cw=(_i64(1, 2, 3), _i32(1, 1))),
            "f_cw",
            "lengths sum to 2 but there are 3",
        ),
        (_raw_request(f_cw=(_i64(1), _i32(1))), "f_cw", "one int32 per bag"),
        (_raw_request(f_tw=(b"\x01\x02\x03", _i32(0, 0))), "f_tw", "not a multiple of 8"),
        (_raw_request(f_tw=(_i64(1), _i32(2, -1))), "f_tw", "lengths must be >= 0"),
    ],
    ids=["unknown", "out_of_range", "lengths_sum", "lengths_count", "ids_bytes", "negative"],
)
def test_bad_requests_are_invalid_argument_naming_the_feature(
    server: EmbeddingServer,
    client: EmbeddingClient,
    request_: pb.LookupRequest,
    culprit: str,
    says: str,
) -> None:
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.EmbeddingServiceStub(channel).Lookup(request_, timeout=10)
    err: Any = info.value
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert culprit in err.details() and says in err.details()
    # The client rebuilds the server's InputError (the place back in ``source``).
    with pytest.raises(InputError) as raised:
        client.call("Lookup", client._stub.Lookup, request_, None)
    assert raised.value.source and raised.value.source.startswith("candidates.")
    assert culprit in str(raised.value) and says in raised.value.message
    assert raised.value.message in err.details()


def test_every_problem_is_reported_at_once(client: EmbeddingClient) -> None:
    req = _raw_request(f_tw=(_i64(1), _i32(1)), f_cw=(_i64(1, 2), _i32(0, 1)))
    req.id_space = pb.ID_SPACE_UNSPECIFIED
    with pytest.raises(InputError) as info:
        client.call("Lookup", client._stub.Lookup, req, None)
    text = str(info.value)
    assert "3 problems" in text and "id_space" in text and "f_tw" in text and "f_cw" in text


def test_client_checks_bags_before_sending(client: EmbeddingClient) -> None:
    with pytest.raises(InputError) as info:
        client.lookup({"f_tw": [[1]], "f_cw": [[1], [2]]})
    assert info.value.source == "bags"


# ---------------------------------------------------------------------- limits and deadlines


class _BlockingRuntime:
    """A runtime whose first lookup waits until the test releases it; counts lookups."""

    def __init__(self, real: LocalLookup) -> None:
        self.real = real
        self.plan = real.plan
        self.layout = real.layout
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def lookup(self, batch: LookupBatch) -> LookupResult:
        self.calls += 1
        self.entered.set()
        self.release.wait(30)
        return self.real.lookup(batch)

    def close(self) -> None:
        pass


def test_a_call_past_its_deadline_is_not_computed(reference: LocalLookup) -> None:
    runtime = _BlockingRuntime(reference)
    server = build_server(runtime, ListenConfig(port=0), owns_runtime=False)
    server.start()
    request = lookup_request(JaggedIds.from_lists({"f_tw": [[1, 2]]}))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.EmbeddingServiceStub(channel)
            first = stub.Lookup.future(request, timeout=30)
            assert runtime.entered.wait(30)
            # The second call waits for the runtime until its deadline passes.
            second = stub.Lookup.future(request, timeout=0.3)
            with pytest.raises(grpc.RpcError) as info:
                second.result()
            assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
            runtime.release.set()
            assert first.result().candidates.num_rows == 1
    finally:
        runtime.release.set()
        server.stop(5)  # waits for the handler threads
    assert runtime.calls == 1  # the late call was answered without a lookup


def test_client_deadline_is_deadline_exceeded(reference: LocalLookup) -> None:
    runtime = _BlockingRuntime(reference)
    server = build_server(runtime, ListenConfig(port=0), owns_runtime=False)
    server.start()
    try:
        with EmbeddingClient(server.address, timeout_s=0.2) as c:
            c.wait_ready(10)
            with pytest.raises(DeadlineExceededError) as info:
                c.lookup({"f_tw": [[1]]})
            assert "Lookup" in info.value.message
    finally:
        runtime.release.set()
        server.stop(5)


def test_oversized_messages_are_resource_exhausted(
    plan: ShardPlan, checkpoint: Checkpoint, plan_dir: Path
) -> None:
    server = _serve(plan, checkpoint, plan_dir, max_receive_bytes=1024, max_send_bytes=2048)
    try:
        with EmbeddingClient(server.address, timeout_s=10) as c:
            assert c.lookup({"f_tw": [[1, 2]]}).candidates.values().shape == (1, 8)
            big = {"f_tw": [list(range(100)) for _ in range(3)]}  # 2400 bytes of ids
            with pytest.raises(InputError) as info:
                c.lookup(big)
            assert "Received message larger than max" in info.value.message
            assert "size limits" in (info.value.hint or "")
            many = {"f_cw": [[1]] * 40}  # 40 x 16 floats = 2560 bytes of response
            with pytest.raises(InputError) as info:
                c.lookup(many)
            assert "Sent message larger than max" in info.value.message
        with grpc.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as raw:
                pb_grpc.EmbeddingServiceStub(channel).Lookup(
                    lookup_request(JaggedIds.from_lists(big)), timeout=10
                )
            assert raw.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    finally:
        server.stop(0)


class _DeadRankRuntime(_BlockingRuntime):
    def lookup(self, batch: LookupBatch) -> LookupResult:
        self.calls += 1
        raise RankFailedError("batch 1 failed: rank 1 exited with code -9 (timeout 30 s)")


def test_a_failed_rank_is_unavailable(reference: LocalLookup) -> None:
    runtime = _DeadRankRuntime(reference)
    server = build_server(runtime, ListenConfig(port=0), owns_runtime=False)
    server.start()
    try:
        with (
            EmbeddingClient(server.address, timeout_s=10, retries=1, backoff_s=0.001) as c,
            pytest.raises(StoreError) as info,
        ):
            c.lookup({"f_tw": [[1]]})
        assert "rank 1 exited" in info.value.message and "UNAVAILABLE" in info.value.message
        assert runtime.calls == 2  # retried once
    finally:
        server.stop(0)


class _ClosableRuntime(_BlockingRuntime):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_non_loopback_without_tls_is_refused_and_the_runtime_closed(
    reference: LocalLookup,
) -> None:
    runtime = _ClosableRuntime(reference)
    with pytest.raises(InputError) as info:
        build_server(runtime, ListenConfig(host="0.0.0.0", port=0))
    assert info.value.source == "host" and "requires TLS" in info.value.message
    assert runtime.closed


def test_stop_closes_the_runtime_after_the_handlers(reference: LocalLookup) -> None:
    runtime = _ClosableRuntime(reference)
    runtime.release.set()
    server = build_server(runtime, ListenConfig(port=0))
    server.start()
    with EmbeddingClient(server.address, timeout_s=10) as c:
        c.lookup({"f_tw": [[3]]})
        server.stop(1)
        assert runtime.closed
        with pytest.raises(StoreError):
            c.lookup({"f_tw": [[3]]}, timeout_s=1)


def test_servicer_methods_are_thin() -> None:
    """No try/except in the servicer: errors belong to the interceptor."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(server_module.EmbeddingServicer))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Try)]


# ---------------------------------------------------------------------- the CLI


def test_cli_refuses_a_checkpoint_of_another_plan(
    plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = make_plan(list(_plan().tables), 2, fingerprint="sha256:another-plan")
    init_checkpoint(tmp_path / "other", other, seed=0)
    rc = main(
        ["serve-embeddings", "--plan", str(plan_dir), "--checkpoint", str(tmp_path / "other")]
        + ["--port", "0"]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "sha256:another-plan" in err and FINGERPRINT in err


def test_cli_refuses_a_public_address_without_tls_before_loading(
    plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        ["serve-embeddings", "--plan", str(plan_dir), "--checkpoint", str(tmp_path / "none")]
        + ["--host", "0.0.0.0", "--port", "0"]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "'0.0.0.0'" in err and "requires TLS" in err


def _Cli(tmp: Path, *args: str) -> ServeCli:  # noqa: N802 - reads like the class it builds
    return ServeCli(tmp, "serve-embeddings", *args)


@pytest.mark.multiprocess
@pytest.mark.timeout(180)
def test_cli_serves_the_two_rank_sharded_runtime(
    plan_dir: Path, checkpoint: Checkpoint, reference: LocalLookup, plan: ShardPlan, tmp_path: Path
) -> None:
    cli = _Cli(
        tmp_path,
        "--plan",
        str(plan_dir),
        "--checkpoint",
        str(checkpoint.directory),
        "--devices",
        "2",
        "--rank-timeout",
        "60",
    )
    try:
        rng = np.random.default_rng(2)
        cand = _random_bags(rng, plan, CANDIDATE_FEATURES, 9)
        req = _random_bags(rng, plan, REQUEST_FEATURES, 2)
        owner = rng.integers(0, 2, size=9).tolist()
        with EmbeddingClient(f"127.0.0.1:{cli.port}", timeout_s=60) as c:
            assert c.describe().world_size == 2
            got = c.lookup(cand, req, candidate_request=owner)
            keys = {"f_ded": [[5, 99, 12345]], "f_rw_user": [[-1]]}
            by_key = c.lookup({"f_tw": [[1]]}, keys, id_space=IdSpace.ID_KEY)
        want = reference.lookup(
            LookupBatch(
                JaggedIds.from_lists(cand),
                JaggedIds.from_lists(req),
                torch.tensor(owner, dtype=torch.int64),
            )
        )
        # Sharded partial sums may add in another order than one device: fp32 parity bound.
        assert got.candidates.keys() == want.candidates.keys()
        torch.testing.assert_close(
            got.candidates.values(), want.candidates.values(), rtol=0, atol=1e-6
        )
        assert got.requests is not None and want.requests is not None
        torch.testing.assert_close(got.requests.values(), want.requests.values(), rtol=0, atol=1e-6)
        assert torch.equal(
            got.sequences["hist_ads"].lengths(), want.sequences["hist_ads"].lengths()
        )
        torch.testing.assert_close(
            got.sequences["hist_ads"].values(),
            want.sequences["hist_ads"].values(),
            rtol=0,
            atol=1e-6,
        )
        assert by_key.requests is not None and by_key.requests.values().abs().sum() > 0
        out, err = cli.stop(signal.SIGTERM)
        assert cli.proc.returncode == 0, err
        assert f"on 127.0.0.1:{cli.port} with 2 devices" in out and "stopped on SIGTERM" in out
        assert "Traceback" not in err and "abort" not in err.lower()
    finally:
        cli.stop(signal.SIGKILL)
