"""Importers of raw public logs, on tiny synthetic inputs written by each test.

Every input here is made up in the test (the real samples may not be redistributed); the tests
check exact values, nulls, types, roles and timestamps, and that bad input fails with an
InputError naming the file, the line and the column.
"""

from __future__ import annotations

import bz2
import dataclasses
import datetime as dt
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adrank.data import (
    IMPORT_METADATA_KEY,
    ImportSummary,
    SourceFormat,
    declared_roles,
    import_log,
)
from adrank.data.importers import _text
from adrank.errors import EXIT_USAGE, InputError
from adrank.types import ColumnRole

UTC = dt.UTC


def _write(path: Path, text: str, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _assert_input_error(exc: InputError, *fragments: str) -> None:
    text = str(exc)
    assert exc.exit_code == EXIT_USAGE
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---- Criteo ----------------------------------------------------------------------------------

I_NAMES = [f"I{i}" for i in range(1, 14)]
C_NAMES = [f"C{i}" for i in range(1, 27)]


def _criteo_line(label: str | None, ints: list[str], cats: list[str]) -> str:
    fields = ([] if label is None else [label]) + ints + cats
    return "\t".join(fields)


def _criteo_rows() -> list[tuple[str, list[str], list[str]]]:
    """Three made-up rows: full, with empties and negatives, all-empty features."""
    full = (
        "1",
        [str(7 * i - 3) for i in range(13)],
        [f"{(i * 2654435761) % 2**32:08x}" for i in range(26)],
    )
    gaps = (
        "0",
        ["-1" if i % 3 == 0 else "" if i % 3 == 1 else str(10**i) for i in range(13)],
        ["" if i % 4 == 0 else f"0000abc{i % 10}" for i in range(26)],
    )
    empty = ("0", [""] * 13, [""] * 26)
    return [full, gaps, empty]


def _expected_criteo(rows: list[tuple[str, list[str], list[str]]]) -> dict[str, list[object]]:
    """The obviously correct conversion: int label, float32 of each int, strings, '' -> None."""
    out: dict[str, list[object]] = {"label": [int(r[0]) for r in rows]}
    for k, name in enumerate(I_NAMES):
        out[name] = [None if r[1][k] == "" else float(np.float32(int(r[1][k]))) for r in rows]
    for k, name in enumerate(C_NAMES):
        out[name] = [None if r[2][k] == "" else r[2][k] for r in rows]
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_criteo_rows_become_typed_columns_with_nulls(tmp_path: Path, gz: bool) -> None:
    rows = _criteo_rows()
    src = _write(tmp_path / "train.txt", "\n".join(_criteo_line(*r) for r in rows) + "\n", gz=gz)
    summary = import_log(SourceFormat.CRITEO, src, tmp_path / "out.parquet")

    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["label", *I_NAMES, *C_NAMES]
    assert table.schema.field("label").type == pa.int8()
    assert all(table.schema.field(n).type == pa.float32() for n in I_NAMES)
    assert all(table.schema.field(n).type == pa.string() for n in C_NAMES)
    assert table.to_pydict() == _expected_criteo(rows)
    assert "ts" not in table.column_names
    assert summary.rows_written == 3 and summary.rows_skipped == 0
    assert summary.columns == tuple(table.column_names)
    assert summary.out_bytes == (tmp_path / "out.parquet").stat().st_size


def test_criteo_roles_and_import_metadata_are_recorded(tmp_path: Path) -> None:
    src = _write(tmp_path / "t.tsv", _criteo_line(*_criteo_rows()[0]) + "\n")
    summary = import_log("criteo", src, tmp_path / "o.parquet")
    schema = pq.read_schema(tmp_path / "o.parquet")
    roles = declared_roles(schema)
    assert roles is not None
    assert roles["label"] is ColumnRole.LABEL
    assert {roles[n] for n in I_NAMES} == {ColumnRole.DENSE}
    assert {roles[n] for n in C_NAMES} == {ColumnRole.SPARSE}
    assert dict(summary.roles) == roles
    meta = json.loads(schema.metadata[IMPORT_METADATA_KEY])
    assert meta == {"format": "criteo", "inputs": ["t.tsv"]}


def test_criteo_unlabelled_rows_have_no_label_column(tmp_path: Path) -> None:
    _label, ints, cats = _criteo_rows()[0]
    src = _write(tmp_path / "test.txt", _criteo_line(None, ints, cats) + "\n")
    import_log(SourceFormat.CRITEO, src, tmp_path / "o.parquet")
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.column_names == [*I_NAMES, *C_NAMES]
    assert table.column("I2").to_pylist() == [4.0]


def test_criteo_skips_blank_lines_and_reads_crlf(tmp_path: Path) -> None:
    rows = _criteo_rows()
    text = "\r\n".join(_criteo_line(*r) for r in rows[:2]) + "\r\n\r\n" + _criteo_line(*rows[2])
    src = _write(tmp_path / "t.tsv", text)  # no final newline either
    import_log(SourceFormat.CRITEO, src, tmp_path / "o.parquet")
    assert pq.read_table(tmp_path / "o.parquet").to_pydict() == _expected_criteo(rows)


def _many_criteo_lines(n: int) -> list[str]:
    lines = []
    for r in range(n):
        ints = [str((r * 31 + k) % 97 - 5) if (r + k) % 5 else "" for k in range(13)]
        cats = [f"{(r * 7919 + k * 104729) % 2**32:08x}" if (r + k) % 6 else "" for k in range(26)]
        lines.append(_criteo_line(str(r % 2), ints, cats))
    return lines


def test_small_blocks_give_many_row_groups_and_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _many_criteo_lines(60)
    src = _write(tmp_path / "t.tsv.gz", "\n".join(lines) + "\n", gz=True)
    import_log(SourceFormat.CRITEO, src, tmp_path / "big.parquet")
    monkeypatch.setattr(_text, "DEFAULT_BLOCK_BYTES", 700)
    import_log(SourceFormat.CRITEO, src, tmp_path / "small.parquet")
    assert pq.read_metadata(tmp_path / "small.parquet").num_row_groups > 5
    assert pq.read_table(tmp_path / "small.parquet").equals(pq.read_table(tmp_path / "big.parquet"))


def test_malformed_value_names_file_line_and_column_in_a_later_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _many_criteo_lines(50)
    fields = lines[36].split("\t")
    fields[3] = "12x"  # I3 of line 37
    lines[36] = "\t".join(fields)
    src = _write(tmp_path / "t.tsv", "\n".join(lines) + "\n")
    monkeypatch.setattr(_text, "DEFAULT_BLOCK_BYTES", 500)
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.CRITEO, src, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{src}:37", "column I3", "'12x'", "--skip-bad-rows")
    assert _leftovers(tmp_path) == ["t.tsv"]


@pytest.mark.parametrize(
    ("line", "fragments"),
    [
        (_criteo_line("1", ["1"] * 13, ["ab"] * 25), ["found 39", "tab-separated"]),
        (_criteo_line("2", ["1"] * 13, ["ab"] * 26), ["column label", "'2'"]),
        (_criteo_line("", ["1"] * 13, ["ab"] * 26), ["column label", "empty"]),
        (_criteo_line("1", ["1.5"] + ["1"] * 12, ["ab"] * 26), ["column I1", "'1.5'"]),
        (_criteo_line("1", ["1"] * 12 + ["99999999999999999999"], ["ab"] * 26), ["column I13"]),
    ],
)
def test_malformed_row_fails_by_default(tmp_path: Path, line: str, fragments: list[str]) -> None:
    good = _criteo_line(*_criteo_rows()[0])
    src = _write(tmp_path / "t.tsv", f"{good}\n{good}\n{line}\n{good}\n")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.CRITEO, src, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{src}:3", *fragments)
    assert not (tmp_path / "o.parquet").exists()


def test_skip_bad_rows_drops_and_counts_them(tmp_path: Path) -> None:
    rows = _criteo_rows()
    bad_count = _criteo_line("1", ["1"] * 13, ["ab"] * 20)
    bad_value = _criteo_line("0", ["x"] * 13, ["ab"] * 26)
    lines = [_criteo_line(*rows[0]), bad_count, _criteo_line(*rows[1]), bad_value]
    lines.append(_criteo_line(*rows[2]))
    src = _write(tmp_path / "t.tsv", "\n".join(lines) + "\n")
    summary = import_log(SourceFormat.CRITEO, src, tmp_path / "o.parquet", skip_bad_rows=True)
    assert summary.rows_written == 3 and summary.rows_skipped == 2
    assert pq.read_table(tmp_path / "o.parquet").to_pydict() == _expected_criteo(rows)
    assert len(summary.skipped_examples) == 2
    assert f"{src}:2" in summary.skipped_examples[0] and "found 34" in summary.skipped_examples[0]
    assert f"{src}:4, column I1" in summary.skipped_examples[1]


def test_every_row_bad_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    src = _write(tmp_path / "t.tsv", "\t".join(["1"] * 40) + "\n" + "\t".join(["x"] * 40) + "\n")
    src2 = _write(tmp_path / "u.tsv", "\t".join(["x"] * 40) + "\n")
    assert import_log("criteo", src, tmp_path / "ok.parquet", skip_bad_rows=True).rows_skipped == 1
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.CRITEO, src2, tmp_path / "o.parquet", skip_bad_rows=True)
    _assert_input_error(info.value, "all 1 rows are malformed", f"{src2}:1")
    assert not (tmp_path / "o.parquet").exists()


