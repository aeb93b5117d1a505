"""``adrank demo``: the main job on built-in synthetic data.

synth -> stats -> plan -> prune -> ingest -> point-in-time join -> train -> serve -> replay: the
whole Adaptive Ranking loop on one machine, a few minutes on 2 cores. The later stages live in
:mod:`adrank.cli.demo_ranker`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

_DEFAULT_ROWS = 300_000
_DEFAULT_OUT = "demo-out"


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``subparsers`` and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on built-in synthetic data and print a summary",
        description=(
            "Generate synthetic request-structured click logs (adrank synth), compute per-feature "
            "statistics over them (adrank stats), plan embedding tables across devices from those "
            "statistics (adrank plan) and prune their dead rows (adrank prune), load the user and "
            "ad feature snapshots into the RocksDB feature store (adrank ingest), join them "
            "point-in-time to the impressions (adrank join), train the small/medium/large tiers "
            "and the router on the logs joined on the fly (adrank train), then serve: feature "
            "server, embedding tables sharded over --devices processes, Rank server, and replay "
            "the held-out day's requests through it; print a summary. Outputs go under --out, "
            "which the demo owns: it is regenerated on every run."
        ),
    )
    p.add_argument(
        "-o",
        "--out",
        default=_DEFAULT_OUT,
        metavar="DIR",
        help=f"working directory for the demo's files (default ./{_DEFAULT_OUT})",
    )
    p.add_argument(
        "--rows",
        type=int,
        default=_DEFAULT_ROWS,
        metavar="N",
        help=f"impression rows to synthesize (default {_DEFAULT_ROWS:,})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--replay",
        type=int,
        default=500,
        metavar="N",
        help="held-out requests replayed through the Rank server (default 500)",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=2,
        metavar="N",
        help="devices to plan the embedding tables across (default 2)",
    )
    p.add_argument(
        "--device-memory",
        default="256MiB",
        metavar="SIZE",
        help="memory per device for the plan (default 256MiB)",
    )
    p.add_argument(
        "--memory-budget",
        default="32MiB",
        metavar="SIZE",
        help="total embedding memory the plan may use (default 64MiB)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Run synth -> stats -> plan -> ingest -> join and print what each stage produced."""
    from adrank.cli._progress import progress_bar
    from adrank.cli.plan import print_plan_summary
    from adrank.cli.stats import print_stats_table
    from adrank.data import SynthConfig, synthesize
    from adrank.errors import InputError
    from adrank.units import parse_size_bytes
    from sharding_planner import (
        PlannerConfig,
        StatsConfig,
        compute_stats,
        load_plan_inputs,
        plan_shards,
        uniform_topology,
        write_plan_dir,
        write_stats,
    )

    if args.rows < 1_000:
        raise InputError(f"--rows must be at least 1000, got {args.rows}", source="--rows")
    topology = uniform_topology(
        args.devices, parse_size_bytes(args.device_memory, source="--device-memory")
    )
    budget_bytes = parse_size_bytes(args.memory_budget, source="--memory-budget")
    out = Path(args.out)
    marker = out / ".adrank-demo"
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise InputError(
            "the demo's output directory exists, is not empty and was not made by the demo",
            source=str(out),
            hint="pass --out with a new or empty directory; the demo overwrites its own files",
        )
    out.mkdir(parents=True, exist_ok=True)
    marker.touch()
    t0 = time.perf_counter()

    print(f"[1/8] synth: {args.rows:,} impression rows (seed {args.seed}) -> {out / 'logs'}")
    config = SynthConfig(num_rows=args.rows, seed=args.seed)
    with progress_bar(config.num_rows, "synth", "rows", quiet=args.quiet) as progress:
        synth = synthesize(out / "logs", config, overwrite=True, progress=progress)
    print(
        f"      {synth.num_requests:,} requests, {synth.num_users:,} users "
        f"({synth.new_users:,} new), {synth.num_ads:,} ads ({synth.new_ads:,} new, "
        f"{synth.dead_ads:,} dead by the last day), CTR {synth.ctr:.2%}, "
        f"cold-start requests {synth.cold_start_share:.1%}  [{synth.elapsed_s:.1f} s]"
    )

    logs = [out / "logs" / "impressions.parquet", out / "logs" / "requests.parquet"]
    print(f"[2/8] stats: per-feature statistics over {', '.join(p.name for p in logs)}")
    with progress_bar(None, "stats", "rows", quiet=args.quiet) as progress:
        report = compute_stats(logs, StatsConfig(), progress=progress)
    stats_path = out / "stats.json"
    write_stats(report, stats_path)
    print_stats_table(report)
    sketched = [n for n, fs in report.features.items() if not fs.distinct_exact]
    dead = max(report.features.values(), key=lambda fs: fs.unseen_recent_share or 0.0)
    print(
        f"      {len(report.features)} sparse features; "
        f"{len(sketched)} beyond the exact-count limit "
        f"(sketched: {', '.join(sketched) or 'none'}); "
        f"most dead-row candidates: {dead.name} "
        f"({(dead.unseen_recent_share or 0.0):.1%} of its ids unseen in the last day)"
    )

    print(
        f"[3/8] plan: hash sizes, unified tables, pruning, precision and placement on "
        f"{args.devices} devices x {args.device_memory}, embedding budget {args.memory_budget}"
    )
    # The user's behaviour sequences are looked up one embedding per item (for the large tier's
    # attention), not pooled.
    inputs = load_plan_inputs(
        stats_path=stats_path,
        default_dim=64,
        sequence_features=("user_clicked_ads", "user_clicked_categories"),
    )
    result = plan_shards(inputs, topology, PlannerConfig(memory_budget_bytes=budget_bytes))
    plan_dir = out / "plan"
    write_plan_dir(result, plan_dir)
    print_plan_summary(result)
    for table in result.plan.tables:
        print(
            f"      {table.name}: {', '.join(f.name for f in table.features)} -> "
            f"{table.num_rows:,} rows x {table.dim} {table.precision.value}, "
            f"{table.sharding_type.value} on ranks {sorted({s.rank for s in table.shards})}"
        )

    from adrank.cli.demo_ranker import prune_for_serving

    print("[4/8] prune: dead rows of the drop_dead tables from access counts before the last day")
    pruned = prune_for_serving(plan_dir, logs, holdout_days=1.0)
    print(
        f"      {len(pruned['tables'])} tables pruned ({', '.join(pruned['tables']) or 'none'}), "
        f"{pruned['rows_removed']:,} hashed rows without a stored row"
    )

    import shutil

    from feature_service import FeatureStore, JoinSpec, ingest_parquet, join_to_parquet

    store_dir = out / "store"
    shutil.rmtree(store_dir, ignore_errors=True)  # the demo owns it: rebuild from this run's logs
    snapshots = out / "logs" / "snapshots"
    print(f"[5/8] ingest: user and ad snapshots -> RocksDB feature store {store_dir}")
    with FeatureStore.open(store_dir) as store:
        for group, entity in (("user", "user_id"), ("ad", "ad_id")):
            ingested = ingest_parquet(
                store,
                [snapshots / f"{group}s.parquet"],
                group=group,
                entity_column=entity,
                timestamp_column="event_ts",
                created_column="created_ts",
                ttl_s=30 * 86_400,
            )
            print(
                f"      {group}: {ingested.rows_written:,} versions of "
                f"{len(ingested.group.features)} features [{ingested.elapsed_s:.2f} s]"
            )
        train_path = out / "train.parquet"
        print(f"[6/8] join: impressions x (user, ad) features, point in time -> {train_path}")
        joined = join_to_parquet(
            store,
            out / "logs" / "impressions.parquet",
            train_path,
            [JoinSpec("user", "user_id"), JoinSpec("ad", "ad_id")],
            timestamp_column="ts",
        )
    for g in joined.groups:
        print(
            f"      {g.group}: {g.matched:,} of {g.rows:,} rows matched; null: "
            f"{g.future_only:,} only future versions, {g.no_entity:,} unknown, "
            f"{g.expired:,} expired"
        )
    _train_serve_replay(args, out, plan_dir, store_dir)
    print(
        f"done in {time.perf_counter() - t0:.1f} s: logs in {out / 'logs'}, stats in "
        f"{stats_path}, plan in {plan_dir} (plan.json, report.md, report.png), feature store in "
        f"{store_dir}, training data in {train_path}, model in {out / 'model'}, router log in "
        f"{out / 'router_log.jsonl'}"
    )
    return 0


