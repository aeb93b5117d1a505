"""``adrank prune``: build a plan's dead-row remaps from access counts over click logs.

Counts lookups per hashed row by hashing the logs' ids through the plan's mapping, applies each
table's pruning policy (the plan's ``drop_dead`` tables), writes ``remaps/<table>.npy`` beside
``plan.json`` and rewrites ``plan.json`` with their names (remaps first, each atomically, so a
failure leaves the previous plan valid). With ``--holdout-days D`` the last D days of the logs are
kept out of the counts and used to measure what pruning costs on traffic it did not see.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]

_DAY_S = 86_400


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``prune`` subcommand to ``subparsers`` and return its parser."""
    from adrank.cli._args import duration_s

    p: argparse.ArgumentParser = subparsers.add_parser(
        "prune",
        help="build dead-row remaps for a plan from access counts over click logs",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--plan", required=True, metavar="DIR", help="plan directory (adrank plan -o)")
    p.add_argument("logs", nargs="+", metavar="LOGS", help="parquet click logs (files or dirs)")
    p.add_argument(
        "--window",
        type=duration_s,
        default=None,
        metavar="DURATION",
        help="override every table's recency window (e.g. 3d); default: the plan's",
    )
    p.add_argument(
        "--min-count",
        type=int,
        default=None,
        metavar="N",
        help="override every table's minimum lookups for a row to stay",
    )
    p.add_argument(
        "--holdout-days",
        type=float,
        default=None,
        metavar="D",
        help="count only up to D days before the logs' end; measure the rest",
    )
    p.add_argument(
        "--timestamp-column",
        default=None,
        metavar="COL",
        help="event-time column (default: each file's only timestamp column)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Count, prune, write the remaps and the report, print a summary."""
    from adrank.cli._progress import progress_bar
    from adrank.errors import InputError
    from adrank.formats import atomic_write_text
    from adrank.planfile import read_plan
    from pruning import (
        PruneConfig,
        count_accesses,
        evaluate_pruning,
        prune_plan,
        render_pruning_report,
        write_pruned_plan,
    )

    problems = []
    if args.min_count is not None and args.min_count < 0:
        problems.append(InputError(f"must be >= 0, got {args.min_count}", source="--min-count"))
    if args.holdout_days is not None and args.holdout_days <= 0:
        problems.append(
            InputError(f"must be > 0, got {args.holdout_days}", source="--holdout-days")
        )
    if problems:
        raise InputError.from_problems(problems)
    plan = read_plan(args.plan)

    def count(start_s: int | None = None, end_s: int | None = None) -> dict[str, Any]:
        with progress_bar(None, "counting", "rows", quiet=args.quiet) as progress:
            return count_accesses(
                plan,
                args.logs,
                plan_dir=args.plan,
                timestamp_column=args.timestamp_column,
                start_s=start_s,
                end_s=end_s,
                progress=progress,
            )

    cut_s = None
    later = None
    if args.holdout_days is not None:
        everything = count()
        ends = [c.log_end_s for c in everything.values() if c.log_end_s is not None]
        if not ends:
            raise InputError(
                "--holdout-days needs timestamps, and the logs have none",
                source=", ".join(args.logs),
                hint="drop --holdout-days, or pass logs with an event-time column",
            )
        cut_s = max(ends) - int(args.holdout_days * _DAY_S)
        earlier = count(end_s=cut_s)
        later = count(start_s=cut_s)
    else:
        earlier = count()

    config = PruneConfig(
        reference_time_s=cut_s, unseen_window_s=args.window, min_count=args.min_count
    )
    result = prune_plan(plan, earlier, config)
    write_pruned_plan(args.plan, plan, result)
    quality = (
        [
            evaluate_pruning(remap, earlier[name], later[name])
            for name, remap in sorted(result.remaps.items())
        ]
        if later is not None
        else []
    )
    report_md = render_pruning_report(result.report, quality)
    atomic_write_text(f"{args.plan}/pruning.md", report_md)

    r = result.report
    print(f"{'table':<34} {'hashed':>10} {'kept':>9} {'pruned lookups':>15}")
    for t in r.tables:
        print(
            f"{t.table:<34} {t.hashed_rows:>10,} {t.kept_rows:>9,} {t.pruned_traffic_share:>14.2%}"
        )
    for q in quality:
        print(
            f"  held-out {q.table}: {q.lookups:,} lookups, {q.pruned_share:.2%} read the "
            f"fallback row (lost trained rows {q.lost_trained_share:.2%})"
        )
    if r.skipped_tables:
        print(f"not pruned (policy keep_all): {', '.join(r.skipped_tables)}")
    print(f"wrote remaps and plan.json in {args.plan}, report in {args.plan}/pruning.md")
    return 0