def test_failed_import_keeps_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    out.write_bytes(b"previous")
    good = _criteo_line(*_criteo_rows()[0])
    src = _write(tmp_path / "t.tsv", f"{good}\n{good[:-3]}\tx\ty\n")
    with pytest.raises(InputError):
        import_log(SourceFormat.CRITEO, src, out)
    assert out.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == ["o.parquet", "t.tsv"]


_hex = st.text(alphabet="0123456789abcdef", min_size=8, max_size=8)
_criteo_row = st.tuples(
    st.sampled_from(["0", "1"]),
    st.lists(
        st.one_of(st.just(""), st.integers(-(2**40), 2**40).map(str)), min_size=13, max_size=13
    ),
    st.lists(st.one_of(st.just(""), _hex), min_size=26, max_size=26),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_criteo_row, min_size=1, max_size=30), gz=st.booleans())
def test_criteo_import_matches_a_direct_parse(
    rows: list[tuple[str, list[str], list[str]]], gz: bool
) -> None:
    with tempfile.TemporaryDirectory() as d:
        src = _write(Path(d) / "t.tsv", "\n".join(_criteo_line(*r) for r in rows) + "\n", gz=gz)
        summary = import_log(SourceFormat.CRITEO, src, Path(d) / "o.parquet")
        assert summary.rows_written == len(rows)
        assert pq.read_table(Path(d) / "o.parquet").to_pydict() == _expected_criteo(rows)


