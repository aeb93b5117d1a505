"""``adrank import``: convert a raw public click log (Criteo, Avazu, iPinYou, OBD) to parquet."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["FORMATS", "register", "run"]

# SourceFormat's values, repeated so that `adrank --help` need not import pyarrow;
# tests/integration/test_cli_import.py checks they agree.
FORMATS = ("criteo", "avazu", "ipinyou", "obd")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``import`` subcommand to ``subparsers`` and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "import",
        help="convert a raw public click log (Criteo, Avazu, iPinYou, Open Bandit) to parquet",
        description=(
            "Read a raw public click-log sample (plain or gzip) and write it as one parquet file "
            "in adrank's canonical log schema: sparse ids under their source names (strings stay "
            "strings, integer ids int64), label int8, dense values float32, event time ts "
            "(timestamp, UTC) where the source has one, column roles in the schema metadata. "
            "Formats: criteo (Kaggle DAC TSV rows: label, I1..I13, C1..C26), avazu (CSV rows with "
            "or without header: id, click, hour, ..., C21), ipinyou (one-hot 'label idx:1 ...' "
            "rows plus a featindex file), obd (Open Bandit CSVs: a file or a directory of them). "
            "The first malformed row stops the import with its file, line and column, unless "
            "--skip-bad-rows. The output is written atomically: a failed run leaves nothing."
        ),
    )
    p.add_argument("path", metavar="PATH", help="input file (or, for obd, a directory)")
    p.add_argument(
        "--format",
        "-f",
        dest="source_format",
        required=True,
        choices=FORMATS,
        help="source format of PATH",
    )
    p.add_argument(
        "-o", "--out", required=True, metavar="OUT.parquet", help="parquet file to write"
    )
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip malformed rows and count them instead of stopping at the first",
    )
    p.add_argument(
        "--featindex",
        metavar="FILE",
        help="ipinyou: the field:value<TAB>index file (default: found beside PATH)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    return p


def _names(names: Sequence[str], limit: int = 6) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:3]) + ", ..., " + ", ".join(names[-2:])


def _roles_line(columns: Sequence[str], roles: Mapping[str, Any]) -> str:
    from adrank.types import ColumnRole

    parts = []
    for role in ColumnRole:
        names = [c for c in columns if roles.get(c) is role]
        if names:
            parts.append(f"{role.value} {len(names)} ({_names(names)})")
    return "; ".join(parts)


def _size(n_bytes: int) -> str:
    if n_bytes < 1 << 20:
        return f"{n_bytes / 1024:.1f} KiB"
    return f"{n_bytes / (1 << 20):.2f} MiB"


def run(args: argparse.Namespace) -> int:
    """Import the log and print a summary; return the exit code."""
    from adrank.cli._progress import progress_bar
    from adrank.data.importers import SourceFormat, import_log
    from adrank.errors import InputError

    path, out = Path(args.path), Path(args.out)
    if out.exists() and not out.is_dir() and not args.overwrite:
        raise InputError(
            "output file exists",
            source=str(out),
            hint="pass --overwrite to replace it, or another -o",
        )
    total = path.stat().st_size if path.is_file() else None
    with progress_bar(total, f"import {args.source_format}", "B", quiet=args.quiet) as progress:
        summary = import_log(
            SourceFormat(args.source_format),
            path,
            out,
            skip_bad_rows=args.skip_bad_rows,
            featindex=args.featindex,
            progress=progress,
        )
    inputs = summary.input_paths
    source = inputs[0].name if len(inputs) == 1 else f"{len(inputs)} files under {path}"
    print(f"imported {summary.format.value} {source} -> {summary.out_path}")
    print(f"  rows written  {summary.rows_written:,}")
    print(
        f"  rows skipped  {summary.rows_skipped:,}"
        + ("" if args.skip_bad_rows else " (--skip-bad-rows off)")
    )
    for example in summary.skipped_examples:
        print(f"    skipped {example}")
    if summary.rows_skipped > len(summary.skipped_examples):
        print(f"    ... and {summary.rows_skipped - len(summary.skipped_examples):,} more")
    print(f"  columns       {len(summary.columns)}: {_roles_line(summary.columns, summary.roles)}")
    print(f"  output        {_size(summary.out_bytes)}")
    print(f"  time          {summary.elapsed_s:.2f} s ({summary.rows_per_s:,.0f} rows/s)")
    return 0
