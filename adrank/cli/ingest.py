"""``adrank ingest``: bulk-load parquet feature snapshots into a RocksDB feature store."""

from __future__ import annotations

import argparse
from typing import Any

from adrank.cli._args import duration_s

__all__ = ["register", "run"]

_DEFAULT_BATCH_ROWS = (
    65_536  # feature_service.ingest.DEFAULT_INGEST_BATCH_ROWS; kept here for --help speed
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``ingest`` subcommand to ``subparsers`` and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ingest",
        help="bulk-load parquet feature snapshots into a feature store",
        description=(
            "Ingest parquet snapshots (entity id, event time, feature values) into a feature "
            "group of "
            "a RocksDB feature store. Every column other than the entity, timestamp and created "
            "columns is a feature; the group's schema is inferred on first ingest and must match "
            "later. Streamed by record batch, atomic per batch and resumable: re-running the same "
            "command after a crash skips what was committed. Rows with a null entity or time are "
            "rejected and counted."
        ),
    )
    p.add_argument(
        "files", nargs="+", metavar="FILE", help="parquet snapshot files, ingested in order"
    )
    p.add_argument(
        "--store",
        required=True,
        metavar="PATH",
        help="feature store directory (created if missing)",
    )
    p.add_argument("--group", required=True, metavar="NAME", help="feature group to write")
    p.add_argument(
        "--entity-column", required=True, metavar="COL", help="column of entity ids (int or string)"
    )
    p.add_argument("--timestamp-column", required=True, metavar="COL", help="column of event times")
    p.add_argument(
        "--created-column",
        metavar="COL",
        help="column of created times, breaking ties between versions with the same event "
        "time (default: none; a later ingest then replaces such versions)",
    )
    p.add_argument(
        "--entity-type",
        metavar="TYPE",
        help="entity type of a new group (default: the entity column without '_id')",
    )
    p.add_argument(
        "--ttl",
        type=duration_s,
        metavar="DURATION",
        help="feature TTL, e.g. 30d or 12h (default: keep the group's; none for a new group)",
    )
    p.add_argument(
        "--timestamp-unit",
        choices=("s", "ms", "us", "ns"),
        default="s",
        help="unit of integer time columns (default s; timestamp columns carry their own)",
    )
    p.add_argument(
        "--batch-rows",
        type=int,
        default=_DEFAULT_BATCH_ROWS,
        metavar="N",
        help=f"rows per atomic batch (default {_DEFAULT_BATCH_ROWS:,})",
    )
    p.add_argument(
        "--add-features",
        action="store_true",
        help="let columns the group lacks become new features (a new schema version)",
    )
    p.add_argument(
        "--no-scan-snapshot",
        dest="scan_snapshot",
        action="store_false",
        help="do not refresh the group's scan snapshot after the ingest (by default one scan of "
        "the group writes it, so the next `adrank join` reads files instead of scanning RocksDB)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Ingest the files and print a summary; return the exit code."""
    import pyarrow.parquet as pq

    from adrank.cli._progress import progress_bar
    from feature_service import FeatureStore, ingest_parquet

    total = 0
    for f in args.files:
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except (OSError, ValueError):  # only sizes the bar; ingest_parquet reports bad files
            total = 0
            break
    with (
        FeatureStore.open(args.store) as store,
        progress_bar(total or None, f"ingest {args.group}", "rows", quiet=args.quiet) as progress,
    ):
        report = ingest_parquet(
            store,
            args.files,
            group=args.group,
            entity_column=args.entity_column,
            timestamp_column=args.timestamp_column,
            created_column=args.created_column,
            entity_type=args.entity_type,
            ttl_s=args.ttl,
            timestamp_unit=args.timestamp_unit,
            batch_rows=args.batch_rows,
            add_features=args.add_features,
            progress=progress,
            scan_snapshot=args.scan_snapshot,
        )
    g = report.group
    rate = (
        (report.rows_written + report.rows_rejected) / report.elapsed_s
        if report.elapsed_s > 0
        else 0.0
    )
    ttl = "none" if g.ttl_s is None else f"{g.ttl_s} s"
    print(
        f"group {g.name} (entity {g.entity_type}, {len(g.features)} features, schema "
        f"v{g.schema_version}, "
        f"ttl {ttl}) in {args.store}"
    )
    for f in report.files:
        skipped = (
            f" ({f.batches_skipped} batches already committed, skipped)"
            if f.batches_skipped
            else ""
        )
        print(f"  {f.path}: {f.rows_written:,} rows written, {f.rows_rejected:,} rejected{skipped}")
        for reason in f.rejected_examples:
            print(f"    rejected: {reason}")
    print(
        f"{report.rows_written:,} rows written, {report.rows_rejected:,} rejected in "
        f"{report.elapsed_s:.1f} s ({rate:,.0f} rows/s)"
    )
    print(f"scan snapshot: {report.snapshot} ({report.snapshot_s:.1f} s)")
    return 0
