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
    args = ["demo", "-q", "--rows", "5000", "--replay", "20", "-o", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    stages = ("synth", "stats", "plan", "prune", "ingest", "join", "train", "serve + replay")
    for i, stage in enumerate(stages, 1):
        assert f"[{i}/8] {stage}" in printed
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
    # The behaviour sequences are unpooled tables; pruned tables carry their remaps.
    pooling = {f.name: t.pooling.value for t in plan.tables for f in t.features}
    assert pooling["user_clicked_ads"] == "NONE" and pooling["ad_id"] == "SUM"
    assert all(t.remap_file for t in plan.tables if t.num_rows < t.hashed_rows)
    # Trained model, served and replayed: every routed decision logged.
    model = out / "model"
    for name in ("ranker.json", "tiers.pt", "router.json", "metrics.json", "checkpoint"):
        assert (model / name).exists(), name
    metrics = json.loads((model / "metrics.json").read_text())
    assert set(metrics["tiers"]) == {"small", "medium", "large"}
    assert all(0.0 <= m["auc"] <= 1.0 for m in metrics["tiers"].values())
    decisions = (out / "router_log.jsonl").read_text().splitlines()
    assert len(decisions) >= 20
    assert {json.loads(d)["tier"] for d in decisions} <= {0, 1, 2}
    assert "routed: AUC" in printed and "always-large" in printed

    # A second run reuses its own directory.
    assert main(args) == 0


def test_demo_refuses_a_directory_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "-q", "--rows", "5000", "-o", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]
