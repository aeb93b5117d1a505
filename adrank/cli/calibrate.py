"""``adrank calibrate``: measure each table's error per precision; write ``adrank plan``'s input.

    adrank calibrate --checkpoint CKPT --plan PLAN -o errors.json
                     [--bags N] [--seed N] [--precisions fp16,int8,int4]

Samples bags with each table's real pooling, looks them up with FBGEMM's quantized kernel at
fp32 and at each precision, and writes the relative errors (per table and per feature) as a
precision-errors file for ``adrank plan --precision-errors``. Prints the errors and the kernel
time per precision. The checkpoint must have been written for the plan (same fingerprint).
"""

from __future__ import annotations

import argparse
from typing import Any

from adrank.cli._args import positive_int
from adrank.cli.checkpoint import non_negative_int

__all__ = ["register", "run"]

_PRECISIONS = ("fp32", "fp16", "int8", "int4")


def _precision_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    unknown = [n for n in names if n not in _PRECISIONS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(_PRECISIONS)}, found {text!r}"
        )
    return names


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``calibrate`` subcommand to ``subparsers`` and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "calibrate",
        help="measure each table's error at fp16/int8/int4 on sampled lookups (for adrank plan)",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint directory")
    p.add_argument("--plan", required=True, metavar="PLAN", help="plan directory or plan.json")
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="precision-errors JSON to write"
    )
    p.add_argument(
        "--bags", type=positive_int, default=2048, metavar="N", help="bags per table (2048)"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="N", help="default 0")
    p.add_argument(
        "--precisions",
        type=_precision_list,
        default=("fp16", "int8", "int4"),
        metavar="LIST",
        help="comma-separated precisions to measure (default fp16,int8,int4)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Check the checkpoint against the plan, calibrate, write the errors file, print a table."""
    from adrank.cli._progress import progress_bar
    from adrank.planfile import read_plan
    from adrank.types import Precision
    from embed_store.calibrate import calibrate, write_calibration
    from embed_store.checkpoint import open_checkpoint

    plan = read_plan(args.plan)
    ckpt = open_checkpoint(args.checkpoint)
    ckpt.check_plan(plan, source=args.plan)
    precisions = tuple(Precision(p) for p in args.precisions)
    with progress_bar(len(plan.tables), "calibrate", "tables", quiet=args.quiet) as progress:
        result = calibrate(
            ckpt,
            plan,
            precisions=precisions,
            num_bags=args.bags,
            seed=args.seed,
            progress=progress,
        )
    write_calibration(result, args.output)
    _print_result(plan, result, precisions)
    print(
        f"wrote {args.output} ({len(result.errors)} tables, {len(result.feature_errors)} "
        f"features; {args.bags} bags per table, seed {args.seed})"
    )
    return 0


def _print_result(plan: Any, result: Any, precisions: tuple[Any, ...]) -> None:
    from adrank.types import Precision

    timed = (Precision.FP32, *(p for p in precisions if p is not Precision.FP32))
    head = f"{'table':<28} {'rows':>12} {'dim':>5} {'pooling':>7} "
    head += " ".join(f"{'err ' + p.value:>10}" for p in precisions)
    head += "  " + " ".join(f"{'ms ' + p.value:>8}" for p in timed)
    print(head)
    for t in plan.tables:
        errs = result.errors[t.name]
        times = result.timings_ms[t.name]
        line = f"{t.name:<28} {t.num_rows:>12,} {t.dim:>5} {t.pooling.value:>7} "
        line += " ".join(f"{errs[p]:>10.3g}" if p in errs else f"{'n/a':>10}" for p in precisions)
        line += "  " + " ".join(f"{times[p]:>8.3f}" if p in times else f"{'n/a':>8}" for p in timed)
        print(line)
    print("err: relative L2 error of pooled lookups vs fp32; ms: kernel time per batch of bags")
