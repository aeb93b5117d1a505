"""``adrank stats`` end to end: output file, summary table, --merge, bad input -> exit 2 with the
culprit named and no stats file written (an existing one left untouched)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adrank.cli import main
from adrank.errors import EXIT_USAGE
from sharding_planner import read_stats
from tests.unit.sharding_planner.test_stats_oracle import (
    WINDOW_S,
    assert_matches_oracle,
    make_logs,
    oracle_feature,
)

pytestmark = pytest.mark.integration

T0 = 1_767_225_600
OLD = '{"untouched": true}\n'


def logs(tmp_path: Path, name: str, seed: int, n: int = 500) -> Path:
    rng = np.random.default_rng(seed)
    path = tmp_path / f"{name}.parquet"
    pq.write_table(
        pa.table(
            {
                "ts": pa.array(T0 + seed * 10_000 + np.sort(rng.integers(0, 7_200, n)), pa.int64()),
                "ad_id": pa.array(rng.zipf(1.3, n) % 300),
                "domain": pa.array([f"site{v}" for v in rng.zipf(1.5, n) % 40]),
            }
        ),
        path,
    )
    return path


def test_stats_writes_the_file_and_prints_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = make_logs(tmp_path)
    out = tmp_path / "out" / "stats.json"
    rc = main(
        [
            "stats",
            *[str(p) for p, _, _ in files],
            "-o",
            str(out),
            "--heavy-hitters",
            "7",
            "--recent-window",
            f"{WINDOW_S}s",
            "-q",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert str(out) in text
    for name in ("ad_id", "ad_domain", "hist", "tags", "user_id", "coverage", "zipf s"):
        assert name in text
    doc = json.loads(out.read_text())
    assert doc["kind"] == "adrank.stats" and doc["config"]["heavy_hitters"] == 7
    assert [Path(i["path"]).name for i in doc["inputs"]] == [p.name for p, _, _ in files]
    report = read_stats(out)
    tables = [(t, ts) for _, t, ts in files]
    for name, fs in report.features.items():
        assert_matches_oracle(
            fs, oracle_feature(tables, name, 7, WINDOW_S), check_raw=fs.id_kind.value == "string"
        )


def test_flags_reach_the_computation(tmp_path: Path) -> None:
    a = logs(tmp_path, "a", 1)
    out = tmp_path / "s.json"
    rc = main(
        [
            "stats",
            str(a),
            "-o",
            str(out),
            "--features",
            "ad_id",
            "--exact-limit",
            "20",
            "--hll-precision",
            "10",
            "--heavy-hitters",
            "3",
            "--timestamp-column",
            "ts",
            "--recent-window",
            "1h",
            "--batch-rows",
            "64",
            "--threads",
            "1",
            "-q",
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["config"] == {
        "features": ["ad_id"],
        "timestamp_column": "ts",
        "recent_window_s": 3_600,
        "exact_distinct_limit": 20,
        "hll_precision": 10,
        "heavy_hitters": 3,
        "heavy_hitter_capacity": 12,
    }
    f = doc["features"]["ad_id"]
    assert list(doc["features"]) == ["ad_id"]
    assert f["distinct_exact"] is False and f["sample_rate"] < 1 and len(f["heavy_hitters"]) == 3
    assert f["distinct_rse"] == pytest.approx(1.04 / 32)


def test_merge_of_shards_equals_one_run_over_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = logs(tmp_path, "a", 1), logs(tmp_path, "b", 2)
    for name, inputs in (("a", [a]), ("b", [b]), ("all", [a, b])):
        assert main(["stats", *map(str, inputs), "-o", str(tmp_path / f"{name}.json"), "-q"]) == 0
    merged = tmp_path / "merged.json"
    assert (
        main(
            [
                "stats",
                "--merge",
                str(tmp_path / "a.json"),
                str(tmp_path / "b.json"),
                "-o",
                str(merged),
                "-q",
            ]
        )
        == 0
    )
    assert str(merged) in capsys.readouterr().out
    got, want = read_stats(merged), read_stats(tmp_path / "all.json")
    assert got.inputs_fingerprint == want.inputs_fingerprint
    assert got.features == want.features


def run_bad(args: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run a failing command against an existing output file; return stderr."""
    out.write_text(OLD)
    rc = main(["stats", *args, "-o", str(out), "-q"])
    assert rc == EXIT_USAGE
    assert out.read_text() == OLD  # untouched
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "bad",
    [
        "missing",
        "empty_dir",
        "zero_bytes",
        "random_bytes",
        "truncated",
        "missing_feature",
        "float_feature",
        "incompatible",
    ],
)
def test_bad_input_exits_2_naming_the_culprit_and_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    good = logs(tmp_path, "good", 1)
    extra: list[str] = []
    culprit: list[str]
    if bad == "missing":
        path = tmp_path / "no_such.parquet"
        culprit = [str(path)]
    elif bad == "empty_dir":
        path = tmp_path / "logs_dir"
        path.mkdir()
        culprit = [str(path)]
    elif bad in ("zero_bytes", "random_bytes", "truncated"):
        path = tmp_path / f"{bad}.parquet"
        content = {
            "zero_bytes": b"",
            "random_bytes": np.random.default_rng(0).bytes(4096),
            "truncated": good.read_bytes()[:-40],
        }[bad]
        path.write_bytes(content)
        culprit = [str(path)]
    elif bad == "missing_feature":
        path = good
        extra = ["--features", "ad_id,nope"]
        culprit = [f"{good}:nope"]
    elif bad == "float_feature":
        path = tmp_path / "floats.parquet"
        pq.write_table(pa.table({"ad_id": pa.array([1, 2]), "score": pa.array([0.1, 0.2])}), path)
        extra = ["--features", "ad_id,score"]
        culprit = [f"{path}:score", "double"]
    else:
        path = tmp_path / "strings.parquet"
        pq.write_table(pa.table({"ad_id": pa.array(["1", "2"])}), path)
        culprit = [str(good), str(path), "ad_id"]
    err = run_bad([str(good), str(path), *extra], tmp_path / "stats.json", capsys)
    assert err.startswith("adrank stats: error:")
    for c in culprit:
        assert c in err


