"""``adrank checkpoint``: make, reshard and describe embedding checkpoints.

    adrank checkpoint init --plan PLAN -o CKPT [--seed N] [--scale S]
    adrank checkpoint reshard --checkpoint SRC --plan PLAN -o OUT
    adrank checkpoint info CKPT [--verify]

A checkpoint is a directory of per-shard float32 ``.npy`` files and a manifest, written for one
plan (its fingerprint); see :mod:`embed_store.checkpoint`. ``--plan`` takes a plan directory or
its ``plan.json``. Outputs are written to a temporary directory and renamed into place.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["non_negative_int", "register", "run"]


def non_negative_int(text: str) -> int:
    """Parse an integer >= 0 (``_`` separators allowed), for seeds."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text!r}")
    return value


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``checkpoint`` subcommand (with ``init``, ``reshard``, ``info``) and return it."""
    from adrank.cli import _add_verbosity

    p: argparse.ArgumentParser = subparsers.add_parser(
        "checkpoint",
        help="make (random init), reshard or describe an embedding checkpoint",
        description=(
            "An embedding checkpoint holds every table of a plan as per-shard float32 .npy files "
            "(memory-mappable) plus manifest.json with the plan's fingerprint."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    init = actions.add_parser(
        "init",
        help="write random initial weights in a plan's shard layout",
        description=(
            "Write uniform(-s, s) weights (s = --scale or 1/sqrt(dim), TorchRec's default "
            "init), shard by shard in row blocks. The same --seed gives the same values "
            "whatever the plan's sharding."
        ),
    )
    init.add_argument("--plan", required=True, metavar="PLAN", help="plan directory or plan.json")
    init.add_argument("-o", "--output", required=True, metavar="CKPT", help="checkpoint directory")
    init.add_argument("--seed", type=non_negative_int, default=0, metavar="N", help="default 0")
    init.add_argument(
        "--scale",
        type=_positive_float,
        default=None,
        metavar="S",
        help="half-width of the uniform range (default 1/sqrt(dim) per table)",
    )

    reshard = actions.add_parser(
        "reshard",
        help="rewrite a checkpoint in another plan's shard layout",
        description=(
            "Copy a checkpoint's weights into the shard layout of a plan with the same tables "
            "(names, rows, dims), stamped with that plan's fingerprint; streams shard by shard."
        ),
    )
    reshard.add_argument("--checkpoint", required=True, metavar="SRC", help="source checkpoint")
    reshard.add_argument("--plan", required=True, metavar="PLAN", help="target plan (dir or json)")
    reshard.add_argument("-o", "--output", required=True, metavar="OUT", help="output checkpoint")

    info = actions.add_parser(
        "info",
        help="print a checkpoint's tables, shards, fingerprint and bytes",
        description="Print a checkpoint's plan fingerprint, tables, shards and file sizes.",
    )
    info.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory")
    info.add_argument(
        "--verify", action="store_true", help="also check every file's sha256 (reads everything)"
    )
    for sp in (init, reshard, info):
        _add_verbosity(sp)
    return p


def run(args: argparse.Namespace) -> int:
    """Dispatch to the action."""
    if args.action == "init":
        return _run_init(args)
    if args.action == "reshard":
        return _run_reshard(args)
    return _run_info(args)


def _shard_rows(plan: Any) -> int:
    return sum(s.num_rows for t in plan.tables for s in t.shards)


def _run_init(args: argparse.Namespace) -> int:
    from adrank.cli._progress import progress_bar
    from adrank.planfile import read_plan
    from embed_store.checkpoint import init_checkpoint

    plan = read_plan(args.plan)
    with progress_bar(_shard_rows(plan), "init", "rows", quiet=args.quiet) as progress:
        ckpt = init_checkpoint(
            args.output, plan, seed=args.seed, scale=args.scale, progress=progress
        )
    _print_written(ckpt, f"random init, seed {args.seed}")
    return 0


def _run_reshard(args: argparse.Namespace) -> int:
    from adrank.cli._progress import progress_bar
    from adrank.planfile import read_plan
    from embed_store.checkpoint import open_checkpoint, reshard_checkpoint

    plan = read_plan(args.plan)
    source = open_checkpoint(args.checkpoint)
    with progress_bar(_shard_rows(plan), "reshard", "rows", quiet=args.quiet) as progress:
        ckpt = reshard_checkpoint(source, plan, args.output, progress=progress)
    _print_written(ckpt, f"resharded from {args.checkpoint} (plan {source.plan_fingerprint})")
    return 0


def _print_written(ckpt: Any, how: str) -> None:
    shards = sum(len(t.shards) for t in ckpt.tables)
    print(
        f"wrote checkpoint {ckpt.directory} ({how}): {len(ckpt.tables)} tables, {shards} shards, "
        f"{ckpt.nbytes:,} bytes"
    )
    print(f"plan fingerprint {ckpt.plan_fingerprint}")


def _run_info(args: argparse.Namespace) -> int:
    from embed_store.checkpoint import open_checkpoint

    ckpt = open_checkpoint(args.checkpoint, verify=args.verify)
    print(f"checkpoint {ckpt.directory}")
    print(f"plan fingerprint {ckpt.plan_fingerprint}")
    header = (
        f"{'table':<28} {'rows':>12} {'dim':>5} {'precision':>9} {'pooling':>7} "
        f"{'shards':>6} {'bytes':>14}"
    )
    print(header)
    total = 0
    for t in ckpt.tables:
        sizes = [(ckpt.directory / s.file).stat().st_size for s in t.shards]
        total += sum(sizes)
        print(
            f"{t.name:<28} {t.num_rows:>12,} {t.dim:>5} {t.precision.value:>9} "
            f"{t.pooling.value:>7} {len(t.shards):>6} {sum(sizes):>14,}"
        )
        for s, size in zip(t.shards, sizes, strict=True):
            sp = s.spec
            print(
                f"  rank {sp.rank:<3} rows [{sp.row_offset:,}, {sp.row_offset + sp.num_rows:,}) "
                f"cols [{sp.col_offset}, {sp.col_offset + sp.num_cols})  {s.file}  {size:,} bytes"
            )
    shards = sum(len(t.shards) for t in ckpt.tables)
    verified = "; sha256 verified" if args.verify else ""
    print(f"{len(ckpt.tables)} tables, {shards} shards, {total:,} bytes{verified}")
    return 0