# ---- Avazu -----------------------------------------------------------------------------------

AVAZU_HEADER = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,"
    "app_category,device_id,device_ip,device_model,device_type,device_conn_type,"
    "C14,C15,C16,C17,C18,C19,C20,C21"
)
AVAZU_STRINGS = [
    "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
    "device_id", "device_ip", "device_model",
]  # fmt: skip
AVAZU_INTS = ["C1", "banner_pos", "device_type", "device_conn_type"] + [
    f"C{i}" for i in range(14, 22)
]


def _avazu_rows() -> list[dict[str, str]]:
    names = AVAZU_HEADER.split(",")
    rows = []
    for r, (row_id, click, hour) in enumerate(
        [("18446744073709551615", "1", "14102100"), ("42", "0", "14103023"), ("7", "0", "15010105")]
    ):
        row = {"id": row_id, "click": click, "hour": hour}
        for k, name in enumerate(names[3:]):
            if name in AVAZU_STRINGS:
                row[name] = f"{(r * 131 + k * 17) % 2**32:08x}"
            else:
                row[name] = str(r * 1000 - k)
        rows.append(row)
    rows[2]["site_domain"] = ""  # a missing string and a missing int
    rows[2]["C20"] = ""
    return rows


def _avazu_text(rows: list[dict[str, str]], names: list[str], header: bool) -> str:
    lines = [",".join(names)] if header else []
    lines += [",".join(row[n] for n in names) for row in rows]
    return "\n".join(lines) + "\n"