def test_merge_refusals_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = logs(tmp_path, "a", 1), logs(tmp_path, "b", 2)
    sa, sb = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["stats", str(a), "-o", str(sa), "-q"]) == 0
    assert main(["stats", str(b), "-o", str(sb), "--heavy-hitters", "5", "-q"]) == 0
    out = tmp_path / "m.json"
    # Different settings: names the file and the setting.
    err = run_bad(["--merge", str(sa), str(sb)], out, capsys)
    assert str(sb) in err and "heavy_hitters" in err
    # The same stats file twice (its inputs overlap themselves).
    err = run_bad(["--merge", str(sa), str(sa)], out, capsys)
    assert "a.parquet" in err and "twice" in err
    # A parquet file or a missing file where a stats file is expected.
    err = run_bad(["--merge", str(sa), str(a), str(tmp_path / "gone.json")], out, capsys)
    assert str(a) in err and "gone.json" in err
    # Compute-only options are refused with --merge.
    err = run_bad(["--merge", str(sa), "--exact-limit", "5"], out, capsys)
    assert "--exact-limit" in err


@pytest.mark.parametrize(
    "args",
    [
        ["--hll-precision", "30"],
        ["--recent-window", "soon"],
        ["--heavy-hitters", "0"],
        ["--exact-limit", "x"],
    ],
)
def test_bad_flags_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    good = logs(tmp_path, "good", 1)
    err = run_bad([str(good), *args], tmp_path / "stats.json", capsys)
    assert args[0].split("-")[-1] in err or "precision" in err


def test_cli_precision_range_matches_the_library() -> None:
    from adrank.cli.stats import _hll_precision
    from sharding_planner.types import HLL_PRECISION_RANGE

    lo, hi = HLL_PRECISION_RANGE
    assert _hll_precision(str(lo)) == lo and _hll_precision(str(hi)) == hi
    for bad in (lo - 1, hi + 1):
        with pytest.raises(argparse.ArgumentTypeError, match="expected an integer"):
            _hll_precision(str(bad))


def test_output_path_that_is_a_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = logs(tmp_path, "good", 1)
    assert main(["stats", str(good), "-o", str(tmp_path), "-q"]) == EXIT_USAGE
    assert "directory" in capsys.readouterr().err
