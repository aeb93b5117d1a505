"""``adrank join``: point-in-time join of training examples with feature groups, to parquet."""

from __future__ import annotations

import argparse
import re
from typing import Any

__all__ = ["register", "run", "parse_group_specs", "parse_size_bytes"]

_DEFAULT_BATCH_ROWS = 65_536  # feature_service.pit_join.DEFAULT_JOIN_BATCH_ROWS (kept for --help)
_DEFAULT_MEMORY = "2G"  # feature_service.pit_join.DEFAULT_JOIN_MEMORY_BYTES
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size_bytes(text: str) -> int:
    """Parse a size such as ``512M``, ``2G``, ``1.5GiB`` or ``1048576`` into bytes (argparse type).

    Raises:
        argparse.ArgumentTypeError: Not a size (argparse exits 2 with the message).
    """
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size like 512M or 2G, found {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_group_specs(
    values: list[str], default_column: str | None
) -> list[tuple[str, str | None]]:
    """Split ``--groups`` values (``NAME[=COLUMN]``, comma-separated, flag repeatable) into
    ``(group, column)`` pairs; a missing column is ``default_column`` (None if not given)."""
    out: list[tuple[str, str | None]] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            name, eq, column = part.partition("=")
            out.append((name.strip(), column.strip() if eq else default_column))
    return out


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``join`` subcommand to ``subparsers`` and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "join",
        help="point-in-time join of training examples with feature groups",
        description=(
            "Attach to every example row the newest feature values of each group with event "
            "time <= the example's time and within the group's TTL (ties: the newest created "
            "time). A left join: every example row is kept, in order, with all its columns; "
            "features are null where nothing qualifies, counted by reason (null key, no entity, "
            "only future rows, expired). Output columns are named <group>__<feature>. Streams "
            "the examples in batches and writes the output atomically."
        ),
    )
    p.add_argument("--store", required=True, metavar="PATH", help="feature store directory")
    p.add_argument(
        "--examples", required=True, metavar="FILE", help="parquet file of training examples"
    )
    p.add_argument(
        "--groups",
        required=True,
        action="append",
        metavar="NAME[=COL],...",
        help="feature groups to join, each on COL (default: --entity-column), e.g. "
        "user=user_id,ad=ad_id; repeatable",
    )
    p.add_argument(
        "--entity-column",
        metavar="COL",
        help="example column of entity ids for groups given without =COL",
    )
    p.add_argument("--timestamp-column", required=True, metavar="COL", help="example time column")
    p.add_argument(
        "--timestamp-unit",
        choices=("s", "ms", "us", "ns"),
        default="s",
        help="unit of an integer time column (default s; timestamp columns carry their own)",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="joined parquet file to write"
    )
    p.add_argument(
        "--separator",
        default="__",
        metavar="SEP",
        help="between the group prefix and the feature name in output columns (default __)",
    )
    p.add_argument(
        "--prefix",
        action="append",
        default=[],
        metavar="GROUP=PREFIX",
        help="output prefix of a group's columns instead of its name (repeatable); needed to "
        "join one group twice",
    )
    p.add_argument(
        "--event-ts",
        action="store_true",
        help="also write <prefix>__event_ts: the event time of the version used",
    )
    p.add_argument(
        "--strategy",
        choices=("auto", "scan", "seek"),
        default="auto",
        help="read groups by one sequential scan (kept in memory), by one seek per example, or "
        "choose per group by cost (default auto)",
    )
    p.add_argument(
        "--batch-rows",
        type=int,
        default=_DEFAULT_BATCH_ROWS,
        metavar="N",
        help=f"example rows per batch (default {_DEFAULT_BATCH_ROWS:,})",
    )
    p.add_argument(
        "--memory-budget",
        type=parse_size_bytes,
        default=parse_size_bytes(_DEFAULT_MEMORY),
        metavar="SIZE",
        help=f"memory for scanned groups' decoded versions (default {_DEFAULT_MEMORY}); "
        "groups that do not fit are read by seeks",
    )
    return p


def _specs(args: argparse.Namespace) -> list[Any]:
    from adrank.errors import InputError
    from feature_service import JoinSpec

    problems: list[InputError] = []
    prefixes: dict[str, str] = {}
    for item in args.prefix:
        group, eq, prefix = item.partition("=")
        if not eq or not group.strip():
            problems.append(
                InputError(
                    f"--prefix expects GROUP=PREFIX, found {item!r}",
                    source="--prefix",
                    hint="e.g. --prefix user=u",
                )
            )
            continue
        prefixes[group.strip()] = prefix.strip()
    specs = []
    pairs = parse_group_specs(args.groups, args.entity_column)
    if not pairs:
        problems.append(InputError("no groups given", source="--groups", hint="e.g. user=user_id"))
    for group, column in pairs:
        if not group:
            problems.append(
                InputError("a --groups item has no group name", source="--groups", hint="NAME=COL")
            )
            continue
        if column == "":
            problems.append(
                InputError(
                    f"--groups item {group + '='!r} names no column",
                    source="--groups",
                    hint=f"write {group}=COLUMN, or {group} with --entity-column",
                )
            )
            continue
        if column is None:
            problems.append(
                InputError(
                    f"group {group!r} has no entity column",
                    source="--groups",
                    hint=f"write {group}=COLUMN or pass --entity-column",
                )
            )
            continue
        specs.append(JoinSpec(group, column, prefix=prefixes.get(group)))
    unknown_prefix = sorted(set(prefixes) - {g for g, _c in pairs})
    if unknown_prefix:
        problems.append(
            InputError(
                f"--prefix names groups not joined: {', '.join(unknown_prefix)}",
                source="--prefix",
            )
        )
    if args.batch_rows <= 0:
        problems.append(
            InputError(
                f"--batch-rows must be positive, found {args.batch_rows}", source="--batch-rows"
            )
        )
    if problems:
        raise InputError.from_problems(problems)
    return specs


def run(args: argparse.Namespace) -> int:
    """Join the examples and print a summary; return the exit code."""
    import pyarrow.parquet as pq

    from adrank.cli._progress import progress_bar
    from feature_service import FeatureStore, JoinStrategy, join_to_parquet

    specs = _specs(args)
    try:
        total = pq.ParquetFile(args.examples).metadata.num_rows
    except (OSError, ValueError):  # only sizes the bar; join_to_parquet reports a bad file
        total = 0
    with (
        FeatureStore.open(args.store, read_only=True) as store,
        progress_bar(total or None, "join", "rows", quiet=args.quiet) as progress,
    ):
        report = join_to_parquet(
            store,
            args.examples,
            args.output,
            specs,
            timestamp_column=args.timestamp_column,
            timestamp_unit=args.timestamp_unit,
            batch_rows=args.batch_rows,
            separator=args.separator,
            include_event_ts=args.event_ts,
            strategy=JoinStrategy(args.strategy),
            memory_budget_bytes=args.memory_budget,
            progress=progress,
        )
    print(
        f"joined {report.rows:,} example rows with {len(report.groups)} group(s) into "
        f"{args.output} in {report.elapsed_s:.2f} s ({report.rows_per_s:,.0f} rows/s)"
    )
    for g in report.groups:
        print(
            f"  {g.group} on {g.entity_column} -> {g.prefix}{args.separator}* ({g.strategy}): "
            f"{g.matched:,} matched, {g.missing:,} null ({g.null_key:,} null key, "
            f"{g.no_entity:,} no entity, {g.future_only:,} only future rows, "
            f"{g.expired:,} expired by TTL)"
        )
    return 0
