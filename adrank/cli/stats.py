"""``adrank stats``: per-feature statistics of parquet click logs (the sharding planner's input).

adrank stats LOGS... -o stats.json [--features a,b] [--timestamp-column ts]
             [--recent-window 1d] [--exact-limit N] [--hll-precision P] [--heavy-hitters K]
adrank stats --merge a.json b.json -o all.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from adrank.cli._args import duration_s, positive_int
from adrank.constants import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_EXACT_DISTINCT_LIMIT,
    DEFAULT_HEAVY_HITTERS,
    DEFAULT_HLL_PRECISION,
    DEFAULT_RECENT_WINDOW_S,
)

__all__ = ["print_stats_table", "register", "run"]

# Options that only make sense when computing from parquet (refused with --merge).
_COMPUTE_OPTIONS = (
    ("features", "--features"),
    ("timestamp_column", "--timestamp-column"),
    ("recent_window_s", "--recent-window"),
    ("exact_limit", "--exact-limit"),
    ("hll_precision", "--hll-precision"),
    ("heavy_hitters", "--heavy-hitters"),
)


def _hll_precision(text: str) -> int:
    lo, hi = 4, 18  # sharding_planner.types.HLL_PRECISION_RANGE (not imported: keeps --help fast)
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [{lo}, {hi}], found {text!r}"
        ) from None
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], found {text!r}")
    return value


def _feature_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated column names, found {text!r}")
    return names


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``stats`` subcommand to ``subparsers`` and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "stats",
        help="per-feature statistics of click logs (input of the sharding planner)",
        description=(
            "Stream parquet click logs and compute, per sparse feature: rows, coverage, distinct "
            "ids (exact up to --exact-limit, HyperLogLog beyond), heavy hitters, the id-frequency "
            "distribution (quantiles, Zipf exponent, traffic share of the top 1%%/10%% of ids), "
            "pooling factor of multi-hot features, and the share of ids unseen in the last "
            "--recent-window. Writes versioned JSON that `--merge` combines across log shards."
        ),
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="LOGS",
        help="parquet files or directories of them (with --merge: stats.json files)",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="stats file to write (JSON)"
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="inputs are stats files of disjoint log shards; merge them into OUT",
    )
    p.add_argument(
        "--features",
        type=_feature_list,
        default=None,
        metavar="A,B",
        help="only these columns (default: every column whose role is sparse)",
    )
    p.add_argument(
        "--timestamp-column",
        default=None,
        metavar="NAME",
        help="event-time column (default: the file's timestamp-role column, if exactly one)",
    )
    p.add_argument(
        "--recent-window",
        dest="recent_window_s",
        type=duration_s,
        default=None,
        metavar="DURATION",
        help=f"ids unseen for this long before the logs end are dead-row candidates "
        f"(e.g. 1d, 6h, 3600s; default {DEFAULT_RECENT_WINDOW_S}s)",
    )
    p.add_argument(
        "--exact-limit",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"distinct ids per feature counted exactly before sampling "
        f"(default {DEFAULT_EXACT_DISTINCT_LIMIT})",
    )
    p.add_argument(
        "--hll-precision",
        type=_hll_precision,
        default=None,
        metavar="P",
        help=f"HyperLogLog precision, 4..18 (default {DEFAULT_HLL_PRECISION}: 0.81%% error)",
    )
    p.add_argument(
        "--heavy-hitters",
        type=positive_int,
        default=None,
        metavar="K",
        help=f"heavy hitters reported per feature (default {DEFAULT_HEAVY_HITTERS})",
    )
    p.add_argument(
        "--batch-rows",
        type=positive_int,
        default=DEFAULT_BATCH_ROWS,
        metavar="N",
        help=f"rows per streamed record batch (default {DEFAULT_BATCH_ROWS})",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="worker threads (default 0: all available cores)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Compute (or merge) stats, write them atomically and print a summary table."""
    from adrank.cli._progress import progress_bar
    from adrank.errors import AdrankError, InputError
    from sharding_planner import StatsConfig, compute_stats, merge_stats, read_stats, write_stats

    if Path(args.output).is_dir():
        raise InputError(
            "the output path is a directory",
            source=args.output,
            hint="pass a file name, e.g. -o stats.json",
        )
    if args.merge:
        given = [flag for attr, flag in _COMPUTE_OPTIONS if getattr(args, attr) is not None]
        if given:
            raise InputError(
                f"{', '.join(given)} cannot be combined with --merge",
                source=", ".join(given),
                hint="merged files keep the settings they were computed with",
            )
        reports, problems = [], []
        for path in args.inputs:
            try:
                reports.append(read_stats(path))
            except AdrankError as exc:  # InputError or NotFoundError: all reported together
                problems.append(
                    exc
                    if isinstance(exc, InputError)
                    else InputError(exc.message, source=exc.source, hint=exc.hint)
                )
        if problems:
            raise InputError.from_problems(problems)
        report = merge_stats(reports, sources=list(args.inputs))
    else:
        config = StatsConfig(
            features=args.features,
            timestamp_column=args.timestamp_column,
            recent_window_s=_or(args.recent_window_s, DEFAULT_RECENT_WINDOW_S),
            exact_distinct_limit=_or(args.exact_limit, DEFAULT_EXACT_DISTINCT_LIMIT),
            hll_precision=_or(args.hll_precision, DEFAULT_HLL_PRECISION),
            heavy_hitters=_or(args.heavy_hitters, DEFAULT_HEAVY_HITTERS),
            batch_rows=args.batch_rows,
            threads=args.threads,
        )
        with progress_bar(None, "stats", "rows", quiet=args.quiet) as progress:
            report = compute_stats(args.inputs, config, progress=progress)
    try:
        write_stats(report, args.output)
    except OSError as exc:
        raise AdrankError(f"cannot write the stats file: {exc}", source=args.output) from exc
    print_stats_table(report)
    print(
        f"wrote {args.output} ({len(report.features)} features, {len(report.inputs)} input files)"
    )
    return 0


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def print_stats_table(report: Any) -> None:
    """Print one line per feature of a StatsReport: the summary `adrank stats` and the demo show."""
    header = (
        "feature",
        "rows",
        "coverage",
        "distinct",
        "top1%",
        "zipf s",
        "pool mean/max",
        "unseen-recent",
    )
    rows = [header]
    for name, fs in report.features.items():
        rows.append(
            (
                name,
                f"{fs.rows:,}",
                f"{fs.coverage:.1%}",
                ("" if fs.distinct_exact else "~") + f"{fs.distinct:,}",
                f"{fs.top1pct_traffic_share:.1%}",
                "-" if fs.zipf_exponent is None else f"{fs.zipf_exponent:.2f}",
                f"{fs.pooling.mean:.2f}/{fs.pooling.max}",
                "-" if fs.unseen_recent_share is None else f"{fs.unseen_recent_share:.1%}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    print("~ = estimated (HyperLogLog); top1% = traffic share of the top 1% of ids")
