import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adrank.errors import InputError, NotFoundError
from adrank.formats import (
    atomic_path,
    fingerprint,
    parquet_file_fingerprint,
    read_json_document,
    write_json_document,
)


def test_json_document_round_trip(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "doc.json"
    write_json_document(dest, "adrank.test", 3, {"a": [1, 2]})
    doc = read_json_document(dest, "adrank.test", (3,))
    assert doc == {"kind": "adrank.test", "format_version": 3, "a": [1, 2]}


def test_read_refuses_wrong_kind_and_version(tmp_path: Path) -> None:
    dest = tmp_path / "doc.json"
    write_json_document(dest, "adrank.plan", 1, {})
    with pytest.raises(InputError, match="kind 'adrank.plan'"):
        read_json_document(dest, "adrank.stats", (1,))
    with pytest.raises(InputError, match="unsupported format_version 1"):
        read_json_document(dest, "adrank.plan", (2,))


def test_read_reports_corrupt_json_with_position(tmp_path: Path) -> None:
    dest = tmp_path / "doc.json"
    dest.write_text('{"kind": "adrank.stats", ')
    with pytest.raises(InputError) as info:
        read_json_document(dest, "adrank.stats", (1,))
    assert info.value.source == str(dest)
    assert "line 1" in str(info.value)


def test_read_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_json_document(tmp_path / "nope.json", "adrank.stats", (1,))


def test_atomic_path_failure_keeps_old_contents(tmp_path: Path) -> None:
    dest = tmp_path / "out.json"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_nan_is_refused_rather_than_written_as_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_json_document(tmp_path / "x.json", "adrank.test", 1, {"v": float("nan")})
    assert not (tmp_path / "x.json").exists()


def test_fingerprint_is_order_independent_for_keys_and_sensitive_to_values() -> None:
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert json.loads(json.dumps(fingerprint([1]))).startswith("sha256:")


def test_parquet_fingerprint_tracks_content(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), a)
    pq.write_table(pa.table({"x": [1, 2, 3]}), b)
    pq.write_table(pa.table({"x": [1, 2, 4]}), c)
    assert parquet_file_fingerprint(a) == parquet_file_fingerprint(b)
    assert parquet_file_fingerprint(a) != parquet_file_fingerprint(c)


def test_parquet_fingerprint_rejects_non_parquet(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not a parquet file at all")
    with pytest.raises(InputError) as info:
        parquet_file_fingerprint(bad)
    assert "bad.parquet" in str(info.value)


def test_atomic_outputs_follow_the_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        write_json_document(tmp_path / "m.json", "adrank.test", 1, {})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_one_size_grammar_for_flags_and_files() -> None:
    import argparse

    from adrank.cli._args import size_bytes
    from adrank.units import parse_size_bytes, scaled_bytes

    # GiB/G are powers of 1024, GB of 1000: the CLI adapter and the library agree.
    assert size_bytes("2G") == parse_size_bytes("2GiB") == 2 << 30
    assert size_bytes("2GB") == parse_size_bytes("2GB") == 2_000_000_000
    assert scaled_bytes("12.5GB") == 12.5e9 and scaled_bytes("fast") is None
    with pytest.raises(argparse.ArgumentTypeError, match="expected a size"):
        size_bytes("lots")
    with pytest.raises(InputError) as info:
        parse_size_bytes("0.5", source="--memory-budget")
    assert info.value.source == "--memory-budget"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600),
        ("3600s", 3600),
        ("90m", 5400),
        ("1.5h", 5400),
        ("6H", 21_600),
        ("30d", 2_592_000),
        ("2w", 1_209_600),
    ],
)
def test_one_duration_grammar_for_every_flag(text: str, seconds: int) -> None:
    from adrank.cli import build_parser
    from adrank.cli._args import duration_s
    from adrank.units import parse_duration_s

    assert parse_duration_s(text) == duration_s(text) == seconds
    # The flags that take durations all use it (stats, prune and ingest once disagreed on 1.5h).
    parser = build_parser()
    files = ["x.parquet"]
    ingest = ["ingest", "--store", "s", "--group", "g", "--entity-column", "e"]
    ingest += ["--timestamp-column", "t", "--ttl", text, *files]
    assert parser.parse_args(ingest).ttl == seconds
    stats = parser.parse_args(["stats", *files, "-o", "o.json", "--recent-window", text])
    assert stats.recent_window_s == seconds
    assert parser.parse_args(["prune", "--plan", "p", *files, "--window", text]).window == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "0.5s", "1.5", "3y", "h"])
def test_bad_durations_are_refused_by_name(text: str) -> None:
    import argparse

    from adrank.cli._args import duration_s
    from adrank.units import parse_duration_s

    with pytest.raises(InputError) as info:
        parse_duration_s(text, source="--ttl")
    assert info.value.source == "--ttl" and repr(text) in info.value.message
    with pytest.raises(argparse.ArgumentTypeError):
        duration_s(text)
