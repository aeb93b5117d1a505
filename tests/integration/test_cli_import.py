"""``adrank import`` end to end: the CLI on made-up files, and on the real public samples.

The real samples live in ../shared/data (never in the repository: their terms forbid
redistribution); tests that read them are marked ``shared_data`` and skip when they are absent.
Their expectations come from reading the same source lines here, with plain Python.
"""

from __future__ import annotations

import datetime as dt
import gzip
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from adrank.cli import main
from adrank.cli.import_cmd import FORMATS
from adrank.data import SourceFormat, declared_roles
from adrank.types import ColumnRole

pytestmark = pytest.mark.integration

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
I_NAMES = [f"I{i}" for i in range(1, 14)]
C_NAMES = [f"C{i}" for i in range(1, 27)]


def _shared(rel: str) -> Path:
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"real sample {path} is absent (it is not redistributed with the repository)")
    return path


def _source_lines(path: Path, *, header: bool) -> list[str]:
    """Data lines of a (gzip) text file, the direct way."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:  # type: ignore[operator]
        lines = [line.rstrip("\r\n") for line in f]
    lines = [line for line in lines if line]
    return lines[1:] if header else lines


def _empty_fields(lines: list[str], names: list[str], sep: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for line in lines:
        for name, value in zip(names, line.split(sep), strict=True):
            counts[name] += value == ""
    return {name: counts[name] for name in names}


def _import(tmp_path: Path, fmt: str, src: Path, *extra: str) -> pa.Table:
    out = tmp_path / f"{fmt}.parquet"
    assert main(["import", "--format", fmt, str(src), "-o", str(out), "-q", *extra]) == 0
    return pq.read_table(out)


def _criteo_tsv(tmp_path: Path, lines: list[str]) -> Path:
    src = tmp_path / "rows.tsv"
    src.write_text("\n".join(lines) + "\n")
    return src


def _criteo_row(label: str, seed: int) -> str:
    ints = [str((seed * 13 + k) % 50) for k in range(13)]
    cats = [f"{(seed * 977 + k * 31) % 2**32:08x}" for k in range(26)]
    return "\t".join([label, *ints, *cats])


# ---- the CLI on made-up files ------------------------------------------------------------------


def test_cli_formats_are_the_library_formats() -> None:
    assert tuple(f.value for f in SourceFormat) == FORMATS


def test_import_prints_rows_roles_size_and_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _criteo_tsv(tmp_path, [_criteo_row("1", 1), _criteo_row("0", 2)])
    out = tmp_path / "o.parquet"
    assert main(["import", "--format", "criteo", str(src), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rows written  2" in text and "rows skipped  0" in text
    assert "label 1 (label)" in text and "dense 13" in text and "sparse 26" in text
    assert "KiB" in text and "rows/s" in text
    assert pq.read_metadata(out).num_rows == 2


def test_existing_output_needs_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _criteo_tsv(tmp_path, [_criteo_row("1", 1)])
    out = tmp_path / "o.parquet"
    out.write_bytes(b"keep me")
    assert main(["import", "-f", "criteo", str(src), "-o", str(out), "-q"]) == 2
    assert str(out) in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["import", "-f", "criteo", str(src), "-o", str(out), "-q", "--overwrite"]) == 0
    assert pq.read_metadata(out).num_rows == 1


def test_malformed_row_exits_2_naming_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _criteo_row("1", 3).split("\t")
    bad[5] = "many"  # I5
    src = _criteo_tsv(tmp_path, [_criteo_row("1", 1), _criteo_row("0", 2), "\t".join(bad)])
    out = tmp_path / "o.parquet"
    assert main(["import", "-f", "criteo", str(src), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{src}:3" in err and "column I5" in err and "--skip-bad-rows" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.tsv"]

    assert main(["import", "-f", "criteo", str(src), "-o", str(out), "--skip-bad-rows"]) == 0
    text = capsys.readouterr().out
    assert "rows written  2" in text and "rows skipped  1" in text and f"{src}:3" in text


def test_missing_input_and_wrong_format_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o.parquet")
    assert main(["import", "-f", "obd", str(tmp_path / "nope"), "-o", out]) == 2
    assert "nope" in capsys.readouterr().err
    src = _criteo_tsv(tmp_path, [_criteo_row("1", 1)])
    assert main(["import", "-f", "avazu", str(src), "-o", out]) == 2
    err = capsys.readouterr().err
    assert f"{src}:1" in err and "--format criteo" in err
    assert main(["import", "-f", "parquet", str(src), "-o", out]) == 2
    assert "invalid choice" in capsys.readouterr().err


# ---- the real samples ----------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("rel", "labelled"),
    [
        ("criteo_kaggle_dac_samples/kaggle_train_head10k.tsv.gz", True),
        ("criteo_kaggle_dac_samples/kaggle_test_10k_unlabeled.tsv.gz", False),
    ],
)
def test_real_criteo_sample(tmp_path: Path, rel: str, labelled: bool) -> None:
    src = _shared(rel)
    lines = _source_lines(src, header=False)
    table = _import(tmp_path, "criteo", src)
    names = (["label"] if labelled else []) + I_NAMES + C_NAMES
    assert table.num_rows == len(lines) == 10_000
    assert table.column_names == names
    nulls = {name: table.column(name).null_count for name in names}
    assert nulls == _empty_fields(lines, names, "\t")
    if labelled:
        ctr = pc.mean(table.column("label")).as_py()
        assert 0.1 < ctr < 0.4  # SOURCE.txt: 2,182 positives in 10,000
    roles = declared_roles(table.schema)
    assert roles is not None and roles["C1"] is ColumnRole.SPARSE


@pytest.mark.shared_data
def test_real_criteo_rows_match_a_direct_parse(tmp_path: Path) -> None:
    src = _shared("criteo_kaggle_dac_samples/kaggle_train_head10k.tsv.gz")
    lines = _source_lines(src, header=False)
    table = _import(tmp_path, "criteo", src)
    picks = sorted({0, 1, 2, len(lines) - 1, *random.Random(7).sample(range(len(lines)), 60)})
    got = table.take(picks).to_pylist()
    for row, i in zip(got, picks, strict=True):
        fields = lines[i].split("\t")
        expected: dict[str, object] = {"label": int(fields[0])}
        for name, value in zip(I_NAMES, fields[1:14], strict=True):
            expected[name] = float(np.float32(int(value))) if value else None
        for name, value in zip(C_NAMES, fields[14:], strict=True):
            expected[name] = value or None
        assert row == expected, f"line {i + 1}"


AVAZU_NAMES = [
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
    "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
]  # fmt: skip


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("rel", "header"),
    [
        ("avazu_samples/avazu_train_head9k.csv.gz", True),
        ("avazu_samples/avazu_train_extra1k_noheader.csv.gz", False),
    ],
)
def test_real_avazu_sample(tmp_path: Path, rel: str, header: bool) -> None:
    src = _shared(rel)
    lines = _source_lines(src, header=header)
    table = _import(tmp_path, "avazu", src)
    assert table.num_rows == len(lines)
    assert table.column_names == ["id", "label", "ts", *AVAZU_NAMES[3:]]
    empties = _empty_fields(lines, AVAZU_NAMES, ",")
    renamed = {"click": "label", "hour": "ts"}
    assert {renamed.get(n, n): table.column(renamed.get(n, n)).null_count for n in AVAZU_NAMES} == {
        renamed.get(n, n): empties[n] for n in AVAZU_NAMES
    }
    # SOURCE.txt: every row is from hour 14102100, the first hour of Avazu's train.csv.
    assert set(table.column("ts").to_pylist()) == {dt.datetime(2014, 10, 21, tzinfo=dt.UTC)}
    assert table.column("id").to_pylist() == [line.split(",", 1)[0] for line in lines]
    assert 0.05 < pc.mean(table.column("label")).as_py() < 0.4  # SOURCE.txt: CTR 0.171


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["train.fm.txt.gz", "test.fm.txt.gz"])
def test_real_ipinyou_sample(tmp_path: Path, name: str) -> None:
    src = _shared(f"ipinyou_deepctr_sample/{name}")
    lines = _source_lines(src, header=False)
    table = _import(tmp_path, "ipinyou", src)
    assert table.num_rows == len(lines)
    fields = table.column_names[1:]
    assert table.column_names[0] == "label" and len(fields) == 16
    assert {"IP", "hour", "weekday", "slotid", "domain", "advertiser"} <= set(fields)
    # SOURCE.txt: exactly 16 active features per row, one per field: no nulls anywhere.
    assert all(table.column(n).null_count == 0 for n in table.column_names)
    clicks = sum(int(line.split(" ", 1)[0]) for line in lines)
    assert pc.sum(table.column("label")).as_py() == clicks
    assert 0 < pc.mean(table.column("label")).as_py() < 0.05  # CTR 0.0095 / 0.0024
    hours = set(table.column("hour").to_pylist())
    assert hours <= {f"{h:02d}" for h in range(24)} | {"other"}


@pytest.mark.shared_data
def test_real_open_bandit_directory(tmp_path: Path) -> None:
    root = _shared("open_bandit_dataset_small")
    logs = sorted(p for p in root.rglob("*.csv.gz"))
    per_file = {p: len(_source_lines(p, header=True)) for p in logs}
    table = _import(tmp_path, "obd", root)
    assert table.num_rows == sum(per_file.values()) == 60_000
    policies, campaigns = table.column("policy").to_pylist(), table.column("campaign").to_pylist()
    pairs = Counter(zip(policies, campaigns, strict=True))
    assert pairs == {(p.parent.parent.name, p.parent.name): n for p, n in per_file.items()}
    for name in table.column_names:
        if not name.startswith("user-item_affinity_"):
            assert table.column(name).null_count == 0, name
    # Campaign "all" has 80 items, "men" 34, "women" 46: shorter campaigns leave nulls.
    not_all = sum(n for (_policy, campaign), n in pairs.items() if campaign != "all")
    assert table.column("user-item_affinity_79").null_count == not_all
    ts = table.column("ts")
    lo, hi = pc.min_max(ts).values()
    assert dt.datetime(2019, 11, 24, tzinfo=dt.UTC) <= lo.as_py()
    assert hi.as_py() < dt.datetime(2019, 12, 1, tzinfo=dt.UTC)
    assert 0 < pc.mean(table.column("label")).as_py() < 0.02
    assert set(table.column("position").to_pylist()) == {1, 2, 3}
    lo_p, hi_p = pc.min_max(table.column("propensity_score")).values()
    assert lo_p.as_py() > 0 and hi_p.as_py() <= 1


@pytest.mark.shared_data
def test_real_open_bandit_single_file(tmp_path: Path) -> None:
    src = _shared("open_bandit_dataset_small/random/men/men.csv.gz")
    lines = _source_lines(src, header=True)
    table = _import(tmp_path, "obd", src)
    assert table.num_rows == len(lines)
    assert set(table.column("policy").to_pylist()) == {"random"}
    affinities = [n for n in table.column_names if n.startswith("user-item_affinity_")]
    assert len(affinities) == 34  # SOURCE.txt: one per item, 34 for men
    assert table.column("row_id").to_pylist() == [int(line.split(",", 1)[0]) for line in lines]
