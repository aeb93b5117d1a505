"""``adrank join``: point-in-time join of training examples with feature groups, to parquet."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from adrank.cli._args import size_bytes
from adrank.cli._config import JOIN_FLAGS, add_config_argument, resolve_config

__all__ = ["register", "run", "GroupArg", "parse_group_args"]

_DEFAULT_BATCH_ROWS = 65_536  # feature_service.pit_join.DEFAULT_JOIN_BATCH_ROWS (kept for --help)
_DEFAULT_MEMORY = "2G"  # feature_service.pit_join.DEFAULT_JOIN_MEMORY_BYTES


@dataclass(frozen=True, slots=True)
class GroupArg:
    """One ``--groups`` item: ``NAME[=COLUMN][:PREFIX]`` as written (empty strings kept, so that
    the caller can report them)."""

    text: str
    group: str
    column: str | None
    prefix: str | None


def parse_group_args(values: list[str]) -> list[GroupArg]:
    """Split ``--groups`` values (comma-separated items, flag repeatable) into items.

    ``user`` joins group user on the default entity column; ``user=user_id`` on column user_id;
    ``user=seller_id:seller`` on seller_id with output columns ``seller__*`` (a group joined twice
    needs distinct prefixes).
    """
    out: list[GroupArg] = []
    for value in values:
        for part in value.split(","):
            text = part.strip()
            if not text:
                continue
            head, colon, prefix = text.partition(":")
            name, eq, column = head.partition("=")
            out.append(
                GroupArg(
                    text,
                    name.strip(),
                    column.strip() if eq else None,
                    prefix.strip() if colon else None,
                )
            )
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
            "only future rows, expired by TTL). Output columns are named <group>__<feature>. "
            "Streams the examples in batches and writes the output atomically: on failure "
            "nothing is written and an existing output is left as it was."
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
        metavar="NAME[=COL][:PREFIX],...",
        help="feature groups to join, each on example column COL (default: --entity-column), "
        "with output columns PREFIX__* (default: the group name), e.g. user=user_id,ad=ad_id "
        "or user=buyer_id:buyer,user=seller_id:seller; repeatable",
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
        help="between the prefix and the feature name in output columns (default __)",
    )
    p.add_argument(
        "--event-ts",
        action="store_true",
        help="also write PREFIX__event_ts per group: the event time of the version used",
    )
    p.add_argument(
        "--strategy",
        choices=("auto", "scan", "seek"),
        default="auto",
        help="read each group by one sequential scan kept in memory, by one seek per example, "
        "or choose per group by cost (default auto)",
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
        type=size_bytes,
        default=size_bytes(_DEFAULT_MEMORY),
        metavar="SIZE",
        help=f"memory for scanned groups' versions (default {_DEFAULT_MEMORY}); groups that do "
        "not fit are read by seeks",
    )
    p.add_argument(
        "--snapshot-dir",
        metavar="DIR",
        help="keep snapshots of scanned groups here: a later join of the unchanged store loads "
        "them instead of scanning RocksDB (any write to the store invalidates them)",
    )
    add_config_argument(p, "join", JOIN_FLAGS)
    return p


def _specs(args: argparse.Namespace) -> list[Any]:
    """Join specs from the flags; every problem reported at once (exit 2)."""
    from adrank.errors import InputError
    from feature_service import JoinSpec

    problems: list[InputError] = []
    specs = []
    items = parse_group_args(args.groups)
    if not items:
        problems.append(InputError("no groups given", source="--groups", hint="e.g. user=user_id"))
    for item in items:
        column = item.column if item.column is not None else args.entity_column
        if not item.group or column == "" or item.prefix == "":
            problems.append(
                InputError(
                    f"--groups item {item.text!r} is malformed; expected NAME[=COLUMN][:PREFIX]",
                    source="--groups",
                )
            )
            continue
        if column is None:
            problems.append(
                InputError(
                    f"group {item.group!r} has no entity column",
                    source="--groups",
                    hint=f"write {item.group}=COLUMN or pass --entity-column",
                )
            )
            continue
        specs.append(JoinSpec(item.group, column, prefix=item.prefix))
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

    resolve_config(args)  # defaults < --config file < flags given
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
            snapshot_dir=args.snapshot_dir,
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
