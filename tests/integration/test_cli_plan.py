"""``adrank plan`` through ``main([...])``: both input forms, topology files, explain, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adrank.cli import main
from adrank.planfile import read_plan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plan_stats")
    assert (
        main(
            [
                "-q",
                "synth",
                "-o",
                str(root / "logs"),
                "--rows",
                "20000",
                "--days",
                "4",
                "--ad-vocab",
                "20000",
                "--user-vocab",
                "5000",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "-q",
                "stats",
                str(root / "logs" / "impressions.parquet"),
                "-o",
                str(root / "stats.json"),
            ]
        )
        == 0
    )
    return root / "stats.json"


@pytest.fixture()
def tables_file(tmp_path: Path) -> Path:
    path = tmp_path / "tables.json"
    path.write_text(
        json.dumps(
            [
                {"name": "C1", "num_embeddings": 1460, "dim": 16, "pooling_factor": 1},
                {"name": "C2", "num_embeddings": 200_000, "dim": 16, "pooling_factor": 3},
                {"name": "C3", "num_embeddings": 30, "dim": 16, "pooling_factor": 1},
            ]
        )
    )
    return path


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_plan_from_stats_writes_plan_report_and_sidecars(
    stats_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan"
    rc = main(
        [
            "-q",
            "plan",
            "--stats",
            str(stats_file),
            "--devices",
            "2",
            "--device-memory",
            "64MiB",
            "-o",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    plan = read_plan(out / "plan.json")
    assert {d.rank for d in plan.devices} == {0, 1}
    assert (out / "report.md").read_text().startswith("# Shard plan")
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    files = {
        f.dedicated_keys_file for t in plan.tables for f in t.features if f.dedicated_keys_file
    }
    assert files and all(np.load(out / f).dtype == np.int64 for f in files)
    printed = capsys.readouterr().out
    assert "memory imbalance" in printed and str(out) in printed


def test_plan_from_tables_with_topology_and_explain(
    tables_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topo = tmp_path / "topo.yaml"
    topo.write_text(
        "hosts:\n  - {name: a, devices: 2, device_memory: 8MiB}\n"
        "  - {name: b, devices: [{memory: 4MiB}]}\n"
    )
    out = tmp_path / "plan"
    rc = main(
        [
            "-q",
            "plan",
            "--tables",
            str(tables_file),
            "--topology",
            str(topo),
            "-o",
            str(out),
            "--explain",
            "C2",
            "--default-precision",
            "int8",
            "--no-png",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    plan = read_plan(out)
    assert [d.memory_bytes for d in plan.devices] == [8 << 20, 8 << 20, 4 << 20]
    assert all(t.precision.value == "int8" for t in plan.tables)
    table, _ = plan.table_of_feature("C2")
    assert table.num_rows == 200_000  # a tables file: rows = num_embeddings, nothing pruned
    text = capsys.readouterr().out
    assert "feature 'C2'" in text and table.name in text and "int8" in text
    assert not (out / "report.png").exists()


def test_explain_without_output_writes_nothing(
    tables_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "-q",
            "plan",
            "--tables",
            str(tables_file),
            "--devices",
            "1",
            "--device-memory",
            "1GiB",
            "--explain",
            "C1",
        ]
    )
    assert rc == 0
    assert "feature 'C1'" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [tables_file]


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--stats", "missing.json", "--devices", "1", "--device-memory", "1GiB"], "missing.json"),
        (["--devices", "1", "--device-memory", "lots"], "--device-memory"),
        (["--devices", "1"], "--device-memory"),
        (["--devices", "1", "--device-memory", "1GiB", "--sharding", "C1=diagonal"], "diagonal"),
        (["--devices", "1", "--device-memory", "1GiB", "--explain", "C9"], "C9"),
        (["--devices", "1", "--device-memory", "1GiB", "--dim-override", "C9=8"], "C9"),
        (
            [
                "--devices",
                "1",
                "--device-memory",
                "1GiB",
                "--mode",
                "training",
                "--default-precision",
                "int4",
            ],
            "--default-precision",
        ),
    ],
)
def test_bad_inputs_exit_2_naming_the_culprit(
    args: list[str],
    culprit: str,
    tables_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if "--stats" not in args:
        args = ["--tables", str(tables_file), *args]
    out = tmp_path / "plan"
    assert main(["-q", "plan", *args, "-o", str(out)]) == 2
    assert culprit in capsys.readouterr().err
    assert not out.exists() and not _leftovers(tmp_path)


def test_malformed_tables_file_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps([{"name": "C1", "num_embeddings": "many", "pooling_factor": 1}]))
    assert (
        main(
            [
                "-q",
                "plan",
                "--tables",
                str(bad),
                "--devices",
                "1",
                "--device-memory",
                "1GiB",
                "-o",
                str(tmp_path / "plan"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "t.json:tables[0].num_embeddings" in err


def test_insufficient_memory_keeps_the_old_plan(
    tables_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan"
    assert (
        main(
            [
                "-q",
                "plan",
                "--tables",
                str(tables_file),
                "--devices",
                "2",
                "--device-memory",
                "64MiB",
                "-o",
                str(out),
                "--no-png",
            ]
        )
        == 0
    )
    before = (out / "plan.json").read_bytes()
    capsys.readouterr()
    rc = main(
        [
            "-q",
            "plan",
            "--tables",
            str(tables_file),
            "--devices",
            "2",
            "--device-memory",
            "1MiB",
            "--memory-budget",
            "1GiB",
            "-o",
            str(out),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "rank 0" in err and "rank 1" in err and "available" in err
    assert (out / "plan.json").read_bytes() == before and not _leftovers(tmp_path)


def test_sequence_features_get_unpooled_tables_the_runtime_serves(
    stats_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from adrank.types import PoolingType
    from embed_store.layout import LookupLayout

    out = tmp_path / "plan"
    args = ["-q", "plan", "--stats", str(stats_file), "--devices", "2", "--device-memory", "64MiB"]
    rc = main([*args, "--sequence-features", "category,creative_type", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    plan = read_plan(out / "plan.json")
    for t in plan.tables:
        names = {f.name for f in t.features}
        if names & {"category", "creative_type"}:
            assert t.pooling is PoolingType.NONE and names <= {"category", "creative_type"}
        else:
            assert t.pooling is PoolingType.SUM
    layout = LookupLayout.from_plan(plan)
    seq = {f for f, s in zip(layout.features, layout.sequence, strict=True) if s}
    assert seq == {"category", "creative_type"}
    rc = main([*args, "--sequence-features", "no_such_feature", "-o", str(tmp_path / "bad")])
    assert rc == 2 and "no_such_feature" in capsys.readouterr().err
