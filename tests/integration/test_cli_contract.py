"""The CLI's contract: --help everywhere, exit codes 0/1/2, errors on stderr naming the culprit."""

import pytest

from adrank.cli import _SUBCOMMANDS, main

pytestmark = pytest.mark.integration

SUBCOMMANDS = [name for name, _module in _SUBCOMMANDS]


def test_top_level_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"adrank {name}" in out
    assert "-q" in out and "-v" in out


def test_missing_subcommand_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_unknown_subcommand_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "frobnicate" in capsys.readouterr().err


def test_unknown_flag_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "in.parquet", "-o", "out.json", "--no-such-flag"]) == 2
    assert "--no-such-flag" in capsys.readouterr().err
