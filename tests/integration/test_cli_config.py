"""``adrank config show`` and ``--config`` precedence (defaults < file < flags given) through the
real parser of every command that has a section; no server is started."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from adrank.cli import build_parser, main
from adrank.cli._config import SECTIONS, ConfigBinding, resolve_config
from adrank.config import DeploymentConfig, load_config

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "deployment.yaml"

# The required flags of each command (values are never opened: resolve_config reads only --config).
COMMANDS: dict[str, list[str]] = {
    "serve-features": ["serve-features", "--store", "s"],
    "serve-embeddings": ["serve-embeddings", "--plan", "p", "--checkpoint", "c"],
    "serve": ["serve", "--model", "m", "--plan", "p", "--store", "s"],
    "join": ["join", "--store", "s", "--examples", "e.parquet", "--groups", "user=user_id"]
    + ["--timestamp-column", "ts", "-o", "out.parquet"],
}
SECTION_OF = {
    "serve-features": "feature_server",
    "serve-embeddings": "embedding_server",
    "serve": "rank_server",
    "join": "join",
}


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def show(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    rc = main(["config", "show", *argv])
    out = capsys.readouterr().out
    assert rc == 0
    doc = yaml.safe_load(out)
    assert isinstance(doc, dict)
    return doc


def test_show_prints_the_defaults_as_a_loadable_file(capsys: pytest.CaptureFixture[str]) -> None:
    doc = show(capsys)
    assert list(doc) == list(SECTIONS)
    assert DeploymentConfig.model_validate(doc) == DeploymentConfig()


def test_show_merges_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text(
        "feature_server:\n  port: 6000\n  block_cache_bytes: 1GiB\njoin:\n  strategy: scan\n"
    )
    doc = show(capsys, "--config", str(path))
    effective = DeploymentConfig.model_validate(doc)
    assert effective == load_config(path)
    assert effective.feature_server.port == 6000
    assert doc["feature_server"]["block_cache_bytes"] == 1 << 30  # type: ignore[index]
    assert effective.rank_server == DeploymentConfig().rank_server


def test_show_one_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("join:\n  batch_rows: 1024\n")
    doc = show(capsys, "--config", str(path), "--section", "join")
    assert doc == {"join": load_config(path).join.model_dump(mode="json")}
    assert doc["join"]["batch_rows"] == 1024  # type: ignore[index]


def test_example_file_writes_every_key_and_loads_to_the_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    written = yaml.safe_load(EXAMPLE.read_text())
    defaults = DeploymentConfig()
    assert list(written) == list(SECTIONS)
    for section in SECTIONS:
        assert list(written[section]) == list(type(getattr(defaults, section)).model_fields)
    assert load_config(EXAMPLE) == defaults  # as its comments say: every value is the default
    doc = show(capsys, "--config", str(EXAMPLE))
    assert DeploymentConfig.model_validate(doc) == load_config(EXAMPLE)


def test_show_with_a_bad_file_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("rank_server:\n  port: 99999\n")
    assert main(["config", "show", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "rank_server.port" in err
    assert str(path) in err


def test_show_with_a_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "missing.yaml"
    assert main(["config", "show", "--config", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_flags_default_to_the_sections_code_defaults(command: str) -> None:
    # Without --config a command behaves as before the file existed: each flag's default (what
    # --help names) is the section's code default, and resolve_config puts exactly it on args.
    args = parse(COMMANDS[command])
    binding: ConfigBinding = args._config_binding
    assert binding.section == SECTION_OF[command]
    defaults = getattr(DeploymentConfig(), binding.section)
    assert binding.flag_defaults == {f: getattr(defaults, f) for f in binding.dests}
    for dest in binding.dests.values():
        assert not hasattr(args, dest)  # not passed: left to the precedence
    assert resolve_config(args) == defaults
    for field, dest in binding.dests.items():
        assert getattr(args, dest) == binding.flag_defaults[field]


@pytest.mark.parametrize("command", ["serve-features", "serve-embeddings", "serve"])
def test_file_beats_defaults_and_flags_beat_the_file(tmp_path: Path, command: str) -> None:
    section = SECTION_OF[command]
    path = tmp_path / "deploy.yaml"
    path.write_text(f"{section}:\n  port: 6000\n  max_workers: 3\n  max_send_bytes: 1MiB\n")
    argv = [*COMMANDS[command], "--config", str(path)]

    args = parse(argv)
    resolve_config(args)
    assert (args.port, args.workers, args.max_send_bytes) == (6000, 3, 1 << 20)
    assert args.host == "127.0.0.1"  # in neither: the code default

    args = parse([*argv, "--port", "7000"])
    effective = resolve_config(args)
    assert (args.port, args.workers) == (7000, 3)  # the flag wins, the file keeps the rest
    assert effective.port == 7000  # type: ignore[attr-defined]

    # A flag given with the default's value is still a flag given.
    default_port = getattr(DeploymentConfig(), section).port
    args = parse([*argv, "--port", str(default_port)])
    resolve_config(args)
    assert args.port == default_port


def test_store_false_flag_and_file_only_key(tmp_path: Path) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("feature_server:\n  ttl_at_server_clock: false\n  block_cache_bytes: 64MiB\n")
    args = parse([*COMMANDS["serve-features"], "--config", str(path)])
    effective = resolve_config(args)
    assert args.ttl_at_server_clock is False
    assert effective.block_cache_bytes == 64 << 20  # type: ignore[attr-defined]
    args = parse([*COMMANDS["serve-features"], "--no-server-clock-ttl"])
    resolve_config(args)
    assert args.ttl_at_server_clock is False


def test_join_precedence(tmp_path: Path) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("join:\n  batch_rows: 512\n  memory_budget_bytes: 1GiB\n  strategy: seek\n")
    args = parse([*COMMANDS["join"], "--config", str(path), "--strategy", "scan"])
    resolve_config(args)
    assert (args.batch_rows, args.memory_budget, args.strategy) == (512, 1 << 30, "scan")
    assert args.snapshot_dir is None


def test_join_with_a_bad_file_exits_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("join:\n  batch_rowz: 512\n")
    out = tmp_path / "out.parquet"
    argv = ["join", "--store", str(tmp_path / "no-store"), "--examples", "e.parquet"]
    argv += ["--groups", "user=user_id", "--timestamp-column", "ts", "-o", str(out)]
    assert main([*argv, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "join.batch_rowz" in err
    assert str(path) in err
    assert not out.exists()


def test_a_section_for_another_command_is_ignored(tmp_path: Path) -> None:
    # One file serves the whole deployment: `serve-features` reads only feature_server.
    path = tmp_path / "deploy.yaml"
    path.write_text("rank_server:\n  port: 7100\nfeature_server:\n  port: 7000\n")
    args = parse([*COMMANDS["serve-features"], "--config", str(path)])
    resolve_config(args)
    assert args.port == 7000
