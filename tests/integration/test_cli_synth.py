"""``adrank synth`` end to end: files, summary, determinism and exit codes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from adrank.cli import main
from adrank.cli.synth import DEFAULTS
from adrank.data import SynthConfig
from adrank.data.synth_config import format_start
from adrank.formats import read_json_document

pytestmark = pytest.mark.integration

SMALL = ["--rows", "10k", "--ad-vocab", "50k", "--user-vocab", "2000", "-q"]
FILES = ("impressions.parquet", "requests.parquet", "snapshots/users.parquet",
         "snapshots/ads.parquet")


def test_synth_writes_logs_and_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "logs"
    assert main(["synth", "-o", str(out), "--seed", "3", *SMALL]) == 0
    text = capsys.readouterr().out
    assert "10,000 impressions" in text and "CTR" in text and "cold-start" in text
    for f in FILES:
        assert f in text
        assert (out / f).is_file()
    assert pq.read_metadata(out / "impressions.parquet").num_rows == 10_000
    doc = read_json_document(out / "manifest.json", "adrank.synth", (1,))
    assert doc["config"]["seed"] == 3 and doc["config"]["ad_vocab"] == 50_000
    assert doc["counts"]["rows"] == 10_000


def test_same_flags_same_data_other_seed_other_data(tmp_path: Path) -> None:
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert main(["synth", "-o", str(tmp_path / name), "--seed", seed, *SMALL]) == 0
    for f in FILES:
        a, b = pq.read_table(tmp_path / "a" / f), pq.read_table(tmp_path / "b" / f)
        assert a.equals(b), f
    c = pq.read_table(tmp_path / "c" / "impressions.parquet")
    assert not c.equals(pq.read_table(tmp_path / "a" / "impressions.parquet"))


def test_flags_reach_the_generator(tmp_path: Path) -> None:
    out = tmp_path / "o"
    rc = main(["synth", "-o", str(out), "--days", "3", "--start", "2025-06-01T00:00:00Z",
               "--candidates", "8", "--seq-len", "7", "--categories", "50",
               "--ad-churn", "0.1", "--user-churn", "0", "--row-group-rows", "2048", *SMALL])
    assert rc == 0
    cfg = read_json_document(out / "manifest.json", "adrank.synth", (1,))["config"]
    assert cfg["num_days"] == 3 and cfg["start"] == "2025-06-01T00:00:00Z"
    assert cfg["candidates_mean"] == 8 and cfg["seq_len"] == 7 and cfg["num_categories"] == 50
    req = pq.read_table(out / "requests.parquet")
    assert max(len(x) for x in req["user_clicked_ads"].to_pylist()) == 7
    assert max(req["hour"].to_pylist()) <= 23
    imp = pq.read_table(out / "impressions.parquet")
    assert imp["category"].to_numpy().max() < 50
    assert pq.ParquetFile(out / "impressions.parquet").num_row_groups >= 4


def test_non_empty_out_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "old.txt").write_text("x")
    assert main(["synth", "-o", str(tmp_path), *SMALL]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "--overwrite" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]
    assert main(["synth", "-o", str(tmp_path), "--overwrite", *SMALL]) == 0
    assert (tmp_path / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("flags", "culprits"),
    [
        (["--rows", "0"], ["--rows"]),
        (["--rows", "ten"], ["--rows"]),
        (["--days", "-1"], ["--days"]),
        (["--start", "yesterday"], ["--start"]),
        (["--ad-churn", "1.5"], ["--ad-churn"]),
        (["--seq-len", "0", "--candidates", "0", "--user-vocab", "0"],
         ["--seq-len", "--candidates", "--user-vocab"]),
        (["--ad-vocab", "100"], ["--ad-vocab"]),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], culprits: list[str]
) -> None:
    out = tmp_path / "o"
    assert main(["synth", "-o", str(out), "-q", *flags]) == 2
    err = capsys.readouterr().err
    for flag in culprits:
        assert flag in err, flag
    assert not out.exists()


def test_out_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--rows", "10"]) == 2
    assert "--out" in capsys.readouterr().err


def test_cli_defaults_match_the_library() -> None:
    config = SynthConfig()
    expect = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    expect["start"] = format_start(expect.pop("start_ts_s"))
    assert expect == DEFAULTS