def test_avazu_rows_become_typed_columns_with_utc_timestamps(tmp_path: Path) -> None:
    rows, names = _avazu_rows(), AVAZU_HEADER.split(",")
    src = _write(tmp_path / "train.csv.gz", _avazu_text(rows, names, header=True), gz=True)
    summary = import_log(SourceFormat.AVAZU, src, tmp_path / "o.parquet")
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.column_names == ["id", "label", "ts", *names[3:]]
    assert table.column("id").to_pylist() == ["18446744073709551615", "42", "7"]
    assert table.column("label").type == pa.int8()
    assert table.column("label").to_pylist() == [1, 0, 0]
    ts_type = table.schema.field("ts").type
    assert pa.types.is_timestamp(ts_type) and ts_type.tz == "UTC"
    assert table.column("ts").to_pylist() == [
        dt.datetime(2014, 10, 21, 0, tzinfo=UTC),
        dt.datetime(2014, 10, 30, 23, tzinfo=UTC),
        dt.datetime(2015, 1, 1, 5, tzinfo=UTC),
    ]
    for name in AVAZU_STRINGS:
        assert table.schema.field(name).type == pa.string()
        assert table.column(name).to_pylist() == [r[name] or None for r in rows]
    for name in AVAZU_INTS:
        assert table.schema.field(name).type == pa.int64()
        assert table.column(name).to_pylist() == [int(r[name]) if r[name] else None for r in rows]
    roles = summary.roles
    assert roles["id"] is ColumnRole.KEY and roles["ts"] is ColumnRole.TIMESTAMP
    assert roles["label"] is ColumnRole.LABEL and roles["site_id"] is ColumnRole.SPARSE
    assert roles["C14"] is ColumnRole.SPARSE


def test_avazu_without_header_or_with_reordered_header_reads_the_same(tmp_path: Path) -> None:
    rows, names = _avazu_rows(), AVAZU_HEADER.split(",")
    _write(tmp_path / "a.csv", _avazu_text(rows, names, header=True))
    _write(tmp_path / "b.csv", _avazu_text(rows, names, header=False))
    _write(tmp_path / "c.csv", _avazu_text(rows, list(reversed(names)), header=True))
    tables = []
    for name in ("a", "b", "c"):
        import_log(SourceFormat.AVAZU, tmp_path / f"{name}.csv", tmp_path / f"{name}.parquet")
        tables.append(pq.read_table(tmp_path / f"{name}.parquet"))
    assert tables[0].num_rows == 3
    assert tables[1].equals(tables[0]) and tables[2].equals(tables[0])


def test_avazu_test_rows_without_click_have_no_label(tmp_path: Path) -> None:
    names = [n for n in AVAZU_HEADER.split(",") if n != "click"]
    src = _write(tmp_path / "test.csv", _avazu_text(_avazu_rows(), names, header=False))
    import_log(SourceFormat.AVAZU, src, tmp_path / "o.parquet")
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.column_names == ["id", "ts", *names[2:]]


