"""`adrank serve-features` for real: the CLI in a subprocess on 127.0.0.1:0 (the bound port comes
back through --port-file), queried with FeatureClient, the standard health service and server
reflection, stopped with SIGTERM; TLS with a shared token; the CLI's refusals."""

import argparse
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from adrank.cli import main
from adrank.errors import StoreError
from feature_service import (
    FeatureClient,
    FeatureStore,
    ServerConfig,
    UnauthenticatedError,
    ingest_parquet,
)
from feature_service.server import SERVICE_NAME, validate_server_config
from tests.serve_cli import ServeCli

pytestmark = pytest.mark.integration

TOKEN = "integration-token-0123456789"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fs")
    users = d / "users.parquet"
    ads = d / "ads.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([1, 2], pa.int64()),
                "ts": pa.array([100, 100], pa.int64()),
                "age": pa.array([31, 40], pa.int64()),
            }
        ),
        users,
    )
    pq.write_table(
        pa.table(
            {
                "ad_id": pa.array([10, 11, 12], pa.int64()),
                "ts": pa.array([100, 100, 100], pa.int64()),
                "ctr": pa.array([0.125, 0.25, None], pa.float32()),
                "tags": pa.array([[1], [], [2, 3]], pa.list_(pa.int64())),
            }
        ),
        ads,
    )
    path = d / "store"
    with FeatureStore.open(path) as s:
        ingest_parquet(s, [users], group="users", entity_column="user_id", timestamp_column="ts")
        ingest_parquet(s, [ads], group="ads", entity_column="ad_id", timestamp_column="ts")
    return path


def _Cli(tmp: Path, *args: str) -> ServeCli:  # noqa: N802 - reads like the class it builds
    return ServeCli(tmp, "serve-features", *args)


@pytest.fixture
def cli_server(store: Path, tmp_path: Path) -> Iterator[_Cli]:
    server = _Cli(tmp_path, "--store", str(store))
    yield server
    server.stop(signal.SIGKILL)


def test_cli_server_serves_features_health_and_reflection(cli_server: _Cli) -> None:
    address = f"127.0.0.1:{cli_server.port}"
    with FeatureClient(address, timeout_s=10) as client:
        client.wait_ready(30)
        frame = client.get_features("ads", [12, 10, 99])
        assert frame.found.tolist() == [True, True, False]
        assert frame["ctr"].to_pylist() == [None, 0.125, None]
        assert frame["tags"].to_pylist() == [[2, 3], [1], None]
        request = client.get_request(
            user_group="users", user_id=2, candidate_group="ads", candidate_ids=[11, 10]
        )
        assert request.user["age"].to_pylist() == [40]
        assert request.candidates["ctr"].to_pylist() == [0.25, 0.125]
        assert client.health() == "SERVING"
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflected = ProtoReflectionDescriptorDatabase(channel)
        services = set(reflected.get_services())
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
        service = DescriptorPool(reflected).FindServiceByName(SERVICE_NAME)
        assert {m.name for m in service.methods} == {"GetFeatures", "GetRequestFeatures"}
    out, err = cli_server.stop(signal.SIGTERM)
    assert cli_server.proc.returncode == 0, err
    assert f"on 127.0.0.1:{cli_server.port}" in out and "plaintext" in out
    assert "stopped on SIGTERM" in out


def test_sigint_stops_gracefully_too(cli_server: _Cli) -> None:
    out, err = cli_server.stop(signal.SIGINT)
    assert cli_server.proc.returncode == 0, err
    assert "stopped on SIGINT" in out


def test_cli_refuses_a_public_address_without_tls(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["serve-features", "--store", str(store), "--host", "0.0.0.0", "--port", "0"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'0.0.0.0'" in err and "requires TLS" in err and "--tls-cert" in err


def test_cli_reports_a_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["serve-features", "--store", str(tmp_path / "nope"), "--port", "0"])
    assert rc == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err


def test_cli_checks_the_port_file_directory_first(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port_file = tmp_path / "missing-dir" / "port"
    rc = main(
        ["serve-features", "--store", str(store), "--port", "0", "--port-file", str(port_file)]
    )
    assert rc == 2
    assert str(port_file) in capsys.readouterr().err


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"]
        + ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_adrank_serve_reaches_a_tls_feature_server_with_its_token(
    store: Path, tmp_path: Path, tls_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`adrank serve`'s --features-ca / --features-server-name / --features-token-file build the
    client it reads features with; without the token the server refuses it."""
    from adrank.cli import build_parser
    from adrank.cli._config import resolve_config
    from adrank.cli.serve import feature_client, feature_client_problems

    def parse(argv: list[str]) -> argparse.Namespace:
        args = build_parser().parse_args(argv)
        resolve_config(args)  # as run() does: defaults < --config file < flags given
        return args

    cert, key = tls_files
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    server = _Cli(
        tmp_path, "--store", str(store), "--tls-cert", str(cert), "--tls-key", str(key),
        "--token-file", str(token_file),
    )  # fmt: skip
    try:
        base = ["serve", "--model", "m", "--plan", "p", "--features", f"127.0.0.1:{server.port}"]
        tls = ["--features-ca", str(cert), "--features-server-name", "localhost"]
        args = parse([*base, *tls, "--features-token-file", str(token_file)])
        assert feature_client_problems(args) == []
        with feature_client(args) as client:
            assert client.get_features("ads", [11])["ctr"].to_pylist() == [0.25]
        args = parse([*base, *tls])
        with feature_client(args) as client, pytest.raises(UnauthenticatedError):
            client.get_features("ads", [11])
    finally:
        server.stop()
    # Client flags without --features, or a missing certificate file, are named before startup.
    local = build_parser().parse_args(
        ["serve", "--model", "m", "--plan", "p", "--store", "s", "--features-ca", str(cert)]
    )
    assert [p.source for p in feature_client_problems(local)] == ["--features-ca"]
    missing = build_parser().parse_args(
        ["serve", "--model", "m", "--plan", "p", "--features", "h:1", "--features-ca", "nope.pem"]
    )
    assert [p.source for p in feature_client_problems(missing)] == ["nope.pem"]
    rc = main(["serve", "--model", "m", "--plan", "p", "--store", "s", "--features-tls"])
    assert rc == 2 and "--features-tls" in capsys.readouterr().err


def test_tls_with_a_shared_token(store: Path, tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    server = _Cli(
        tmp_path,
        "--store",
        str(store),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--token-file",
        str(token_file),
    )
    try:
        address = f"127.0.0.1:{server.port}"
        roots = cert.read_bytes()
        with FeatureClient(
            address,
            timeout_s=10,
            root_certificates=roots,
            server_name_override="localhost",
            token=TOKEN,
        ) as client:
            assert client.get_features("ads", [11])["ctr"].to_pylist() == [0.25]
        with (
            FeatureClient(
                address, timeout_s=10, root_certificates=roots, server_name_override="localhost"
            ) as client,
            pytest.raises(UnauthenticatedError, match="no token was sent"),
        ):
            client.get_features("ads", [11])
        # A plaintext client cannot talk to the TLS port at all.
        with (
            FeatureClient(address, timeout_s=5, retries=0) as client,
            pytest.raises(StoreError),
        ):
            client.get_features("ads", [11])
        out, err = server.stop()
        assert server.proc.returncode == 0, err
        assert "TLS, token required" in out
    finally:
        server.stop(signal.SIGKILL)


def test_public_address_is_accepted_with_tls(store: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    validate_server_config(
        ServerConfig(
            store_path=str(store), host="0.0.0.0", tls_cert_path=str(cert), tls_key_path=str(key)
        )
    )
