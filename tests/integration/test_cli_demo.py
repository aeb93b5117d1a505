"""`adrank demo` (what `make demo` runs): the whole pipeline on built-in data, end to end."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from adrank.cli import main
from adrank.planfile import read_plan

pytestmark = pytest.mark.integration


def test_demo_runs_every_stage_and_leaves_consistent_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "-q", "--rows", "5000", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    for stage in ("[1/5] synth", "[2/5] stats", "[3/5] plan", "[4/5] ingest", "[5/5] join"):
        assert stage in printed
    stats = json.loads((out / "stats.json").read_text())
    manifest = json.loads((out / "logs" / "manifest.json").read_text())
    assert stats["kind"] == "adrank.stats"
    # Every sparse column of the logs got statistics, and every one of them is planned.
    assert {"ad_id", "user_id", "user_clicked_ads"} <= set(stats["features"])
    plan = read_plan(out / "plan")
    planned = {f.name for t in plan.tables for f in t.features}
    assert planned == set(stats["features"])
    assert manifest["counts"]["rows"] == 5000
    assert (out / "plan" / "report.md").exists() and (out / "plan" / "report.png").exists()
    # Training data: every impression kept (left join), with point-in-time user and ad features.
    train = pq.read_table(out / "train.parquet")
    assert train.num_rows == 5000
    assert train.column("label").equals(
        pq.read_table(out / "logs" / "impressions.parquet").column("label")
    )
    assert {c for c in train.column_names if c.startswith(("user__", "ad__"))}
    assert train.column("ad__category").null_count < train.num_rows

    # A second run reuses its own directory.
    assert main(["demo", "-q", "--rows", "5000", "-o", str(out)]) == 0


def test_demo_refuses_a_directory_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "-q", "--rows", "5000", "-o", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]