@pytest.mark.parametrize("hour", ["14102199", "1410210", "14x02100", ""])
def test_avazu_bad_hour_names_line_and_column(tmp_path: Path, hour: str) -> None:
    rows, names = _avazu_rows(), AVAZU_HEADER.split(",")
    rows[1]["hour"] = hour
    src = _write(tmp_path / "t.csv", _avazu_text(rows, names, header=True))
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.AVAZU, src, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{src}:3", "column hour", "YYMMDDHH")


def test_avazu_header_with_unknown_and_missing_columns_is_rejected(tmp_path: Path) -> None:
    header = AVAZU_HEADER.replace("site_id", "site_idx").replace(",C21", "")
    src = _write(tmp_path / "t.csv", header + "\n")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.AVAZU, src, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{src}:1", "site_idx", "C21")


def test_avazu_header_only_has_no_rows(tmp_path: Path) -> None:
    src = _write(tmp_path / "t.csv", AVAZU_HEADER + "\n")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.AVAZU, src, tmp_path / "o.parquet")
    _assert_input_error(info.value, "no data rows", str(src))
    assert _leftovers(tmp_path) == ["t.csv"]


# ---- wrong format ----------------------------------------------------------------------------


def test_a_file_of_another_format_is_rejected_at_line_1_with_a_pointer(tmp_path: Path) -> None:
    avazu = _write(tmp_path / "a.csv", _avazu_text(_avazu_rows(), AVAZU_HEADER.split(","), True))
    criteo = _write(tmp_path / "c.tsv", _criteo_line(*_criteo_rows()[0]) + "\n")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.CRITEO, avazu, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{avazu}:1", "1 tab-separated", "avazu")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.AVAZU, criteo, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{criteo}:1", "comma-separated", "--format criteo")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.IPINYOU, criteo, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{criteo}:1", "--format criteo")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.OBD, criteo, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{criteo}:1", "header")
    assert not (tmp_path / "o.parquet").exists()


# ---- iPinYou ---------------------------------------------------------------------------------

FEATINDEX = (
    "weekday:other\t0\nweekday:3\t1\nhour:other\t2\nhour:07\t3\n"
    "IP:other\t4\nIP:10.0.0.*\t5\ncity:9\t6\n"
)


def _ipinyou(tmp_path: Path, data: str, *, gz: bool = False) -> Path:
    suffix = ".gz" if gz else ""
    _write(tmp_path / f"featindex.fm.txt{suffix}", FEATINDEX, gz=gz)
    return _write(tmp_path / f"train.fm.txt{suffix}", data, gz=gz)


@pytest.mark.parametrize("gz", [False, True])
def test_ipinyou_rows_map_indices_to_field_values(tmp_path: Path, gz: bool) -> None:
    data = "1 1:1 3:1 5:1 6:1\n0 0:1 2:1\n\n0 6:1 4:1 1:1\n"
    src = _ipinyou(tmp_path, data, gz=gz)
    summary = import_log(SourceFormat.IPINYOU, src, tmp_path / "o.parquet")
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.column_names == ["label", "weekday", "hour", "IP", "city"]
    assert table.schema.field("label").type == pa.int8()
    assert all(table.schema.field(n).type == pa.string() for n in ("weekday", "hour", "IP", "city"))
    assert table.to_pydict() == {
        "label": [1, 0, 0],
        "weekday": ["3", "other", "3"],
        "hour": ["07", "other", None],
        "IP": ["10.0.0.*", None, "other"],
        "city": ["9", None, "9"],
    }
    assert summary.roles == {
        "label": ColumnRole.LABEL,
        "weekday": ColumnRole.SPARSE,
        "hour": ColumnRole.SPARSE,
        "IP": ColumnRole.SPARSE,
        "city": ColumnRole.SPARSE,
    }


