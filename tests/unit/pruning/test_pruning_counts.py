"""count_accesses over parquet logs against a slow per-id oracle; counts from hashed ids; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adrank.errors import InputError
from adrank.hashing import string_id_keys
from adrank.idmap import id_keys_to_hashed
from adrank.types import ShardingType
from pruning import (
    NEVER_ACCESSED_S,
    AccessCounts,
    access_counts_from_hashed,
    count_accesses,
    merge_access_counts,
)
from tests.plan_builders import feature, make_plan, table

DEDICATED = np.array([7, 1_000_003], dtype=np.int64)


def _plan():
    t_ad = table(
        "t_ad",
        [
            feature(
                "ad_id",
                11,
                40,
                num_dedicated_rows=2,
                dedicated_row_offset=40,
                dedicated_keys_file="dedicated/ad_id.npy",
            ),
            feature("campaign", 12, 18, row_offset=42),
        ],
        60,
        8,
        ShardingType.TABLE_WISE,
        [(0, 0, 60, 0, 8)],
    )
    t_user = table(
        "t_user",
        [feature("user", 21, 30), feature("hist", 22, 30)],
        30,
        8,
        ShardingType.TABLE_WISE,
        [(0, 0, 30, 0, 8)],
    )
    return make_plan([t_ad, t_user], 1)


def _write_logs(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    n = 500
    day1 = pa.table(
        {
            "ts": pa.array(
                (1_700_000_000 + np.sort(rng.integers(0, 86_400, n))) * 1000, pa.timestamp("ms")
            ),
            "ad_id": pa.array(
                [None if i % 17 == 0 else int(x) for i, x in enumerate(rng.zipf(1.3, n) % 5000)],
                pa.int64(),
            ),
            "campaign": pa.array(rng.integers(0, 30, n), pa.int64()),
            "user": pa.array([f"u{x}" for x in rng.integers(0, 50, n)], pa.string()),
            "hist": pa.array(
                [list(map(int, rng.integers(0, 100, rng.integers(0, 4)))) for _ in range(n)],
                pa.list_(pa.int64()),
            ),
        }
    )
    # The dedicated keys 7 and 1_000_003 appear too.
    ad = day1.column("ad_id").to_pylist()
    ad[1], ad[2] = 7, 1_000_003
    day1 = day1.set_column(1, "ad_id", pa.array(ad, pa.int64()))
    day2 = pa.table(
        {
            "ts": pa.array(1_700_086_400 + np.sort(rng.integers(0, 86_400, n)), pa.int64()),
            "ad_id": pa.array(rng.integers(0, 5000, n), pa.int64()),
            "user": pa.array([f"u{x}" for x in rng.integers(0, 80, n)], pa.string()),
        }
    )
    paths = [tmp_path / "day1.parquet", tmp_path / "day2.parquet"]
    pq.write_table(day1, paths[0], row_group_size=128)
    pq.write_table(day2, paths[1], row_group_size=128)
    return paths


def _oracle(plan, paths, start_s=None, end_s=None):
    """Slow per-id loop: hash each id on its own and count it."""
    counts = {t.name: np.zeros(t.hashed_rows, np.int64) for t in plan.tables}
    last = {t.name: np.full(t.hashed_rows, NEVER_ACCESSED_S, np.int64) for t in plan.tables}
    for p in paths:
        tab = pq.read_table(p)
        ts_col = tab.column("ts")
        if pa.types.is_timestamp(ts_col.type):
            ts = [v // 1000 for v in ts_col.cast(pa.int64()).to_pylist()]
        else:
            ts = ts_col.to_pylist()
        for name in tab.column_names:
            if name == "ts":
                continue
            t, slot = plan.table_of_feature(name)
            for row, value in enumerate(tab.column(name).to_pylist()):
                if (start_s is not None and ts[row] < start_s) or (
                    end_s is not None and ts[row] >= end_s
                ):
                    continue
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if v is None:
                        continue
                    key = string_id_keys([v])[0] if isinstance(v, str) else v
                    h = int(
                        id_keys_to_hashed(
                            slot,
                            np.array([key], np.int64),
                            DEDICATED if slot.num_dedicated_rows else None,
                        )[0]
                    )
                    counts[t.name][h] += 1
                    last[t.name][h] = max(last[t.name][h], ts[row])
    return counts, last


@pytest.mark.parametrize("window", [(None, None), (1_700_040_000, 1_700_100_000)])
def test_counts_match_the_oracle(tmp_path: Path, window: tuple[int | None, int | None]) -> None:
    plan = _plan()
    paths = _write_logs(tmp_path)
    seen: list[int] = []
    got = count_accesses(
        plan,
        paths,
        dedicated_keys={"ad_id": DEDICATED},
        start_s=window[0],
        end_s=window[1],
        batch_rows=100,
        progress=seen.append,
    )
    want_counts, want_last = _oracle(plan, paths, *window)
    assert sum(seen) == 1000
    assert set(got) == {"t_ad", "t_user"}
    for name in got:
        assert np.array_equal(got[name].counts, want_counts[name]), name
        assert np.array_equal(got[name].last_access_s, want_last[name]), name
    # Dedicated keys land on their own rows (40, 41) in the whole-log count.
    if window == (None, None):
        assert got["t_ad"].counts[40] >= 1 and got["t_ad"].counts[41] >= 1
        assert got["t_ad"].log_start_s is not None and got["t_ad"].log_end_s is not None
        assert got["t_ad"].log_end_s == got["t_user"].log_end_s


def test_dedicated_keys_are_read_from_the_plan_directory(tmp_path: Path) -> None:
    plan = _plan()
    paths = _write_logs(tmp_path)
    (tmp_path / "dedicated").mkdir()
    np.save(tmp_path / "dedicated" / "ad_id.npy", DEDICATED)
    got = count_accesses(plan, paths, plan_dir=tmp_path, features=["ad_id"])
    want, _ = _oracle(plan, paths)
    # Only ad_id was counted: campaign's range [42, 60) stays zero.
    assert np.array_equal(got["t_ad"].counts[:42], want["t_ad"][:42])
    assert not got["t_ad"].counts[42:].any() and not got["t_user"].counts.any()


def test_problems_are_reported_together(tmp_path: Path) -> None:
    plan = _plan()
    paths = _write_logs(tmp_path)
    with pytest.raises(InputError) as e:
        count_accesses(plan, paths, features=["ad_id", "nope"])
    text = str(e.value)
    assert "nope" in text and "dedicated" in text and "ad_id" in text
    assert e.value.exit_code == 2


def test_missing_feature_column_names_the_files(tmp_path: Path) -> None:
    plan = _plan()
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"ts": pa.array([1], pa.int64()), "user": ["a"]}), path)
    with pytest.raises(InputError, match="campaign") as e:
        count_accesses(plan, [path], features=["user", "campaign"])
    assert str(path) in str(e.value)


def test_window_needs_timestamps(tmp_path: Path) -> None:
    plan = _plan()
    path = tmp_path / "nots.parquet"
    pq.write_table(pa.table({"user": ["a", "b"]}), path)
    with pytest.raises(InputError, match="no timestamp column") as e:
        count_accesses(plan, [path], features=["user"], start_s=0)
    assert str(path) in str(e.value.source)
    # Without a window the same file counts (no recency).
    got = count_accesses(plan, [path], features=["user"])
    assert got["t_user"].total_lookups == 2 and got["t_user"].log_end_s is None


def test_from_hashed_and_merge() -> None:
    a = access_counts_from_hashed("t", np.array([2, 0, 2]), 4, np.array([10, 11, 12]))
    assert a.counts.tolist() == [1, 0, 2, 0]
    assert a.last_access_s.tolist() == [11, NEVER_ACCESSED_S, 12, NEVER_ACCESSED_S]
    assert (a.log_start_s, a.log_end_s) == (10, 12)
    b = access_counts_from_hashed("t", np.array([3]), 4, np.array([20]))
    m = merge_access_counts(a, b)
    assert m.counts.tolist() == [1, 0, 2, 1] and m.last_access_s[3] == 20
    assert (m.log_start_s, m.log_end_s) == (10, 20)
    no_ts = access_counts_from_hashed("t", np.array([1, 1]), 4)
    assert no_ts.counts.tolist() == [0, 2, 0, 0] and no_ts.log_end_s is None
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        access_counts_from_hashed("t", np.array([4]), 4)
    with pytest.raises(ValueError, match="cannot merge"):
        merge_access_counts(a, AccessCounts("u", np.zeros(4, np.int64), np.zeros(4, np.int64)))
