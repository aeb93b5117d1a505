"""The demo's later stages: prune, train, serve and replay (see :mod:`adrank.cli.demo`).

Serving in the demo is the production shape on one machine: the feature store behind its gRPC
server, the embedding tables sharded over ``devices`` ranks (processes) of the lookup runtime, and
the Rank gRPC server in front; held-out logged requests are replayed through a Rank client. The
feature server's clock is pinned to the end of the logs (they are synthetic, dated in the past,
and their feature groups have a TTL).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

__all__ = ["ReplaySummary", "prune_for_serving", "serve_and_replay"]

_DAY_S = 86_400


def prune_for_serving(plan_dir: Path, logs: list[Path], holdout_days: float) -> dict[str, Any]:
    """Count lookups before the held-out days, build the remaps, rewrite the plan.

    Returns:
        ``{"tables": pruned tables, "rows_removed": rows, "cut_s": count cut}``.
    """
    from adrank.planfile import read_plan
    from pruning import PruneConfig, count_accesses, prune_plan, write_pruned_plan

    plan = read_plan(plan_dir)
    everything = count_accesses(plan, [str(p) for p in logs], plan_dir=str(plan_dir))
    ends = [c.log_end_s for c in everything.values() if c.log_end_s is not None]
    cut_s = max(ends) - int(holdout_days * _DAY_S)
    earlier = count_accesses(plan, [str(p) for p in logs], plan_dir=str(plan_dir), end_s=cut_s)
    result = prune_plan(plan, earlier, PruneConfig(reference_time_s=cut_s))
    write_pruned_plan(str(plan_dir), plan, result)
    removed = sum(r.hashed_rows - r.num_rows for r in result.remaps.values())
    return {"tables": sorted(result.remaps), "rows_removed": removed, "cut_s": cut_s}


@dataclasses.dataclass(frozen=True, slots=True)
class ReplaySummary:
    """What the replay measured.

    Attributes:
        routed: Replay through the router.
        always: Tier name -> replay with that tier forced.
        feature_server / embedding_devices: What served.
    """

    routed: Any
    always: dict[str, Any]
    feature_server: str
    embedding_devices: int


def serve_and_replay(
    out: Path,
    plan_dir: Path,
    model_dir: Path,
    store_dir: Path,
    logs_dir: Path,
    *,
    devices: int,
    start_s: int,
    requests: int,
    clock_s: int,
) -> ReplaySummary:
    """Start the three servers, replay held-out requests through the Rank client, stop them.

    Args:
        out: Demo directory (router log goes there).
        plan_dir: Pruned plan.
        model_dir: ``adrank train`` output.
        store_dir: Feature store.
        logs_dir: Logs (the requests replayed).
        devices: Ranks of the embedding runtime.
        start_s: First held-out second.
        requests: Requests replayed.
        clock_s: The feature server's "now" (epoch seconds).
    """
    from adrank.planfile import read_plan
    from adrank.rpc import ListenConfig
    from embed_store import LocalLookup, RuntimeConfig, launch_local, load_remaps, open_checkpoint
    from feature_service import FeatureClient, FeatureStore
    from feature_service.server import ServerConfig
    from feature_service.server import build_server as build_feature_server
    from ranker.client import RankClient
    from ranker.replay import logged_requests, replay
    from ranker.router import RouterLog
    from ranker.server import build_server as build_rank_server
    from ranker.serving import Ranker, load_model

    plan = read_plan(plan_dir, require_remaps=True)
    model = load_model(model_dir)
    store = FeatureStore.open(store_dir, read_only=True)
    feature_server = build_feature_server(
        ServerConfig(store_path=str(store_dir), port=0),
        store=store,
        clock_us=lambda: clock_s * 10**6,
    )
    feature_server.start()
    lookup: Any
    if devices > 1:
        lookup = launch_local(
            RuntimeConfig(str(plan_dir), str(model.checkpoint_dir), timeout_s=60), devices
        )
    else:
        lookup = LocalLookup.single_device(
            plan, open_checkpoint(model.checkpoint_dir).read_block, load_remaps(plan, plan_dir)
        )
    features = FeatureClient(f"127.0.0.1:{feature_server.port}", timeout_s=5.0)
    ranker = Ranker(
        model, plan, plan_dir, lookup, features, router_log=RouterLog(out / "router_log.jsonl")
    )
    rank_server = build_rank_server(ranker, ListenConfig(port=0))
    rank_server.start()
    try:
        client = RankClient(f"127.0.0.1:{rank_server.port}", timeout_s=10.0)
        logged = list(logged_requests(logs_dir, start_s=start_s, limit=requests))
        costs = dict(zip(model.router.tier_names, model.router.relative_cost, strict=True))
        routed = replay(client.rank, logged, costs)
        always = {
            t: replay(
                lambda u, a, c, t=t, **kw: client.rank(
                    u, a, c, force_tier=t, as_of_us=kw.get("as_of_us")
                ),
                logged,
                costs,
            )
            for t in model.router.tier_names
        }
        client.close()
    finally:
        rank_server.stop()
        feature_server.stop()
        features.close()
        lookup.close()
        store.close()
    return ReplaySummary(routed, always, f"127.0.0.1:{feature_server.port}", devices)
