"""``adrank train``: train the small/medium/large tiers and the router on logs joined on the fly
with the feature store, embeddings laid out by an adrank plan; report held-out AUC and log loss."""

from __future__ import annotations

import argparse
from typing import Any

from adrank.cli._args import positive_int

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``subparsers`` and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help="train the ranker tiers and router (logs joined with the feature store on the fly)",
        description=(
            "Stream requests.parquet and impressions.parquet from LOGS, join the user and ad "
            "feature groups of the store point-in-time as they are read (no joined copy), and "
            "train the three tiers (small two-tower, medium DLRM, large DCNv2 + sequence "
            "attention) over the plan's embedding tables, then the router on the next day and "
            "evaluate on the last (held out). Writes OUT/checkpoint (embed_store checkpoint "
            "of the plan), OUT/tiers.pt, OUT/router.json, OUT/ranker.json, OUT/metrics.json."
        ),
    )
    p.add_argument("--logs", required=True, metavar="DIR", help="directory from adrank synth")
    p.add_argument("--store", required=True, metavar="PATH", help="feature store (user, ad groups)")
    p.add_argument("--plan", required=True, metavar="PLAN", help="plan directory or plan.json")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--epochs", type=positive_int, default=1, help="passes over the training days")
    p.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        metavar="N",
        help="train in N gloo processes with the tables sharded as the plan places them "
        "(the plan's device count); default 1: one process holds every table",
    )
    p.add_argument(
        "--requests-per-batch", type=positive_int, default=64, metavar="N", help="requests per step"
    )
    p.add_argument(
        "--holdout-days", type=float, default=1.0, metavar="D", help="last days held out (1)"
    )
    p.add_argument(
        "--router-days", type=float, default=1.0, metavar="D", help="days the router fits on (1)"
    )
    p.add_argument(
        "--max-sequence-len", type=positive_int, default=64, metavar="L", help="items attended"
    )
    p.add_argument("--seed", type=int, default=0, help="initialisation seed")
    return p


def print_metrics(metrics: dict[str, Any]) -> None:
    """Held-out quality per tier and routed, as a small table."""
    print(f"      {'tier':<8} {'AUC':>7} {'logloss':>8} {'cost':>6}")
    for name, m in metrics["tiers"].items():
        print(f"      {name:<8} {m['auc']:>7.4f} {m['logloss']:>8.4f} {m['relative_cost']:>6.2f}")
    r = metrics["routed"]
    mix = ", ".join(f"{k} {v:.0%}" for k, v in r["tier_mix"].items())
    print(
        f"      {'routed':<8} {r['auc']:>7.4f} {r['logloss']:>8.4f} {r['relative_cost']:>6.2f}"
        f"  ({r['cost_ratio_vs_large']:.1f}x cheaper than always-large; mix: {mix})"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adrank.cli._progress import progress_bar
    from adrank.planfile import read_plan
    from feature_service import FeatureStore
    from ranker.train import TrainConfig, train

    plan = read_plan(args.plan)
    plan_dir = Path(args.plan) if Path(args.plan).is_dir() else Path(args.plan).parent
    config = TrainConfig(
        epochs=args.epochs,
        devices=args.devices,
        requests_per_batch=args.requests_per_batch,
        holdout_days=args.holdout_days,
        router_days=args.router_days,
        max_sequence_len=args.max_sequence_len,
        seed=args.seed,
    )
    with (
        FeatureStore.open(args.store, read_only=True) as store,
        progress_bar(None, "train", "requests", quiet=args.quiet) as progress,
    ):
        result = train(args.logs, store, plan, plan_dir, args.out, config, progress=progress)
    m = result.metrics
    print(
        f"trained on {m['requests']['train']:,} requests ({m['steps']} steps, "
        f"{m['train_s']:.1f} s); held out {m['requests']['held_out']:,} requests / "
        f"{m['candidates_held_out']:,} candidates"
    )
    print_metrics(m)
    print(f"wrote {result.out_dir} (checkpoint/, tiers.pt, router.json, ranker.json, metrics.json)")
    return 0
