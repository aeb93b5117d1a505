"""The feature server in process: servicer, interceptors, limits, auth and the client.

grpc_testing is not installed in this environment, so these tests run a real in-process server on
127.0.0.1:0 (the style guide's second option) and call it through FeatureClient or the raw stub.
Stores are built in tmp_path with the ingest API; the server's clock is fixed, so TTL results
do not depend on the wall clock.
"""

import ast
import inspect
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adrank.errors import InputError, NotFoundError, StoreError
from adrank.hashing import string_id_keys
from feature_service import (
    DeadlineExceededError,
    FeatureClient,
    FeatureServer,
    FeatureStore,
    ServerConfig,
    UnauthenticatedError,
    build_server,
    ingest_parquet,
)
from feature_service import convert as C
from feature_service import server as server_module
from feature_service.auth import is_loopback_host, load_token
from feature_service.interceptors import SOURCE_METADATA_KEY, ErrorMappingInterceptor
from feature_service.pb.v1 import feature_store_pb2_grpc as pb_grpc

S = 1_000_000  # microseconds per second
CLOCK_US = 700 * S  # the servers' fixed clock
TOKEN = "s3cret-token_0123456789"


def _write(path: Path, columns: dict[str, pa.Array]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("served")
    users = _write(
        d / "users.parquet",
        {
            "user_id": pa.array([1, 1, 2], pa.int64()),
            "ts": pa.array([100, 200, 50], pa.int64()),
            "age": pa.array([30, 31, 40], pa.int64()),
            "score": pa.array([0.5, 0.75, None], pa.float32()),
        },
    )
    ads = _write(
        d / "ads.parquet",
        {
            "ad_id": pa.array([10, 11, 12, 10], pa.int64()),
            "ts": pa.array([100, 100, 100, 150], pa.int64()),
            "ctr": pa.array([0.1, 0.2, None, 0.4], pa.float32()),
            "tags": pa.array([[1, 2], [], None, [3]], pa.list_(pa.int64())),
            "title": pa.array(["a", None, "c", "a2"], pa.string()),
            "emb": pa.array([[1, 2], [3, 4], [5, 6], [7, 8]], pa.list_(pa.float32(), 2)),
        },
    )
    pages = _write(
        d / "pages.parquet",
        {
            "page_id": pa.array(["home", "about"]),
            "ts": pa.array([10, 10], pa.int64()),
            "views": pa.array([1000, 7], pa.int64()),
        },
    )
    store = d / "store"
    with FeatureStore.open(store) as s:
        ingest_parquet(
            s, [users], group="users", entity_column="user_id", timestamp_column="ts", ttl_s=600
        )
        ingest_parquet(s, [ads], group="ads", entity_column="ad_id", timestamp_column="ts")
        ingest_parquet(s, [pages], group="pages", entity_column="page_id", timestamp_column="ts")
    return store


@pytest.fixture(scope="module")
def reference(store_path: Path) -> Iterator[FeatureStore]:
    """The same store opened read-only in the test, to compare the server's answers with."""
    with FeatureStore.open(store_path, read_only=True) as s:
        yield s


def _serve(store_path: Path, **overrides: Any) -> FeatureServer:
    config = ServerConfig(store_path=str(store_path), port=0, **overrides)
    server = build_server(config, clock_us=lambda: CLOCK_US)
    server.start()
    return server


@pytest.fixture(scope="module")
def server(store_path: Path) -> Iterator[FeatureServer]:
    s = _serve(store_path)
    yield s
    s.stop(0)


@pytest.fixture(scope="module")
def client(server: FeatureServer) -> Iterator[FeatureClient]:
    with FeatureClient(server.address, timeout_s=10) as c:
        yield c


def _same(a, b) -> None:
    assert a.group == b.group
    assert a.to_arrow().equals(b.to_arrow())


# ---------------------------------------------------------------------- reads


def test_get_features_matches_the_store(client: FeatureClient, reference: FeatureStore) -> None:
    frame = client.get_features("ads", [12, 10, 99, 10])
    _same(frame, reference.get_latest("ads", [12, 10, 99, 10]))
    assert frame.found.tolist() == [True, True, False, True]
    assert frame["ctr"].to_pylist()[1] == pytest.approx(0.4)
    assert frame["tags"].to_pylist() == [None, [3], None, [3]]
    assert frame["title"].to_pylist() == ["c", "a2", None, "a2"]
    assert frame["emb"].values.shape == (4, 2)


def test_feature_subset_comes_back_in_request_order(client: FeatureClient) -> None:
    frame = client.get_features("ads", np.array([11], dtype=np.int64), ["title", "ctr"])
    assert list(frame.columns) == ["title", "ctr"]
    assert frame["ctr"].to_pylist() == [pytest.approx(0.2)]


def test_as_of_reads_return_the_version_valid_then(
    client: FeatureClient, reference: FeatureStore
) -> None:
    frame = client.get_features("ads", [10, 11], as_of_us=120 * S)
    _same(frame, reference.get_as_of("ads", [10, 11], 120 * S))
    assert frame["title"].to_pylist() == ["a", None]
    assert frame.event_us.tolist() == [100 * S, 100 * S]
    before = client.get_features("ads", [10], as_of_us=99 * S)
    assert before.found.tolist() == [False]


def test_ttl_applies_at_the_server_clock_unless_the_request_gives_now(
    client: FeatureClient,
) -> None:
    # users has a 600 s TTL; the server clock is 700 s: user 2's only version (50 s) has expired.
    frame = client.get_features("users", [1, 2])
    assert frame.found.tolist() == [True, False]
    assert frame["age"].to_pylist() == [31, None]
    frame = client.get_features("users", [1, 2], now_us=300 * S)
    assert frame.found.tolist() == [True, True]


def test_string_id_groups_hash_their_ids(client: FeatureClient) -> None:
    frame = client.get_features("pages", ["about", "nowhere"])
    assert frame.found.tolist() == [True, False]
    assert frame["views"].to_pylist() == [7, None]
    assert frame.entity_keys.tolist() == string_id_keys(["about", "nowhere"]).tolist()


def test_combined_request_reads_user_and_candidates_in_one_call(
    client: FeatureClient, reference: FeatureStore
) -> None:
    got = client.get_request(
        user_group="users",
        user_id=1,
        candidate_group="ads",
        candidate_ids=[11, 12, 10],
        candidate_features=["ctr", "tags"],
        now_us=CLOCK_US,
    )
    want = reference.get_request(
        user_group="users",
        user_id=1,
        candidate_group="ads",
        candidate_ids=[11, 12, 10],
        candidate_features=["ctr", "tags"],
        now_us=CLOCK_US,
    )
    _same(got.user, want.user)
    _same(got.candidates, want.candidates)
    assert len(got.user) == 1 and got.user["age"].to_pylist() == [31]
    assert list(got.candidates.columns) == ["ctr", "tags"]


def test_combined_request_as_of(client: FeatureClient) -> None:
    got = client.get_request(
        user_group="users", user_id=1, candidate_group="ads", candidate_ids=[10], as_of_us=150 * S
    )
    assert got.user["age"].to_pylist() == [30]
    assert got.candidates["title"].to_pylist() == ["a2"]


def test_health_reports_serving(client: FeatureClient) -> None:
    assert client.health() == "SERVING"
    assert client.health(server_module.SERVICE_NAME) == "SERVING"
    with pytest.raises(NotFoundError):
        client.health("no.such.Service")


# ---------------------------------------------------------------------- bad requests


def test_unknown_group_is_not_found_naming_it(client: FeatureClient) -> None:
    with pytest.raises(NotFoundError) as info:
        client.get_features("adz", [1])
    assert "'adz'" in info.value.message and "ads, pages, users" in info.value.message
    assert info.value.source == "adz" and "adrank ingest" in (info.value.hint or "")


def test_unknown_feature_is_not_found_naming_it(client: FeatureClient) -> None:
    with pytest.raises(NotFoundError) as info:
        client.get_features("ads", [1], ["ctr", "cpm"])
    assert "'cpm'" in info.value.message and info.value.source == "ads.cpm"
    with pytest.raises(NotFoundError, match="'agee'"):
        client.get_request(
            user_group="users",
            user_id=1,
            candidate_group="ads",
            candidate_ids=[10],
            user_features=["agee"],
        )


def test_malformed_ids_are_invalid_argument(client: FeatureClient) -> None:
    with pytest.raises(InputError) as info:
        client.get_features("ads", ["10"])  # string ids for an integer-id group
    assert "integer entity ids" in info.value.message and info.value.source == "ads entity ids"
    with pytest.raises(InputError) as info:
        client.get_features("pages", ["home", ""])
    assert "empty" in info.value.message and info.value.source == "ids"


def test_raw_status_codes_and_error_metadata(server: FeatureServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.FeatureServiceStub(channel)
        req = C.request_features_request(
            user_group="users", user_id=1, candidate_group="ads", candidate_ids=[10]
        )
        req.user_id.int_ids.append(2)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetRequestFeatures(req, timeout=10)
        err: Any = info.value
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "exactly one user id, found 2" in err.details()
        assert dict(err.trailing_metadata())[SOURCE_METADATA_KEY] == b"user_id"
        with pytest.raises(grpc.RpcError) as info:
            stub.GetFeatures(C.features_request("nope", [1]), timeout=10)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- limits and deadlines


def test_oversized_request_is_resource_exhausted(store_path: Path) -> None:
    server = _serve(store_path, max_receive_bytes=1024)
    try:
        with FeatureClient(server.address, timeout_s=10) as c:
            assert c.get_features("ads", [10]).found.tolist() == [True]
            with pytest.raises(InputError) as info:
                c.get_features("ads", np.arange(2000))
            assert "Received message larger than max" in info.value.message
            assert "size limits" in (info.value.hint or "")
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.FeatureServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raw:
                stub.GetFeatures(C.features_request("ads", np.arange(2000)), timeout=10)
            assert raw.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    finally:
        server.stop(0)


def test_oversized_response_is_resource_exhausted(store_path: Path) -> None:
    server = _serve(store_path, max_send_bytes=2048)
    try:
        with FeatureClient(server.address, timeout_s=10) as c:
            assert len(c.get_features("ads", [10, 11])) == 2
            with pytest.raises(InputError) as info:
                c.get_features("ads", [10, 11, 12] * 100)
            assert "Sent message larger than max" in info.value.message
            assert "--max-send-bytes" in (info.value.hint or "")
    finally:
        server.stop(0)


class _FakeContext:
    """The ServicerContext surface the interceptor uses."""

    def __init__(self, remaining_s: float, active: bool = True) -> None:
        self.remaining_s = remaining_s
        self.active = active
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.trailing: tuple = ()

    def time_remaining(self) -> float:
        return self.remaining_s

    def is_active(self) -> bool:
        return self.active

    def code(self) -> grpc.StatusCode | None:
        return self.aborted[0] if self.aborted else None

    def set_trailing_metadata(self, md: tuple) -> None:
        self.trailing = md

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")  # grpc raises a bare Exception here


def _wrapped(behavior: Any) -> Any:
    handler = grpc.unary_unary_rpc_method_handler(behavior)
    details = type("D", (), {"method": "/x/Y", "invocation_metadata": ()})()
    return ErrorMappingInterceptor().intercept_service(lambda _d: handler, details).unary_unary


def test_a_call_whose_deadline_passed_is_not_served() -> None:
    calls: list[Any] = []
    handle = _wrapped(lambda req, ctx: calls.append(req) or "response")
    ctx = _FakeContext(remaining_s=0.0)
    with pytest.raises(RuntimeError, match="aborted"):
        handle("request", ctx)
    assert calls == [] and ctx.aborted is not None
    assert ctx.aborted[0] is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "before it was served" in ctx.aborted[1]
    # A cancelled call is treated the same way; a live one is served.
    with pytest.raises(RuntimeError):
        handle("request", _FakeContext(remaining_s=5.0, active=False))
    assert handle("request", _FakeContext(remaining_s=5.0)) == "response" and calls == ["request"]


def test_a_deadline_passing_while_serving_is_deadline_exceeded() -> None:
    ctx = _FakeContext(remaining_s=5.0)

    def slow(req: Any, c: _FakeContext) -> str:
        c.remaining_s = 0.0  # the deadline passes while the store is read
        return "late"

    with pytest.raises(RuntimeError):
        _wrapped(slow)("request", ctx)
    assert ctx.aborted is not None and ctx.aborted[0] is grpc.StatusCode.DEADLINE_EXCEEDED


class _BlockingStore:
    """A store whose reads wait until the test releases them."""

    path = "blocking-store"

    def __init__(self, real: FeatureStore) -> None:
        self.real = real
        self.release = threading.Event()

    def get_batch(self, reads: Any, **kw: Any) -> Any:
        self.release.wait(30)
        return self.real.get_batch(reads, **kw)


def test_client_deadline_is_deadline_exceeded(reference: FeatureStore) -> None:
    blocking = _BlockingStore(reference)
    server = build_server(ServerConfig(store_path="", port=0), store=blocking)  # type: ignore[arg-type]
    server.start()
    try:
        with FeatureClient(server.address, timeout_s=0.2) as c:
            c.wait_ready(10)
            with pytest.raises(DeadlineExceededError) as info:
                c.get_features("ads", [10])
            assert "GetFeatures" in info.value.message and info.value.grpc_code_name == (
                "DEADLINE_EXCEEDED"
            )
    finally:
        blocking.release.set()
        server.stop(0)


# ---------------------------------------------------------------------- error mapping


class _BrokenStore:
    path = "broken-store"

    def get_batch(self, reads: Any, **kw: Any) -> Any:
        raise ZeroDivisionError("secret internal detail")


class _FlakyStore:
    path = "flaky-store"

    def __init__(self, real: FeatureStore, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.calls = 0

    def get_batch(self, reads: Any, **kw: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreError("RocksDB could not read", source="flaky-store")
        return self.real.get_batch(reads, **kw)


def _serve_store(store: Any) -> FeatureServer:
    server = build_server(ServerConfig(store_path="", port=0), store=store)
    server.start()
    return server


def test_unexpected_errors_are_internal_with_a_logged_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = _serve_store(_BrokenStore())
    try:
        with (
            FeatureClient(server.address, timeout_s=10) as c,
            caplog.at_level(logging.ERROR),
            pytest.raises(StoreError) as info,
        ):
            c.get_features("ads", [1])
        assert info.value.message.startswith("INTERNAL")
        assert "secret internal detail" not in str(info.value)  # nothing leaks to clients
        logged = [
            r for r in caplog.records if r.name == "adrank.rpc" and r.levelno >= logging.ERROR
        ]
        assert logged and logged[0].exc_info is not None
        assert logged[0].exc_info[0] is ZeroDivisionError
    finally:
        server.stop(0)


def test_unavailable_is_retried_then_reported(reference: FeatureStore) -> None:
    flaky = _FlakyStore(reference, failures=2)
    server = _serve_store(flaky)
    try:
        with FeatureClient(server.address, timeout_s=10, retries=2, backoff_s=0.001) as c:
            assert c.get_features("ads", [10]).found.tolist() == [True]
            assert flaky.calls == 3
            flaky.failures, flaky.calls = 100, 0
            with pytest.raises(StoreError) as info:
                c.get_features("ads", [10])
            assert flaky.calls == 3 and "after 3 attempts" in info.value.message
            assert info.value.source == "flaky-store"
        # Other codes are never retried.
        flaky.calls = 0
        with FeatureClient(server.address, timeout_s=10, retries=5) as c:
            flaky.failures = 0
            with pytest.raises(InputError):
                c.get_features("ads", ["x"])
            assert flaky.calls == 1
    finally:
        server.stop(0)


def test_no_server_is_unavailable_after_retries() -> None:
    # Port 1 on loopback refuses connections at once.
    with (
        FeatureClient("127.0.0.1:1", timeout_s=10, retries=1, backoff_s=0.001) as c,
        pytest.raises(StoreError) as info,
    ):
        c.get_features("ads", [10])
    assert "unavailable after 2 attempts" in info.value.message
    assert info.value.source == "127.0.0.1:1 GetFeatures"


def test_servicer_methods_are_thin() -> None:
    """No try/except and no RocksDB in the servicer: errors belong to the interceptor."""
    source = inspect.getsource(server_module.FeatureServicer)
    tree = ast.parse(source)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Try)]
    assert "rocksdict" not in inspect.getsource(server_module)


# ---------------------------------------------------------------------- auth and TLS


def test_token_is_required_when_configured(store_path: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    server = _serve(store_path, token_path=str(token_file))
    try:
        with FeatureClient(server.address, timeout_s=10, token=TOKEN) as c:
            assert c.get_features("ads", [10]).found.tolist() == [True]
        with FeatureClient(server.address, timeout_s=10) as c:
            with pytest.raises(UnauthenticatedError) as info:
                c.get_features("ads", [10])
            assert "no token was sent" in info.value.message
            assert info.value.exit_code == 2
            assert c.health() == "SERVING"  # health checks need no token
        with (
            FeatureClient(server.address, timeout_s=10, token=TOKEN + "x") as c,
            pytest.raises(UnauthenticatedError, match="the token is wrong"),
        ):
            c.get_request(user_group="users", user_id=1, candidate_group="ads", candidate_ids=[10])
    finally:
        server.stop(0)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "feature-host.internal"])
def test_non_loopback_host_requires_tls(store_path: Path, host: str) -> None:
    with pytest.raises(InputError) as info:
        build_server(ServerConfig(store_path=str(store_path), host=host, port=0))
    assert info.value.source == "host" and "requires TLS" in info.value.message
    assert "--tls-cert" in (info.value.hint or "")


def test_config_problems_are_reported_together(store_path: Path, tmp_path: Path) -> None:
    config = ServerConfig(
        store_path=str(store_path),
        host="0.0.0.0",
        port=70000,
        tls_cert_path=str(tmp_path / "missing.pem"),
        max_send_bytes=0,
    )
    with pytest.raises(InputError) as info:
        build_server(config)
    text = str(info.value)
    assert "4 problems" in text
    for part in ("both a certificate and a private key", "missing.pem", "0..65535", "max_send"):
        assert part in text


def test_missing_store_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        build_server(ServerConfig(store_path=str(tmp_path / "nope"), port=0))
    assert info.value.source == str(tmp_path / "nope")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_load_token(tmp_path: Path) -> None:
    f = tmp_path / "t"
    f.write_text(f"  {TOKEN}\n")
    assert load_token(f) == TOKEN
    with pytest.raises(NotFoundError):
        load_token(tmp_path / "missing")
    for bad, why in (("\n", "empty"), ("two words", "printable ASCII")):
        f.write_text(bad)
        with pytest.raises(InputError, match=why) as info:
            load_token(f)
        assert info.value.source == str(f)