def test_ipinyou_featindex_can_be_given_explicitly(tmp_path: Path) -> None:
    src = _write(tmp_path / "data" / "rows.txt", "1 6:1\n")
    fi = _write(tmp_path / "maps" / "fi.txt", FEATINDEX)
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.IPINYOU, src, tmp_path / "o.parquet")
    _assert_input_error(info.value, "featindex", "--featindex")
    import_log(SourceFormat.IPINYOU, src, tmp_path / "o.parquet", featindex=fi)
    assert pq.read_table(tmp_path / "o.parquet").column("city").to_pylist() == ["9"]


@pytest.mark.parametrize(
    ("bad_line", "fragments"),
    [
        ("0 1:1 99:1", ["column feature 2", "'99:1'", "featindex"]),
        ("0 0:1 1:1", ["column weekday", "second feature", "'1:1'"]),
        ("2 0:1", ["column label", "'2'"]),
        ("1 x:1", ["column feature 1", "'x:1'"]),
        ("1 0:0.5", ["column weekday", "one-hot"]),
    ],
)
def test_ipinyou_malformed_rows_name_line_and_field(
    tmp_path: Path, bad_line: str, fragments: list[str]
) -> None:
    src = _ipinyou(tmp_path, f"1 1:1\n0 2:1\n{bad_line}\n0 3:1\n")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.IPINYOU, src, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{src}:3", *fragments)
    assert not (tmp_path / "o.parquet").exists()
    summary = import_log(SourceFormat.IPINYOU, src, tmp_path / "o.parquet", skip_bad_rows=True)
    assert (summary.rows_written, summary.rows_skipped) == (3, 1)


def test_ipinyou_value_written_as_one_point_zero_is_accepted(tmp_path: Path) -> None:
    src = _ipinyou(tmp_path, "1 1:1.0 6:1\n")
    import_log(SourceFormat.IPINYOU, src, tmp_path / "o.parquet")
    assert pq.read_table(tmp_path / "o.parquet").column("weekday").to_pylist() == ["3"]


@pytest.mark.parametrize(
    ("featindex", "line", "fragment"),
    [
        ("a:1\t0\nb:2\t0\n", 2, "appears twice"),
        ("a:1\t0\nno-colon\t1\n", 2, "no-colon"),
        ("a:1\t0\nb:2\tseven\n", 2, "seven"),
        ("label:1\t0\n", 1, "label"),
    ],
)
def test_malformed_featindex_names_its_line(
    tmp_path: Path, featindex: str, line: int, fragment: str
) -> None:
    src = _write(tmp_path / "train.fm.txt", "1 0:1\n")
    fi = _write(tmp_path / "featindex.fm.txt", featindex)
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.IPINYOU, src, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{fi}:{line}", fragment)


# ---- Open Bandit -----------------------------------------------------------------------------

OBD_HEADER = ",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1"


def _obd_file(path: Path, n_items: int, rows: list[str], *, gz: bool = False) -> Path:
    header = OBD_HEADER + "".join(f",user-item_affinity_{k}" for k in range(n_items))
    return _write(path, header + "\n" + "\n".join(rows) + "\n", gz=gz)


