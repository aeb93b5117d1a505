"""``adrank synth``: generate synthetic request-structured click logs and feature snapshots."""

from __future__ import annotations

import argparse
import re
from typing import Any

__all__ = ["DEFAULTS", "register", "run"]

_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_COUNT = re.compile(r"^\s*(\d[\d_]*(?:\.\d+)?)\s*([kmg]?)\s*$", re.IGNORECASE)


def _count(text: str) -> int:
    """Parse a count such as ``10000``, ``10_000``, ``10k``, ``2.5M`` (argparse ``type``)."""
    m = _COUNT.match(text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"expected a count like 10000, 10k or 2.5M, found {text!r}"
        )
    value = float(m.group(1).replace("_", "")) * _SUFFIXES[m.group(2).lower()]
    if value != int(value):
        raise argparse.ArgumentTypeError(f"expected a whole number, found {text!r}")
    return int(value)


# SynthConfig's defaults, repeated so that `adrank --help` need not import numpy and pyarrow
# (adrank.data imports both); tests/integration/test_cli_synth.py checks they agree.
DEFAULTS: dict[str, Any] = {
    "num_rows": 100_000,
    "seed": 0,
    "num_days": 14,
    "start": "2026-01-05T00:00:00Z",
    "candidates_mean": 20,
    "seq_len": 100,
    "ad_vocab": 10_000_000,
    "user_vocab": 2_000_000,
    "ad_churn_per_day": 0.03,
    "user_churn_per_day": 0.01,
    "num_categories": 1000,
    "row_group_rows": 65_536,
}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``synth`` subcommand to ``subparsers`` and return its parser."""
    d = argparse.Namespace(**DEFAULTS)
    p: argparse.ArgumentParser = subparsers.add_parser(
        "synth",
        help="generate synthetic request-structured click logs and feature snapshots",
        description=(
            "Write synthetic ads click logs to parquet: impressions.parquet (one row per request x "
            "candidate ad, with a click label), requests.parquet (context and the user's behaviour "
            "sequence, once per request), snapshots/users.parquet and snapshots/ads.parquet "
            "(time-versioned features for point-in-time joins) and manifest.json (config, counts "
            "and the hidden ground-truth click model). Deterministic by --seed; streamed in row "
            "groups, so memory stays bounded from a 10k-row smoke set to tens of millions of rows."
        ),
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="output directory (created; must be empty unless --overwrite)")
    p.add_argument("--rows", type=_count, default=d.num_rows, metavar="N",
                   help=f"impression rows, exactly (default {d.num_rows:,}; 10k, 2.5M accepted)")
    p.add_argument("--seed", type=int, default=d.seed, metavar="S",
                   help=f"generation seed (default {d.seed})")
    p.add_argument("--days", type=int, default=d.num_days, metavar="D",
                   help=f"days the logs span (default {d.num_days})")
    p.add_argument("--start", default=d.start, metavar="TIME",
                   help="first second of the logs, ISO-8601, UTC unless a zone is given "
                        f"(default {d.start})")
    p.add_argument("--candidates", type=int, default=d.candidates_mean, metavar="MEAN",
                   help=f"mean ad candidates per request (default {d.candidates_mean}; uniform "
                        "from MEAN/4 to 2*MEAN - MEAN/4)")
    p.add_argument("--seq-len", type=int, default=d.seq_len, metavar="L",
                   help=f"longest behaviour sequence per request (default {d.seq_len})")
    p.add_argument("--ad-vocab", type=_count, default=d.ad_vocab, metavar="N",
                   help=f"ads live at any time (default {d.ad_vocab:,})")
    p.add_argument("--user-vocab", type=_count, default=d.user_vocab, metavar="N",
                   help=f"users live at any time (default {d.user_vocab:,})")
    p.add_argument("--ad-churn", type=float, default=d.ad_churn_per_day, metavar="FRAC",
                   help=f"share of ads replaced per day (default {d.ad_churn_per_day})")
    p.add_argument("--user-churn", type=float, default=d.user_churn_per_day, metavar="FRAC",
                   help=f"share of users replaced per day (default {d.user_churn_per_day})")
    p.add_argument("--categories", type=int, default=d.num_categories, metavar="C",
                   help=f"ad categories (default {d.num_categories})")
    p.add_argument("--row-group-rows", type=_count, default=d.row_group_rows, metavar="N",
                   help=f"impression rows per parquet row group (default {d.row_group_rows:,}); "
                        "bounds memory, does not change the data")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files of a non-empty output directory")
    return p


def run(args: argparse.Namespace) -> int:
    """Generate the logs and print a summary; return the exit code."""
    from adrank.cli._progress import progress_bar
    from adrank.data.synth import SynthConfig, synthesize
    from adrank.data.synth_config import DEFAULT_START_TS_S, parse_start, validate_synth_config
    from adrank.errors import InputError

    problems: list[InputError] = []
    try:
        start_ts_s = parse_start(args.start)
    except InputError as exc:
        problems.append(exc)
        start_ts_s = DEFAULT_START_TS_S
    config = SynthConfig(
        num_rows=args.rows,
        seed=args.seed,
        num_days=args.days,
        start_ts_s=start_ts_s,
        candidates_mean=args.candidates,
        seq_len=args.seq_len,
        ad_vocab=args.ad_vocab,
        user_vocab=args.user_vocab,
        ad_churn_per_day=args.ad_churn,
        user_churn_per_day=args.user_churn,
        num_categories=args.categories,
        row_group_rows=args.row_group_rows,
    )
    try:
        validate_synth_config(config)
    except InputError as exc:
        problems.append(exc)
    if problems:
        raise InputError.from_problems(problems)

    with progress_bar(config.num_rows, "synth", "rows", quiet=args.quiet) as progress:
        summary = synthesize(args.out, config, overwrite=args.overwrite, progress=progress)

    rate = summary.num_rows / summary.elapsed_s if summary.elapsed_s > 0 else float("inf")
    print(
        f"wrote {summary.num_rows:,} impressions in {summary.num_requests:,} requests to "
        f"{summary.out_dir} in {summary.elapsed_s:.1f} s ({rate:,.0f} rows/s)"
    )
    print(f"  users   {summary.num_users:,} ({summary.new_users:,} new during the logs)")
    print(
        f"  ads     {summary.num_ads:,} ({summary.new_ads:,} new, {summary.dead_ads:,} dead "
        "by the last day)"
    )
    print(
        f"  CTR     {100 * summary.ctr:.2f}%   cold-start requests "
        f"{100 * summary.cold_start_share:.1f}%"
    )
    print(
        f"  snapshots: {summary.user_snapshot_rows:,} user rows, {summary.ad_snapshot_rows:,} "
        "ad rows"
    )
    for f in summary.files:
        rows = f"{f.num_rows:>12,} rows" if f.path.endswith(".parquet") else " " * 17
        print(f"  {f.path:<26} {rows} {_size(f.size_bytes):>10}")
    return 0


def _size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover
