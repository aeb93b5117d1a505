"""``adrank calibrate`` through ``main([...])``: the errors file, the printed table, the refusal of
a checkpoint written for another plan, and the round trip into ``adrank plan``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adrank.cli import main
from adrank.planfile import read_plan, read_precision_errors
from adrank.types import Precision

pytestmark = pytest.mark.integration

_TABLES = [
    {"name": "ad", "num_embeddings": 20000, "dim": 16, "pooling_factor": 3},
    {"name": "site", "num_embeddings": 500, "dim": 16, "pooling_factor": 1},
    {"name": "user", "num_embeddings": 3000, "dim": 6, "pooling_factor": 1},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("calibrate")
    tables = root / "tables.json"
    tables.write_text(json.dumps(_TABLES), encoding="utf-8")
    base = ["-q", "plan", "--tables", str(tables), "--device-memory", "64MiB", "--no-png"]
    assert main([*base, "--devices", "2", "-o", str(root / "plan2")]) == 0
    assert main([*base, "--devices", "1", "-o", str(root / "plan1")]) == 0
    ckpt = root / "ckpt"
    assert main(["-q", "checkpoint", "init", "--plan", str(root / "plan2"), "-o", str(ckpt)]) == 0
    return {"root": root, "tables": tables, "plan2": root / "plan2", "plan1": root / "plan1",
            "ckpt": ckpt}  # fmt: skip


def test_calibrate_writes_errors_the_planner_reads(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "errors.json"
    rc = main(
        ["-q", "calibrate", "--checkpoint", str(setup["ckpt"]), "--plan", str(setup["plan2"]),
         "-o", str(out), "--bags", "256", "--seed", "3"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    plan = read_plan(setup["plan2"])
    errors = read_precision_errors(out)
    for t in plan.tables:
        assert t.name in printed
        assert t.name in errors and all(f.name in errors for f in t.features)
        e = errors[t.name]
        assert set(e) <= {Precision.FP16, Precision.INT8, Precision.INT4}
        assert 0 < e[Precision.FP16] < e[Precision.INT8]
        if Precision.INT4 in e:
            assert e[Precision.INT4] > e[Precision.INT8]
    assert "err int8" in printed and "ms fp32" in printed and str(out) in printed

    # Re-plan with the measured errors: each table takes the fewest bits within the threshold.
    threshold = 0.01
    rc = main(
        ["-q", "plan", "--tables", str(setup["tables"]), "--devices", "2", "--device-memory",
         "64MiB", "--no-png", "--precision-errors", str(out), "--max-precision-error",
         str(threshold), "-o", str(tmp_path / "replanned")]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    replanned = read_plan(tmp_path / "replanned")
    for t in replanned.tables:
        # The re-plan may name or merge tables differently: its features' entries still apply.
        worst = {
            p: max(errors[f.name][p] for f in t.features)
            for p in (Precision.INT4, Precision.INT8, Precision.FP16)
            if all(p in errors[f.name] for f in t.features)
        }
        fits = [p for p, e in sorted(worst.items(), key=lambda kv: kv[0].bits) if e <= threshold]
        assert t.precision is (fits[0] if fits else Precision.FP32), t.name
    # Without measured errors the planner's default is fp16; the measurements moved tables to int8.
    assert Precision.INT8 in {t.precision for t in replanned.tables}


def test_calibrate_precisions_flag_and_dims_int4_cannot_store(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "e.json"
    rc = main(
        ["-q", "calibrate", "--checkpoint", str(setup["ckpt"]), "--plan", str(setup["plan2"]),
         "-o", str(out), "--bags", "64", "--precisions", "fp32,int4"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    errors = read_precision_errors(out)
    assert errors["user"] == {Precision.FP32: 0.0}  # dim 6: FBGEMM stores int4 at dims % 4 only
    assert errors["ad"][Precision.FP32] == 0.0 and errors["ad"][Precision.INT4] > 0
    assert "n/a" in capsys.readouterr().out


def test_checkpoint_of_another_plan_is_refused_with_both_fingerprints(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "errors.json"
    rc = main(
        ["-q", "calibrate", "--checkpoint", str(setup["ckpt"]), "--plan", str(setup["plan1"]),
         "-o", str(out)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert read_plan(setup["plan1"]).inputs_fingerprint in err
    assert read_plan(setup["plan2"]).inputs_fingerprint in err
    assert "adrank checkpoint reshard" in err
    assert not out.exists()


def test_bad_flags_exit_2(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["-q", "calibrate", "--checkpoint", str(setup["ckpt"]), "--plan", str(setup["plan2"])]
    base += ["-o", str(tmp_path / "e.json")]
    assert main([*base, "--precisions", "fp16,int3"]) == 2
    assert "--precisions" in capsys.readouterr().err
    assert main([*base, "--bags", "0"]) == 2
    assert "--bags" in capsys.readouterr().err