def test_obd_file_becomes_typed_columns(tmp_path: Path) -> None:
    src = _obd_file(
        tmp_path / "bts" / "men" / "men.csv.gz",
        2,
        [
            "0,2019-11-24 00:00:17.904101+00:00,3,1,0,0.0125,aa11,bb22,0.0,1.5",
            "1,2019-11-25 10:20:30+02:00,1,3,1,0.5,cc33,,2.25,",
        ],
        gz=True,
    )
    summary = import_log(SourceFormat.OBD, src, tmp_path / "o.parquet")
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.to_pydict() == {
        "policy": ["bts", "bts"],
        "campaign": ["men", "men"],
        "row_id": [0, 1],
        "ts": [
            dt.datetime(2019, 11, 24, 0, 0, 17, tzinfo=UTC),  # floored to the second
            dt.datetime(2019, 11, 25, 8, 20, 30, tzinfo=UTC),  # +02:00 converted to UTC
        ],
        "item_id": [3, 1],
        "position": [1, 3],
        "label": [0, 1],
        "propensity_score": [0.0125, 0.5],
        "user_feature_0": ["aa11", "cc33"],
        "user_feature_1": ["bb22", None],
        "user-item_affinity_0": [0.0, 2.25],
        "user-item_affinity_1": [1.5, None],
    }
    types = {f.name: f.type for f in table.schema}
    assert types["propensity_score"] == pa.float64()
    assert types["user-item_affinity_0"] == pa.float32()
    assert types["label"] == pa.int8() and types["item_id"] == pa.int64()
    assert summary.roles["policy"] is ColumnRole.KEY and summary.roles["row_id"] is ColumnRole.KEY
    assert summary.roles["ts"] is ColumnRole.TIMESTAMP
    assert summary.roles["campaign"] is ColumnRole.SPARSE
    assert summary.roles["user-item_affinity_1"] is ColumnRole.DENSE


def test_obd_directory_unions_campaign_columns_and_skips_item_context(tmp_path: Path) -> None:
    root = tmp_path / "obd"
    women = ["0,2019-11-26 01:02:03+00:00,2,2,0,0.3,a,b,1,2,3"]
    _obd_file(root / "random" / "women" / "women.csv", 3, women)
    men = ["0,2019-11-24 00:00:00+00:00,0,1,1,0.1,c,d,4"]
    _obd_file(root / "bts" / "men" / "men.csv.gz", 1, men, gz=True)
    _write(root / "bts" / "men" / "item_context.csv", ",item_id,item_feature_0\n0,0,0.5\n")
    summary = import_log(SourceFormat.OBD, root, tmp_path / "o.parquet")
    assert [p.relative_to(root).as_posix() for p in summary.input_paths] == [
        "bts/men/men.csv.gz",
        "random/women/women.csv",
    ]
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.column("policy").to_pylist() == ["bts", "random"]
    assert table.column("campaign").to_pylist() == ["men", "women"]
    assert table.column("user-item_affinity_0").to_pylist() == [4.0, 1.0]
    assert table.column("user-item_affinity_2").to_pylist() == [None, 3.0]
    meta = json.loads(table.schema.metadata[IMPORT_METADATA_KEY])
    assert meta["inputs"] == ["bts/men/men.csv.gz", "random/women/women.csv"]


def test_obd_file_outside_the_policy_layout_has_null_policy(tmp_path: Path) -> None:
    src = _obd_file(tmp_path / "mine.csv", 0, ["5,2019-11-24 00:00:00+00:00,0,1,1,0.1,c,d"])
    import_log(SourceFormat.OBD, src, tmp_path / "o.parquet")
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.column("policy").to_pylist() == [None]
    assert table.column("campaign").to_pylist() == ["mine"]


def test_obd_timestamp_without_zone_names_the_column(tmp_path: Path) -> None:
    src = _obd_file(
        tmp_path / "x.csv",
        0,
        ["0,2019-11-24 00:00:00+00:00,0,1,1,0.1,c,d", "1,2019-11-24 00:00:05,0,1,1,0.1,c,d"],
    )
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.OBD, src, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{src}:3", "column timestamp", "zone offset")


def test_obd_bad_headers_are_all_reported_at_once(tmp_path: Path) -> None:
    root = tmp_path / "obd"
    _write(root / "a" / "a.csv", ",timestamp,item_id\n")
    _write(root / "b" / "b.csv", OBD_HEADER + ",colour\n")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.OBD, root, tmp_path / "o.parquet")
    _assert_input_error(info.value, "2 problems", "a.csv:1", "click", "b.csv:1", "colour")


def test_obd_directory_without_logs_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "item_context.csv", ",item_id\n0,0\n")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.OBD, tmp_path / "d", tmp_path / "o.parquet")
    _assert_input_error(info.value, str(tmp_path / "d"), "no Open Bandit log files")


