"""``adrank checkpoint init|reshard|info`` via ``main([...])`` on plans made by ``adrank plan``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adrank.cli import main
from adrank.planfile import read_plan
from embed_store.checkpoint import open_checkpoint

pytestmark = pytest.mark.integration

_TABLES = [
    {"name": "C1", "num_embeddings": 1460, "dim": 16, "pooling_factor": 1},
    {"name": "C2", "num_embeddings": 20000, "dim": 16, "pooling_factor": 3},
    {"name": "C3", "num_embeddings": 300, "dim": 8, "pooling_factor": 1},
]


def make_plan_dir(root: Path, name: str, devices: int, *extra: str, dim_scale: int = 1) -> Path:
    """Run ``adrank plan --tables`` (no merging, so one table per feature) into ``root/name``."""
    tables = root / f"tables_{dim_scale}.json"
    tables.write_text(
        json.dumps([{**t, "dim": t["dim"] * dim_scale} for t in _TABLES]), encoding="utf-8"
    )
    out = root / name
    argv = ["-q", "plan", "--tables", str(tables), "--devices", str(devices)]
    argv += ["--device-memory", "64MiB", "--no-merge", "--no-png", "-o", str(out), *extra]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt_plans")
    return {
        "two": make_plan_dir(root, "two", 2, "--sharding", "t_C2=row_wise"),
        "one": make_plan_dir(root, "one", 1),
        "wider": make_plan_dir(root, "wider", 1, dim_scale=2),
    }


def test_init_info_and_reshard(
    plans: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two = read_plan(plans["two"])
    assert any(len(t.shards) == 2 for t in two.tables)  # a real multi-shard layout
    rc = main(["-q", "checkpoint", "init", "--plan", str(plans["two"]), "-o", str(tmp_path / "a")])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert two.inputs_fingerprint in out and "3 tables" in out

    a = open_checkpoint(tmp_path / "a", verify=True)
    assert a.plan_fingerprint == two.inputs_fingerprint
    assert {t.name: a.table_shape(t.name) for t in two.tables} == {
        t.name: (t.num_rows, t.dim) for t in two.tables
    }

    # --plan also takes the plan.json path; -q after the action works too.
    rc = main(
        ["checkpoint", "reshard", "--checkpoint", str(tmp_path / "a"), "--plan",
         str(plans["one"] / "plan.json"), "-o", str(tmp_path / "b"), "-q"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    b = open_checkpoint(tmp_path / "b")
    one = read_plan(plans["one"])
    assert b.plan_fingerprint == one.inputs_fingerprint != two.inputs_fingerprint
    for t in one.tables:
        assert tuple(s.spec for s in b.table(t.name).shards) == t.shards
        np.testing.assert_array_equal(b.read_table(t.name), a.read_table(t.name))
    capsys.readouterr()

    assert main(["-q", "checkpoint", "info", str(tmp_path / "b"), "--verify"]) == 0
    info = capsys.readouterr().out
    assert one.inputs_fingerprint in info and "sha256 verified" in info
    for t in one.tables:
        assert t.name in info
    assert f"{b.nbytes:,} bytes" in info


def test_init_with_the_same_seed_matches_across_plans(
    plans: dict[str, Path], tmp_path: Path
) -> None:
    for name in ("two", "one"):
        argv = ["-q", "checkpoint", "init", "--plan", str(plans[name]), "--seed", "9"]
        assert main([*argv, "-o", str(tmp_path / name)]) == 0
    a, b = open_checkpoint(tmp_path / "two"), open_checkpoint(tmp_path / "one")
    for t in a.table_names:
        np.testing.assert_array_equal(a.read_table(t), b.read_table(t))


def test_reshard_into_other_dims_is_refused_naming_tables(
    plans: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["-q", "checkpoint", "init", "--plan", str(plans["one"]), "-o", str(tmp_path / "a")])
        == 0
    )
    rc = main(
        ["-q", "checkpoint", "reshard", "--checkpoint", str(tmp_path / "a"), "--plan",
         str(plans["wider"]), "-o", str(tmp_path / "b")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "'t_C1' is 1460 x 16 in the checkpoint but 1460 x 32 in the plan" in err
    assert not (tmp_path / "b").exists()


def test_bad_input_exits_2_naming_the_culprit(
    plans: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "checkpoint", "info", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    argv = ["-q", "checkpoint", "init", "--plan", str(plans["one"]), "-o", str(tmp_path / "x")]
    assert main([*argv, "--seed", "-3"]) == 2
    assert "--seed" in capsys.readouterr().err
    assert main([*argv, "--scale", "0"]) == 2
    assert "--scale" in capsys.readouterr().err
    assert main(["-q", "checkpoint"]) == 2  # an action is required
    capsys.readouterr()

    assert main(argv) == 0
    shard = next((tmp_path / "x" / "tables" / "t_C2").glob("*.npy"))
    shard.write_bytes(shard.read_bytes()[:-40])  # truncated
    assert main(["-q", "checkpoint", "info", str(tmp_path / "x")]) == 2
    assert shard.name in capsys.readouterr().err
