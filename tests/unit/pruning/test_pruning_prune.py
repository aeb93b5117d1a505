"""prune_plan on a hand-built plan: exact remaps and report; files the runtime reads back."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from adrank.errors import InputError
from adrank.planfile import read_plan, write_plan
from adrank.remap import read_remaps
from adrank.types import PruningAction, PruningPolicy, ShardingType
from pruning import (
    NEVER_ACCESSED_S,
    AccessCounts,
    PruneConfig,
    empty_access_counts,
    protected_rows,
    prune_plan,
    prune_table,
    render_pruning_report,
    write_pruned_plan,
)
from tests.plan_builders import feature, make_plan, table

N = NEVER_ACCESSED_S


def _plan():
    # t_ad: 10 hashed ids (8 hashed + 2 dedicated at 8..9), room for 6 rows incl. fallback row 5.
    t_ad = table(
        "t_ad",
        [
            feature(
                "ad_id",
                1,
                8,
                num_dedicated_rows=2,
                dedicated_row_offset=8,
                dedicated_keys_file="dedicated/ad_id.npy",
            )
        ],
        6,
        4,
        ShardingType.ROW_WISE,
        [(0, 0, 3, 0, 4), (1, 3, 3, 0, 4)],
        hashed_rows=10,
        fallback_row=5,
        pruning=PruningPolicy(
            PruningAction.DROP_DEAD,
            unseen_window_s=100,
            min_count=2,
            expected_pruned_rows=5,
            expected_pruned_traffic_share=0.01,
        ),
    )
    t_user = table(
        "t_user", [feature("user", 2, 5)], 5, 4, ShardingType.TABLE_WISE, [(1, 0, 5, 0, 4)]
    )
    return make_plan([t_ad, t_user], 2)


def _ad_counts() -> AccessCounts:
    #            0    1    2    3    4    5    6    7    8(ded) 9(ded)
    counts = [9, 0, 3, 1, 4, 5, 2, 6, 0, 0]
    last = [990, N, 995, 999, 850, 996, 998, 999, N, N]
    return AccessCounts("t_ad", np.array(counts, np.int64), np.array(last, np.int64), 0, 1000)


def test_protected_rows_are_the_dedicated_range() -> None:
    assert protected_rows(_plan().table("t_ad")).tolist() == [False] * 8 + [True, True]


def test_prune_table_exact() -> None:
    plan = _plan()
    out = prune_table(plan.table("t_ad"), _ad_counts(), inputs_fingerprint="fp")
    assert out is not None
    remap, rep = out
    # Dead: 1 (never), 4 (last 850 < 900), 3 (1 lookup < 2). Live: 0,2,5,6,7 + dedicated 8,9 = 7,
    # but capacity is 5 (6 rows - fallback): drop the two least accessed non-dedicated: 6 (2),
    # then 2 (3). Kept: 0, 5, 7, 8, 9 -> rows 0..4; fallback row 5.
    assert remap.hashed_to_row.tolist() == [0, -1, -1, -1, -1, 1, -1, 2, 3, 4]
    assert remap.fallback_row == 5 and remap.num_rows == 6 and remap.inputs_fingerprint == "fp"
    assert (rep.kept_rows, rep.pruned_rows, rep.spare_rows) == (5, 5, 0)
    assert (rep.dead_unseen_rows, rep.dead_rare_rows, rep.over_capacity_rows) == (2, 1, 2)
    assert rep.protected_rows == 2
    assert rep.lookups == 30 and rep.pruned_lookups == 0 + 3 + 1 + 4 + 2
    assert rep.pruned_traffic_share == pytest.approx(10 / 30)
    assert rep.expected_pruned_rows == 5


def test_keep_all_tables_get_no_remap() -> None:
    plan = _plan()
    assert prune_table(plan.table("t_user"), empty_access_counts("t_user", 5)) is None


def test_config_overrides_the_plan_policy() -> None:
    plan = _plan()
    out = prune_table(
        plan.table("t_ad"), _ad_counts(), PruneConfig(unseen_window_s=10_000, min_count=0)
    )
    assert out is not None
    # Window covers everything, no threshold: only the never-seen row 1 is dead; then capacity.
    assert out[1].dead_unseen_rows == 1 and out[1].dead_rare_rows == 0


def test_prune_plan_and_files_round_trip(tmp_path: Path) -> None:
    plan = _plan()
    write_plan(plan, tmp_path / "plan.json")
    result = prune_plan(plan, {"t_ad": _ad_counts()})
    assert set(result.remaps) == {"t_ad"}
    assert result.report.skipped_tables == ("t_user",)
    assert result.report.rows_before == 10 and result.report.rows_kept == 5
    new_plan = write_pruned_plan(tmp_path, plan, result)
    name = new_plan.table("t_ad").remap_file
    assert name is not None and re.fullmatch(r"remaps/t_ad-[0-9a-f]{12}\.npy", name)
    # The runtime's view: a plan that requires remaps, and remaps of that plan.
    back = read_plan(tmp_path, require_remaps=True, expected_fingerprint=plan.inputs_fingerprint)
    assert back.table("t_ad").remap_file == name
    remaps = read_remaps(tmp_path, expected_fingerprint=plan.inputs_fingerprint)
    assert np.array_equal(remaps["t_ad"].hashed_to_row, result.remaps["t_ad"].hashed_to_row)
    text = render_pruning_report(result.report)
    assert "| t_ad | 10 | 6 | 5 |" in text and "keep_all): t_user" in text


def test_missing_counts_name_the_tables() -> None:
    with pytest.raises(InputError, match="t_ad") as e:
        prune_plan(_plan(), {})
    assert e.value.exit_code == 2


def test_counts_of_the_wrong_size_are_refused() -> None:
    with pytest.raises(InputError, match="11 hashed rows"):
        prune_table(_plan().table("t_ad"), empty_access_counts("t_ad", 11))


def test_write_refuses_remaps_of_another_table_shape(tmp_path: Path) -> None:
    plan = _plan()
    result = prune_plan(plan, {"t_ad": _ad_counts()})
    other = dataclasses.replace(
        plan,
        tables=tuple(
            dataclasses.replace(t, fallback_row=4) if t.name == "t_ad" else t for t in plan.tables
        ),
    )
    with pytest.raises(InputError, match="fallback 4"):
        write_pruned_plan(tmp_path, other, result)
    assert not (tmp_path / "plan.json").exists() and not (tmp_path / "remaps").exists()