# ---- arguments, streams, summary -------------------------------------------------------------


def test_argument_problems_are_reported_together(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.CRITEO, tmp_path / "missing.tsv", tmp_path, featindex="x")
    _assert_input_error(info.value, "3 problems", "missing.tsv", "directory", "featindex")


def test_unknown_format_and_directory_for_a_file_format(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        import_log("parquet", tmp_path, tmp_path / "o.parquet")
    _assert_input_error(info.value, "'parquet'", "criteo")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.CRITEO, tmp_path, tmp_path / "o.parquet")
    _assert_input_error(info.value, str(tmp_path), "directory")


def test_empty_and_truncated_gzip_inputs(tmp_path: Path) -> None:
    empty = _write(tmp_path / "e.tsv", "")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.CRITEO, empty, tmp_path / "o.parquet")
    _assert_input_error(info.value, str(empty), "empty")
    good = "\n".join(_many_criteo_lines(300)) + "\n"
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes(gzip.compress(good.encode())[:-40])
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.CRITEO, cut, tmp_path / "o.parquet")
    _assert_input_error(info.value, str(cut), "cannot read")
    assert not (tmp_path / "o.parquet").exists()


def test_progress_reports_every_input_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _write(tmp_path / "t.tsv.gz", "\n".join(_many_criteo_lines(80)) + "\n", gz=True)
    monkeypatch.setattr(_text, "DEFAULT_BLOCK_BYTES", 1000)
    seen: list[int] = []
    import_log(SourceFormat.CRITEO, src, tmp_path / "o.parquet", progress=seen.append)
    assert len(seen) > 1 and sum(seen) == src.stat().st_size


def test_summary_is_frozen(tmp_path: Path) -> None:
    src = _write(tmp_path / "t.tsv", _criteo_line(*_criteo_rows()[0]) + "\n")
    summary = import_log(SourceFormat.CRITEO, src, tmp_path / "o.parquet")
    assert isinstance(summary, ImportSummary) and summary.format is SourceFormat.CRITEO
    assert summary.input_paths == (src,) and summary.out_path == tmp_path / "o.parquet"
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.rows_written = 0  # type: ignore[misc]


def test_other_compressions_are_named_not_parsed(tmp_path: Path) -> None:
    src = tmp_path / "t.tsv.bz2"
    src.write_bytes(bz2.compress(b"1\t2\n"))
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.CRITEO, src, tmp_path / "o.parquet")
    _assert_input_error(info.value, str(src), "bzip2")


def test_invalid_utf8_is_a_malformed_row(tmp_path: Path) -> None:
    good = _criteo_line(*_criteo_rows()[0]).encode()
    fields = good.split(b"\t")
    fields[20] = b"ab\xffcd"  # C7
    src = tmp_path / "t.tsv"
    src.write_bytes(good + b"\n" + b"\t".join(fields) + b"\n" + good + b"\n")
    with pytest.raises(InputError) as info:
        import_log(SourceFormat.CRITEO, src, tmp_path / "o.parquet")
    _assert_input_error(info.value, f"{src}:2", "column C7", "UTF-8")
    summary = import_log(SourceFormat.CRITEO, src, tmp_path / "o.parquet", skip_bad_rows=True)
    assert (summary.rows_written, summary.rows_skipped) == (2, 1)

    ip = _ipinyou(tmp_path / "ip", "1 1:1\n")
    ip.write_bytes(b"1 1:1\n0 \xff:1\n0 6:1\n")
    summary = import_log(SourceFormat.IPINYOU, ip, tmp_path / "ip.parquet", skip_bad_rows=True)
    assert (summary.rows_written, summary.rows_skipped) == (2, 1)
    assert f"{ip}:2" in summary.skipped_examples[0] and "UTF-8" in summary.skipped_examples[0]
