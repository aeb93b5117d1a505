"""`adrank prune`: remaps for a plan's drop_dead tables from counts over real (synthetic) logs."""

from pathlib import Path

import numpy as np
import pytest

from adrank.cli import main
from adrank.planfile import read_plan
from adrank.remap import read_remaps
from adrank.types import PruningAction

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prune")
    assert main(["demo", "-q", "--rows", "100000", "-o", str(root / "demo")]) == 0
    return root / "demo"


def test_prune_writes_remaps_and_updates_the_plan(
    planned: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_dir = planned / "plan"
    before = read_plan(plan_dir)
    dropping = [t.name for t in before.tables if t.pruning.action is PruningAction.DROP_DEAD]
    assert dropping, "the demo plan should prune at least one table"
    logs = [
        str(planned / "logs" / "impressions.parquet"),
        str(planned / "logs" / "requests.parquet"),
    ]
    capsys.readouterr()
    assert main(["prune", "-q", "--plan", str(plan_dir), *logs, "--holdout-days", "2"]) == 0
    out = capsys.readouterr().out
    assert "held-out" in out

    after = read_plan(plan_dir, require_remaps=True)
    remaps = read_remaps(plan_dir, expected_fingerprint=after.inputs_fingerprint)
    assert sorted(remaps) == sorted(dropping)
    for t in after.tables:
        if t.name in dropping:
            remap = remaps[t.name]
            kept = remap.hashed_to_row[remap.hashed_to_row >= 0]
            # Every kept hashed id has its own row inside the table; the fallback stays free.
            assert len(np.unique(kept)) == len(kept) == remap.num_kept
            assert kept.max(initial=-1) < t.num_rows and t.fallback_row not in set(kept.tolist())
        else:
            assert t.remap_file is None
    assert "Quality on a later window" in (plan_dir / "pruning.md").read_text()


def test_prune_bad_input_is_exit_2_and_leaves_the_plan(
    planned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_dir = planned / "plan"
    plan_json = (plan_dir / "plan.json").read_text()
    logs = str(planned / "logs" / "impressions.parquet")
    assert main(["prune", "-q", "--plan", str(plan_dir), logs, "--holdout-days", "-1"]) == 2
    assert "--holdout-days" in capsys.readouterr().err
    assert main(["prune", "-q", "--plan", str(tmp_path / "nope"), logs]) == 2
    assert "nope" in capsys.readouterr().err
    assert (plan_dir / "plan.json").read_text() == plan_json
