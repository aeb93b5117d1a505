"""``python -m bench plan_vs_torchrec``: adrank's planner vs TorchRec's EmbeddingShardingPlanner.

Two scenarios, the same tables and devices for both planners:

* ``criteo_1tb``: the 26 tables of MLPerf DLRM-DCNv2 on Criteo 1TB (dim 128, the published
  cardinalities capped at 40M rows, the multi-hot sizes as pooling factors) on 8 devices, one host.
* ``synthetic``: ``synthetic_tables`` tables (rows log-uniform in ``synthetic_rows``, dims from
  ``synthetic_dims``, log-normal pooling factors; seeded) on ``synthetic_devices`` devices, 8 per
  host.

Like for like: fp32 weights, no optimizer state (inference; TorchRec's fused-kernel storage then
counts the same 4 bytes x dim per row), the same batch size, TorchRec restricted to the sharding
types adrank uses (table/row/column/table-row-wise; no data-parallel replicas) and the fused
kernel in HBM. adrank runs with merging and pruning off and a budget that keeps every row, so both
place the same tables. TorchRec reserves ``torchrec_reservation`` of each device's memory for
itself (``FixedPercentageStorageReservation``); adrank's devices get the memory left after it.

Measured for each planner: plan time (adrank: median of ``adrank_repeats`` runs; TorchRec: one run,
it is slow), and per device memory and estimated cost, max and mean. Both plans are evaluated with
the SAME cost model, adrank's (``sharding_planner.costs.shard_cost_ms``): TorchRec's plan is
converted shard by shard into adrank terms. TorchRec's own perf estimates of its plan (its
``EmbeddingPerfEstimator``, ms per step, forward + backward) are reported beside them. Targets:
adrank at least 10x faster, and its max/mean imbalance (cost, and memory) no worse than TorchRec's.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import numpy as np

from adrank.types import (
    DevicePlan,
    Precision,
    ShardingType,
    ShardPlan,
    ShardSpec,
    TablePlan,
    Topology,
)
from bench.harness import BenchResult, measure_peak_rss_bytes

__all__ = [
    "CRITEO_1TB_CARDINALITIES",
    "CRITEO_1TB_POOLING_FACTORS",
    "DEFAULT_CONFIG",
    "run",
    "run_scenario",
]

logger = logging.getLogger(__name__)

_GIB = 1 << 30

# MLPerf Training recommendation_v2 (DLRM-DCNv2) on Criteo 1TB: table sizes (capped at 40M rows)
# and the synthetic multi-hot dataset's ids per example, copied from
# /work/shared/data/published_cardinalities/cardinalities.json ("criteo_1tb_mlperf_dlrm_dcnv2").
CRITEO_1TB_CARDINALITIES = [
    40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10,
    2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36,
]  # fmt: skip
CRITEO_1TB_POOLING_FACTORS = [
    3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1,
]  # fmt: skip
CRITEO_1TB_DIM = 128

DEFAULT_CONFIG: dict[str, Any] = {
    "criteo_devices": 8,
    "device_memory_bytes": 80 * _GIB,  # the 80 GB A100s of MLPerf DLRM-DCNv2 submissions
    "devices_per_host": 8,
    "synthetic_tables": 1000,
    "synthetic_devices": 64,
    "synthetic_rows": [1_000, 50_000_000],
    "synthetic_dims": [32, 64, 128, 256],
    "synthetic_pooling_lognormal": [1.5, 1.0],  # mean and sigma of log(pooling factor)
    "seed": 0,
    "batch_size": 512,
    "torchrec_reservation": 0.15,
    "torchrec_timeout_s": None,
    "adrank_repeats": 5,
    "target_speedup": 10.0,
    "smoke_synthetic_tables": 60,
    "smoke_synthetic_devices": 16,
    "smoke_criteo_tables": 26,
}

_SHARDING_TYPES = ("table_wise", "row_wise", "column_wise", "table_row_wise")


def _criteo_tables(n: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"C{i + 1}",
            "num_embeddings": CRITEO_1TB_CARDINALITIES[i],
            "dim": CRITEO_1TB_DIM,
            "pooling_factor": float(CRITEO_1TB_POOLING_FACTORS[i]),
        }
        for i in range(n)
    ]


def _synthetic_tables(config: dict[str, Any], n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(config["seed"])
    lo, hi = config["synthetic_rows"]
    rows = np.exp(rng.uniform(np.log(lo), np.log(hi), n)).astype(np.int64)
    dims = rng.choice(np.asarray(config["synthetic_dims"]), n)
    mu, sigma = config["synthetic_pooling_lognormal"]
    pfs = np.clip(rng.lognormal(mu, sigma, n), 1.0, 200.0)
    return [
        {
            "name": f"f{i:04d}",
            "num_embeddings": int(r),
            "dim": int(d),
            "pooling_factor": round(float(p), 3),
        }
        for i, (r, d, p) in enumerate(zip(rows, dims, pfs, strict=True))
    ]


# --------------------------------------------------------------------------------------------------
# adrank
# --------------------------------------------------------------------------------------------------


def _adrank_setup(
    entries: list[dict[str, Any]], devices: int, config: dict[str, Any]
) -> tuple[Any, Topology, Any]:
    from sharding_planner import MergeConfig, PlannerConfig, PruningConfig, uniform_topology
    from sharding_planner.inputs import features_from_tables

    inputs = features_from_tables(entries, default_dim=CRITEO_1TB_DIM, source="bench")
    per_device = int(config["device_memory_bytes"] * (1 - config["torchrec_reservation"]))
    topology = uniform_topology(
        devices, per_device, devices_per_host=min(devices, config["devices_per_host"])
    )
    planner_config = PlannerConfig(
        default_precision=Precision.FP32,
        batch_size=config["batch_size"],
        memory_budget_bytes=per_device * devices,
        merging=MergeConfig(enabled=False),
        pruning=PruningConfig(enabled=False),
    )
    return inputs, topology, planner_config


def _evaluate(plan: ShardPlan, result: Any, topology: Topology, planner_config: Any) -> dict:
    """Bytes and adrank-model cost per rank of ``plan`` (tables named as in ``result``'s)."""
    from sharding_planner.costs import shard_cost_ms
    from sharding_planner.types import TableDraft

    rep = result.report
    pf = {f.name: f.pooling_factor for f in rep.inputs.features}
    precision = {p.table: p for p in rep.precisions}
    drafts = {
        p.table.name: TableDraft(
            p, precision[p.table.name], sum(pf[f.name] for f in p.table.features)
        )
        for p in rep.pruned
    }
    world = topology.world_size
    used = [0] * world
    cost = [0.0] * world
    for t in plan.tables:
        for s in t.shards:
            used[s.rank] += plan.shard_bytes(t, s)
            cost[s.rank] += shard_cost_ms(
                drafts[t.name],
                t.sharding_type,
                s.num_rows,
                s.num_cols,
                topology.devices[s.rank],
                topology,
                planner_config,
            )
    return {"used_bytes": used, "cost_ms": cost}


def _summary(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    top = max(values)
    return {"max": top, "mean": mean, "imbalance": top / mean if mean else 1.0}


# --------------------------------------------------------------------------------------------------
# TorchRec
# --------------------------------------------------------------------------------------------------


def _torchrec_plan(
    entries: list[dict[str, Any]], devices: int, config: dict[str, Any]
) -> tuple[Any, Any, float]:
    import torch
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.planner import Topology as TorchrecTopology
    from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    tables = [
        EmbeddingBagConfig(
            num_embeddings=e["num_embeddings"],
            embedding_dim=e["dim"],
            name=f"t_{e['name']}",
            feature_names=[e["name"]],
        )
        for e in entries
    ]
    ebc = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
    constraints = {
        f"t_{e['name']}": ParameterConstraints(
            sharding_types=list(_SHARDING_TYPES),
            compute_kernels=["fused"],
            pooling_factors=[e["pooling_factor"]],
        )
        for e in entries
    }
    topology = TorchrecTopology(
        world_size=devices,
        compute_device="cuda",  # plan for GPUs (the CPU model has no row-wise); nothing runs
        hbm_cap=config["device_memory_bytes"],
        local_world_size=min(devices, config["devices_per_host"]),
    )
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=config["batch_size"],
        constraints=constraints,
        debug=False,
        timeout_seconds=config["torchrec_timeout_s"],
        storage_reservation=FixedPercentageStorageReservation(
            percentage=config["torchrec_reservation"]
        ),
    )
    t0 = time.perf_counter()
    plan = planner.plan(ebc, [EmbeddingBagCollectionSharder()])
    elapsed = time.perf_counter() - t0
    return plan, planner, elapsed


def _torchrec_to_adrank(tr_plan: Any, adrank_plan: ShardPlan) -> ShardPlan:
    """TorchRec's plan in adrank terms: each table's shards from TorchRec's shard metadata."""
    module_plan = tr_plan.plan[""]
    tables = []
    for t in adrank_plan.tables:
        ps = module_plan[t.name]
        shards = []
        for m in ps.sharding_spec.shards:
            rows, cols = int(m.shard_sizes[0]), int(m.shard_sizes[1])
            if rows and cols:
                shards.append(
                    ShardSpec(
                        int(m.placement.rank()),
                        int(m.shard_offsets[0]),
                        rows,
                        int(m.shard_offsets[1]),
                        cols,
                    )
                )
        tables.append(
            TablePlan(
                name=t.name,
                features=t.features,
                num_rows=t.num_rows,
                dim=t.dim,
                precision=t.precision,
                pooling=t.pooling,
                sharding_type=ShardingType(ps.sharding_type),
                shards=tuple(sorted(shards, key=lambda s: (s.row_offset, s.col_offset))),
                hashed_rows=t.hashed_rows,
            )
        )
    skeleton = ShardPlan(
        mode=adrank_plan.mode,
        tables=tuple(tables),
        devices=(),
        inputs_fingerprint="torchrec",
        batch_size=adrank_plan.batch_size,
        optimizer=adrank_plan.optimizer,
        row_alignment_bytes=adrank_plan.row_alignment_bytes,
    )
    used = [0] * len(adrank_plan.devices)
    for t in skeleton.tables:
        for s in t.shards:
            used[s.rank] += skeleton.shard_bytes(t, s)
    devices = tuple(
        DevicePlan(d.rank, d.host, d.memory_bytes, used[d.rank], 0.0) for d in adrank_plan.devices
    )
    return ShardPlan(
        mode=skeleton.mode,
        tables=skeleton.tables,
        devices=devices,
        inputs_fingerprint="torchrec",
        batch_size=skeleton.batch_size,
        optimizer=skeleton.optimizer,
        row_alignment_bytes=skeleton.row_alignment_bytes,
    )


def _torchrec_own_estimates(planner: Any, world: int) -> dict[str, list[float]]:
    """TorchRec's perf (ms) and HBM storage (bytes) per rank of its chosen plan."""
    perf = [0.0] * world
    hbm = [0.0] * world
    for so in planner._best_plan or []:  # noqa: SLF001 - TorchRec keeps its options only here
        for shard in so.shards:
            if shard.rank is None:
                continue
            if shard.perf is not None:
                perf[shard.rank] += float(shard.perf.total)
            if shard.storage is not None:
                hbm[shard.rank] += float(shard.storage.hbm)
    return {"perf_ms": perf, "hbm_bytes": hbm}


# --------------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------------


def run_scenario(
    name: str, entries: list[dict[str, Any]], devices: int, config: dict[str, Any]
) -> dict[str, Any]:
    """Plan ``entries`` on ``devices`` with both planners; return the scenario's figures."""
    from adrank.planfile import validate_plan
    from sharding_planner import plan_shards

    inputs, topology, planner_config = _adrank_setup(entries, devices, config)
    times = []
    result = None
    for _ in range(max(1, int(config["adrank_repeats"]))):
        t0 = time.perf_counter()
        result = plan_shards(inputs, topology, planner_config)
        times.append(time.perf_counter() - t0)
    assert result is not None
    ad_plan = result.plan
    ad_eval = _evaluate(ad_plan, result, topology, planner_config)

    tr_plan, tr_planner, tr_time = _torchrec_plan(entries, devices, config)
    tr_as_adrank = _torchrec_to_adrank(tr_plan, ad_plan)
    validate_plan(tr_as_adrank, source=f"torchrec plan ({name})")
    tr_eval = _evaluate(tr_as_adrank, result, topology, planner_config)
    tr_own = _torchrec_own_estimates(tr_planner, devices)

    torchrec_expressible = True
    mismatch = ""
    try:
        from embed_store import torchrec_sharding_plan

        torchrec_sharding_plan(ad_plan, device_type="cuda")
    except Exception as exc:  # noqa: BLE001 - reported as a figure, not raised
        torchrec_expressible = False
        mismatch = str(exc).splitlines()[0][:300]

    ad_time = statistics.median(times)

    def kinds(p: ShardPlan) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in p.tables:
            out[t.sharding_type.value] = out.get(t.sharding_type.value, 0) + 1
        return out

    return {
        "scenario": name,
        "tables": len(entries),
        "devices": devices,
        "hosts": len(topology.hosts),
        "total_table_bytes": int(sum(ad_eval["used_bytes"])),
        "adrank": {
            "plan_s": ad_time,
            "plan_s_runs": times,
            "memory_bytes": _summary([float(x) for x in ad_eval["used_bytes"]]),
            "cost_ms": _summary(ad_eval["cost_ms"]),
            "sharding_types": kinds(ad_plan),
            "torchrec_expressible": torchrec_expressible,
            "torchrec_mismatch": mismatch,
        },
        "torchrec": {
            "plan_s": tr_time,
            "memory_bytes": _summary([float(x) for x in tr_eval["used_bytes"]]),
            "cost_ms": _summary(tr_eval["cost_ms"]),
            "sharding_types": kinds(tr_as_adrank),
            "own_perf_ms": _summary(tr_own["perf_ms"]),
            "own_hbm_bytes": _summary(tr_own["hbm_bytes"]),
            "proposals": int(getattr(tr_planner, "_num_proposals", 0)),
        },
        "speedup": tr_time / ad_time if ad_time > 0 else float("inf"),
        # Same cost model: > 1 means adrank's busiest device is slower than TorchRec's.
        "max_cost_ratio": max(ad_eval["cost_ms"]) / max(tr_eval["cost_ms"]),
        "mean_cost_ratio": statistics.fmean(ad_eval["cost_ms"])
        / statistics.fmean(tr_eval["cost_ms"]),
    }


def run(config: dict[str, Any], smoke: bool = False) -> BenchResult:
    """Run both scenarios (``smoke``: the Criteo tables and a small synthetic set)."""
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    n_criteo = config["smoke_criteo_tables"] if smoke else len(CRITEO_1TB_CARDINALITIES)
    n_syn = config["smoke_synthetic_tables"] if smoke else config["synthetic_tables"]
    syn_devices = config["smoke_synthetic_devices"] if smoke else config["synthetic_devices"]
    scenarios = [
        run_scenario("criteo_1tb", _criteo_tables(n_criteo), config["criteo_devices"], config),
        run_scenario("synthetic", _synthetic_tables(config, n_syn), syn_devices, config),
    ]
    metrics: dict[str, Any] = {"peak_rss_bytes": measure_peak_rss_bytes()}
    targets: dict[str, Any] = {}
    for s in scenarios:
        key = s["scenario"]
        metrics[key] = s
        targets[f"{key}.speedup"] = {
            "min": config["target_speedup"],
            "measured": s["speedup"],
            "met": s["speedup"] >= config["target_speedup"],
        }
        for what in ("cost_ms", "memory_bytes"):
            ours = s["adrank"][what]["imbalance"]
            theirs = s["torchrec"][what]["imbalance"]
            targets[f"{key}.{what}_imbalance"] = {
                "max": theirs,
                "measured": ours,
                "met": ours <= theirs * (1 + 1e-9),
            }
    notes = (
        "Both plans evaluated with adrank's cost model (sharding_planner.costs.shard_cost_ms); "
        "TorchRec's own estimates (EmbeddingPerfEstimator: fwd+bwd, its own comms model) are in "
        "torchrec.own_perf_ms and are not comparable in absolute terms. fp32, inference bytes, "
        f"batch {config['batch_size']}/device, TorchRec restricted to {list(_SHARDING_TYPES)}, "
        f"fused kernel, {config['torchrec_reservation']:.0%} of HBM reserved by TorchRec and "
        "withheld from adrank's devices too. adrank plan time = median of "
        f"{config['adrank_repeats']} runs in this process (numba kernels warm after the first); "
        "TorchRec plan time = one run."
    )
    return BenchResult(
        name="plan_vs_torchrec",
        config=dict(config, smoke=smoke),
        metrics=metrics,
        targets=targets,
        notes=notes,
    )
