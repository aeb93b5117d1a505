"""adrank.config: the deployment file's models, defaults, sizes and errors (key path + file)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from adrank.config import (
    DeploymentConfig,
    EmbeddingServerConfig,
    FeatureServerConfig,
    JoinConfig,
    RankServerConfig,
    ServerListenConfig,
    load_config,
    parse_config,
)
from adrank.errors import EXIT_USAGE, InputError, NotFoundError

_MODELS = (
    DeploymentConfig,
    ServerListenConfig,
    FeatureServerConfig,
    EmbeddingServerConfig,
    RankServerConfig,
    JoinConfig,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.yaml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> tuple[InputError, Path]:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_config(path)
    assert info.value.exit_code == EXIT_USAGE
    return info.value, path


@pytest.mark.parametrize(
    "text",
    ["", "# only a comment\n", "join:\n", "feature_server: {}\njoin: null\n"],
    ids=["empty", "comment", "bare-section", "empty-sections"],
)
def test_empty_file_or_sections_are_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_config(write(tmp_path, text)) == DeploymentConfig()


def test_file_values_override_only_their_keys(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "feature_server:\n  port: 6000\n  host: 10.0.0.5\n"
            "rank_server:\n  metrics_port: 9100\n  router_log: /var/log/router.jsonl\n"
            "join:\n  strategy: seek\n  snapshot_dir: snaps\n",
        )
    )
    assert config.feature_server.port == 6000
    assert config.feature_server.host == "10.0.0.5"
    assert config.feature_server.max_workers == 8  # untouched key keeps its default
    assert config.rank_server.metrics_port == 9100
    assert config.rank_server.router_log == "/var/log/router.jsonl"
    assert config.join.strategy == "seek"
    assert config.join.snapshot_dir == "snaps"
    assert config.embedding_server == EmbeddingServerConfig()


@pytest.mark.parametrize(
    ("written", "expected_bytes"),
    [
        ("16MiB", 16 << 20),
        ("16M", 16 << 20),
        ("2GB", 2_000_000_000),
        ("1.5KiB", 1536),
        ("4096", 4096),
        (8192, 8192),
    ],
)
def test_sizes_take_unit_strings_or_ints(
    tmp_path: Path, written: object, expected_bytes: int
) -> None:
    text = yaml.safe_dump(
        {
            "feature_server": {"max_receive_bytes": written, "block_cache_bytes": written},
            "join": {"memory_budget_bytes": written},
        }
    )
    config = load_config(write(tmp_path, text))
    assert config.feature_server.max_receive_bytes == expected_bytes
    assert config.feature_server.block_cache_bytes == expected_bytes
    assert config.join.memory_budget_bytes == expected_bytes


def test_unknown_key_names_its_path_and_the_file(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "feature_server:\n  port: 6000\n  prot: 6001\n")
    assert "feature_server.prot" in err.message
    assert "feature_server.port" in err.message  # the suggestion
    assert err.source == f"{path}:3"
    assert err.hint is not None and "ttl_at_server_clock" in err.hint  # the known keys


def test_unknown_section_is_named(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "join: {}\nfeature_servers:\n  port: 1\n")
    assert "feature_servers" in err.message
    assert err.source == f"{path}:2"


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        ("feature_server:\n  port: 70000\n", "feature_server.port"),
        ("embedding_server:\n  port: -1\n", "embedding_server.port"),
        ("feature_server:\n  port: '6000'\n", "feature_server.port"),  # strict: no coercion
        ("feature_server:\n  port: true\n", "feature_server.port"),
        ("rank_server:\n  max_workers: 0\n", "rank_server.max_workers"),
        ("embedding_server:\n  devices: 0\n", "embedding_server.devices"),
        ("rank_server:\n  features_timeout_s: 0\n", "rank_server.features_timeout_s"),
        ("rank_server:\n  metrics_port: 65536\n", "rank_server.metrics_port"),
        ("feature_server:\n  grace_s: -1\n", "feature_server.grace_s"),
        ("feature_server:\n  host: ''\n", "feature_server.host"),
        ("feature_server:\n  ttl_at_server_clock: 'no'\n", "feature_server.ttl_at_server_clock"),
        ("feature_server:\n  tls_cert_path: 5\n", "feature_server.tls_cert_path"),
        ("feature_server:\n  max_send_bytes: lots\n", "feature_server.max_send_bytes"),
        ("feature_server:\n  max_send_bytes: 0\n", "feature_server.max_send_bytes"),
        ("join:\n  batch_rows: 0\n", "join.batch_rows"),
        ("join:\n  strategy: fastest\n", "join.strategy"),
        ("join: [1, 2]\n", "join"),
    ],
)
def test_bad_value_names_its_key_path(tmp_path: Path, text: str, key_path: str) -> None:
    err, path = load_error(tmp_path, text)
    assert key_path in err.message
    assert err.source is not None and err.source.startswith(str(path))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    err, path = load_error(
        tmp_path, "feature_server:\n  port: 70000\n  max_workers: 0\njoin:\n  strateg: scan\n"
    )
    for key_path in ("feature_server.port", "feature_server.max_workers", "join.strateg"):
        assert key_path in err.message
    assert err.source == str(path)


def test_repeated_key_is_an_error(tmp_path: Path) -> None:
    # PyYAML alone would keep the second value silently.
    err, path = load_error(tmp_path, "join:\n  batch_rows: 10\n  batch_rows: 20\n")
    assert "join.batch_rows" in err.message
    assert err.source == f"{path}:3"


@pytest.mark.parametrize(
    ("text", "line"),
    [("join:\n  batch_rows: [1,\n", 3), ("join:\n\tbatch_rows: 1\n", 2), ("a: 1\n---\nb: 2\n", 2)],
    ids=["unclosed", "tab", "two-documents"],
)
def test_yaml_syntax_error_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    err, path = load_error(tmp_path, text)
    assert "YAML" in err.message
    assert err.source == f"{path}:{line}"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "- feature_server\n")
    assert "top level" in err.message
    assert err.source == str(path)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(NotFoundError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert info.value.exit_code == EXIT_USAGE


def test_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert info.value.source == str(tmp_path)


@pytest.mark.parametrize("model", _MODELS, ids=lambda m: m.__name__)
def test_every_model_forbids_extra_keys_and_is_frozen(model: type[BaseModel]) -> None:
    assert model.model_config.get("extra") == "forbid"
    assert model.model_config.get("frozen") is True


def test_models_cannot_be_changed() -> None:
    config = DeploymentConfig()
    with pytest.raises(ValidationError):
        config.join = JoinConfig(batch_rows=1)  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.feature_server.port = 1  # type: ignore[misc]
    assert config.feature_server.port == 50061


def test_defaults_match_the_feature_server_and_join() -> None:
    from feature_service import pit_join
    from feature_service.server import ServerConfig

    defaults = {
        f.name: f.default for f in dataclasses.fields(ServerConfig) if f.name != "store_path"
    }
    assert FeatureServerConfig().model_dump() == defaults
    assert JoinConfig().memory_budget_bytes == pit_join.DEFAULT_JOIN_MEMORY_BYTES
    assert JoinConfig().batch_rows == pit_join.DEFAULT_JOIN_BATCH_ROWS
    assert JoinConfig().strategy == pit_join.JoinStrategy.AUTO.value


def test_defaults_match_the_embedding_and_rank_servers() -> None:
    from adrank import rpc
    from embed_store import server as embed_server
    from embed_store.sharded_runtime import RuntimeConfig
    from ranker import server as rank_server

    runtime = RuntimeConfig(plan_path="p", checkpoint_path="c")
    for section, module in (
        (EmbeddingServerConfig(), embed_server),
        (RankServerConfig(), rank_server),
    ):
        assert section.port == module.DEFAULT_PORT
        assert section.max_workers == module.DEFAULT_MAX_WORKERS
        assert section.threads_per_rank == runtime.threads_per_rank
        assert section.rank_timeout_s == runtime.timeout_s
        assert section.host == rpc.DEFAULT_HOST
        assert section.max_receive_bytes == rpc.DEFAULT_MAX_RECEIVE_BYTES
        assert section.max_send_bytes == rpc.DEFAULT_MAX_SEND_BYTES
        assert section.grace_s == rpc.DEFAULT_GRACE_S


_sizes = st.one_of(
    st.integers(1, 1 << 40),
    st.builds(
        lambda n, u: f"{n}{u}", st.integers(1, 4096), st.sampled_from(["K", "MiB", "GB", ""])
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    port=st.integers(0, 65535),
    workers=st.integers(1, 256),
    receive=_sizes,
    memory=_sizes,
    strategy=st.sampled_from(["auto", "scan", "seek"]),
    metrics_port=st.none() | st.integers(0, 65535),
    grace_s=st.floats(0, 600, allow_nan=False),
)
def test_a_dumped_config_parses_back_to_itself(
    port: int,
    workers: int,
    receive: int | str,
    memory: int | str,
    strategy: str,
    metrics_port: int | None,
    grace_s: float,
) -> None:
    doc = {
        "feature_server": {"port": port, "max_receive_bytes": receive, "grace_s": grace_s},
        "rank_server": {"max_workers": workers, "metrics_port": metrics_port},
        "join": {"strategy": strategy, "memory_budget_bytes": memory},
    }
    config = parse_config(yaml.safe_dump(doc), "generated.yaml")
    assert config.feature_server.port == port
    assert config.join.memory_budget_bytes >= 1
    # What `adrank config show` prints (sizes in bytes) is a file that loads to the same config.
    dumped = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    assert parse_config(dumped, "shown.yaml") == config