def _train_serve_replay(
    args: argparse.Namespace, out: Path, plan_dir: Path, store_dir: Path
) -> None:
    from adrank.cli._progress import progress_bar
    from adrank.cli.demo_ranker import serve_and_replay
    from adrank.cli.train import print_metrics
    from adrank.planfile import read_plan
    from feature_service import FeatureStore
    from ranker.data import time_split
    from ranker.train import TrainConfig, train

    logs = out / "logs"
    print("[7/8] train: small/medium/large tiers + router, logs joined with the store on the fly")
    with (
        FeatureStore.open(store_dir, read_only=True) as store,
        progress_bar(None, "train", "requests", quiet=args.quiet) as progress,
    ):
        trained = train(
            logs,
            store,
            read_plan(plan_dir),
            plan_dir,
            out / "model",
            TrainConfig(seed=args.seed),
            progress=progress,
        )
    m = trained.metrics
    print(
        f"      {m['requests']['train']:,} training requests ({m['train_s']:.1f} s), router fit on "
        f"{m['requests']['router']:,}, held out {m['requests']['held_out']:,}:"
    )
    print_metrics(m)
    start_s = time_split(logs / "requests.parquet", 1.0)
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    end_s = int(
        pc.max(pq.read_table(logs / "requests.parquet", columns=["ts"]).column("ts")).value // 1000
    )
    print(
        f"[8/8] serve + replay: feature server, embeddings on {args.devices} ranks, Rank server; "
        f"{args.replay} held-out requests through the Rank client"
    )
    summary = serve_and_replay(
        out,
        plan_dir,
        out / "model",
        store_dir,
        logs,
        devices=args.devices,
        start_s=start_s,
        requests=args.replay,
        clock_s=end_s + 1,
    )
    r = summary.routed
    mix = ", ".join(f"{t} {share:.0%}" for t, share in r.tier_mix.items())
    print(
        f"      routed: AUC {r.auc:.4f}, latency p50 {r.latency_ms['p50']:.1f} ms / p99 "
        f"{r.latency_ms['p99']:.1f} ms, tier mix {mix}, compute {r.relative_cost:.2f} of "
        f"always-large ({1 / max(r.relative_cost, 1e-9):.1f}x cheaper)"
    )
    for tier, rep in summary.always.items():
        print(
            f"      always-{tier}: AUC {rep.auc:.4f}, p50 {rep.latency_ms['p50']:.1f} ms, "
            f"p99 {rep.latency_ms['p99']:.1f} ms"
        )
