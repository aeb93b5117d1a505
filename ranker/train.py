"""``adrank train``: the three tiers and the router, trained on logs joined on the fly.

Time split of the requests (by request time, so nothing from the future leaks into training)::

    [start ........................ router_start ...... eval_start ...... end]
     tiers and embeddings train       router fits          held out (metrics)

1. Tiers: one pass (or ``epochs``) over the training requests, streamed and joined point-in-time
   with the feature store (:func:`ranker.data.iter_request_batches`); the plan's tables
   (:class:`ranker.embeddings.PlanEmbeddings`, shared by the tiers) and the three tiers learn
   together from the sum of their log losses (Adagrad for embeddings, Adam for the rest).
2. Router: on the router slice, each request's measured uplift of medium and large over small
   (mean per-candidate log-loss difference) is regressed on its context, and the cost weight is
   calibrated (:class:`ranker.router.TierRouter`).
3. Evaluation on the held-out tail: AUC and log loss per tier and for routed traffic, with the
   routed compute cost relative to always-large.

Outputs (``out_dir``, each written atomically): ``checkpoint/`` (embed_store checkpoint of the
plan: what the sharded runtime serves), ``tiers.pt`` (tier weights), ``ranker.json`` (roles,
dims, plan fingerprint, tier costs), ``router.json``, ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from adrank.errors import InputError
from adrank.formats import atomic_path, write_json_document
from adrank.types import ShardPlan
from embed_store.checkpoint import save_checkpoint
from feature_service import FeatureStore
from feature_service.types import Dtype, Shape
from ranker.base import RankerTier, TierDims, TierName
from ranker.data import FeatureRoles, RequestBatch, iter_request_batches, time_split
from ranker.embeddings import EmbeddedBatch, PlanEmbeddings
from ranker.inputs import CandidateInputs, RequestInputs
from ranker.metrics import auc, logloss, per_example_logloss
from ranker.router import TierRouter, router_features, uplift_targets
from ranker.tiers import build_tier

__all__ = [
    "FORMAT_VERSION_MODEL",
    "MODEL_KIND",
    "TIERS",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "infer_roles",
    "to_inputs",
    "train",
]

logger = logging.getLogger(__name__)

MODEL_KIND = "adrank.ranker"
FORMAT_VERSION_MODEL = 1
TIERS = (TierName.SMALL, TierName.MEDIUM, TierName.LARGE)
_TYPICAL_CANDIDATES = 20
"""Candidates per request the relative tier costs are quoted at (the synthetic logs' mean)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TrainConfig:
    """Training settings.

    Attributes:
        epochs: Passes over the training requests.
        devices: Processes training together (gloo): > 1 shards the plan's tables across them
            as the plan places them (TorchRec DMP) and needs a plan for that many devices.
        requests_per_batch: Requests per step.
        holdout_days: Last days of requests held out for evaluation.
        router_days: Days before the held-out tail on which the router fits.
        max_sequence_len: Most recent behaviour items the large tier sees.
        embedding_lr: Adagrad learning rate of the embedding tables.
        embedding_init_scale: Initial rows uniform in +-scale/sqrt(dim).
        dense_lr: Adam learning rate of the tiers.
        dense_weight_decay: AdamW decoupled weight decay of the tiers.
        max_auc_loss: Router calibration: allowed AUC drop versus the best single tier.
        safe_tier: Tier for cold-start users.
        seed: Initialisation seed.
        small_tower_sizes: Small tier's user and ad towers (its cost per candidate).
        medium_top_sizes / interaction_dim: Medium tier's top MLP and interaction width.
        large_tower_sizes / large_top_sizes / attention_dim / cross_layers: Large tier's towers,
            deep network, attention width and DCNv2 cross layers. The tiers differ in size on
            purpose: the router can only save compute if the smaller tiers cost much less.
    """

    epochs: int = 1
    devices: int = 1
    requests_per_batch: int = 64
    holdout_days: float = 1.0
    router_days: float = 1.0
    max_sequence_len: int = 64
    embedding_lr: float = 0.01
    embedding_init_scale: float = 0.1
    dense_lr: float = 2e-3
    dense_weight_decay: float = 0.0
    max_auc_loss: float = 0.002
    safe_tier: TierName = TierName.MEDIUM
    seed: int = 0
    small_tower_sizes: tuple[int, ...] = (32,)
    medium_top_sizes: tuple[int, ...] = (64, 16)
    interaction_dim: int = 16
    large_tower_sizes: tuple[int, ...] = (256, 128)
    large_top_sizes: tuple[int, ...] = (256, 64)
    attention_dim: int = 64
    cross_layers: int = 3


@dataclasses.dataclass(frozen=True, slots=True)
class TrainResult:
    """What training produced.

    Attributes:
        out_dir: Output directory.
        metrics: Held-out AUC / log loss per tier and routed, router cost, counts, timings.
    """

    out_dir: Path
    metrics: dict[str, Any]


def to_inputs(emb: EmbeddedBatch, batch: RequestBatch) -> tuple[RequestInputs, CandidateInputs]:
    """Tier inputs of a batch's embeddings and dense values."""
    req = RequestInputs(
        pooled=emb.request_pooled,
        dense=torch.from_numpy(batch.request_dense),
        sequence=emb.sequence,
        sequence_mask=emb.sequence_mask,
    )
    cand = CandidateInputs(
        pooled=emb.candidate_pooled,
        dense=torch.from_numpy(batch.candidate_dense),
        request_index=torch.from_numpy(batch.candidate_request),
    )
    return req, cand


def _group_features(store: FeatureStore, group: str, dtypes: tuple[Dtype, ...]) -> list[str]:
    try:
        g = store.group(group)
    except Exception:  # noqa: BLE001 - a missing group just means no joined features
        return []
    return [f.name for f in g.features if f.dtype in dtypes and f.shape is Shape.SCALAR]


def _group_float_features(store: FeatureStore, group: str) -> list[str]:
    return _group_features(store, group, (Dtype.FLOAT32, Dtype.FLOAT64))


def infer_roles(logs: Path, plan: ShardPlan, store: FeatureStore) -> FeatureRoles:
    """Column roles of these logs, plan and feature store (see :class:`FeatureRoles`)."""
    return FeatureRoles.infer(
        plan,
        pq.read_schema(logs / "requests.parquet"),
        pq.read_schema(logs / "impressions.parquet"),
        _group_float_features(store, "user"),
        _group_float_features(store, "ad"),
        _group_features(store, "ad", (Dtype.INT64,)),
    )


def train(
    logs_dir: str | Path,
    store: FeatureStore,
    plan: ShardPlan,
    plan_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train the tiers and the router; write the model bundle to ``out_dir``.

    Args:
        logs_dir: ``requests.parquet`` and ``impressions.parquet``.
        store: Feature store with the ``user`` and ``ad`` groups.
        plan: The embedding plan.
        plan_dir: Its directory.
        out_dir: Output directory (created; files in it replaced atomically).
        config: Settings.
        progress: Called with the number of requests done, as they are done.

    Raises:
        InputError: Logs too short for the split, or missing files/columns.
    """
    logs = Path(logs_dir)
    for name in ("requests.parquet", "impressions.parquet"):
        if not (logs / name).is_file():
            raise InputError(f"{name} is missing", source=str(logs), hint="run adrank synth")
    torch.manual_seed(config.seed)
    roles = infer_roles(logs, plan, store)
    eval_start = time_split(logs / "requests.parquet", config.holdout_days)
    router_start = int(eval_start - config.router_days * 86_400)
    embeddings = PlanEmbeddings(
        plan,
        plan_dir,
        roles,
        max_sequence_len=config.max_sequence_len,
        init_scale=config.embedding_init_scale,
        seed=config.seed,
    )
    du, da, ds = embeddings.dims()
    base = TierDims(
        user_pooled_dim=du,
        user_dense_dim=len(roles.request_dense),
        sequence_dim=ds,
        ad_pooled_dim=da,
        ad_dense_dim=len(roles.candidate_dense),
        max_sequence_len=config.max_sequence_len,
    )
    dims = {
        TierName.SMALL: dataclasses.replace(base, tower_sizes=config.small_tower_sizes),
        TierName.MEDIUM: dataclasses.replace(
            base, top_sizes=config.medium_top_sizes, interaction_dim=config.interaction_dim
        ),
        TierName.LARGE: dataclasses.replace(
            base,
            tower_sizes=config.large_tower_sizes,
            top_sizes=config.large_top_sizes,
            attention_dim=config.attention_dim,
            cross_layers=config.cross_layers,
        ),
    }
    tiers = {name: build_tier(name, dims[name]) for name in TIERS}
    emb_opt = torch.optim.Adagrad(embeddings.parameters(), lr=config.embedding_lr)
    dense_params = [p for t in tiers.values() for p in t.parameters()]
    dense_opt = torch.optim.AdamW(
        dense_params, lr=config.dense_lr, weight_decay=config.dense_weight_decay
    )
    t0 = time.perf_counter()
    steps = seen = 0
    # Adagrad's sparse updates build COO tensors from valid indices: opt out of torch's
    # invariant checks explicitly (the default warns on every process that does not say).
    torch.sparse.check_sparse_tensor_invariants.disable()
    if config.devices > 1:
        from ranker.train_distributed import train_sharded

        tables, tier_states, steps, seen = train_sharded(
            logs,
            Path(store.path),
            Path(plan_dir),
            roles,
            dims,
            config,
            config.devices,
            router_start,
            embeddings.weights(),
        )
        _load_weights(embeddings, tables)
        for tier_name in TIERS:
            tiers[tier_name].load_state_dict(tier_states[tier_name.value])
    for _ in range(config.epochs if config.devices == 1 else 0):
        for batch in iter_request_batches(
            logs, store, roles, requests_per_batch=config.requests_per_batch, stop_s=router_start
        ):
            req, cand = to_inputs(embeddings(batch), batch)
            labels = torch.from_numpy(batch.labels)
            loss = sum(
                torch.nn.functional.binary_cross_entropy_with_logits(t(req, cand), labels)
                for t in tiers.values()
            )
            emb_opt.zero_grad(set_to_none=True)
            dense_opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            emb_opt.step()
            dense_opt.step()
            steps += 1
            seen += batch.num_requests
            if progress is not None:
                progress(batch.num_requests)
    if steps == 0:
        raise InputError(
            "no training requests before the router and held-out days",
            source=str(logs),
            hint="synthesize more days (adrank synth --days) or lower --holdout-days",
        )
    train_s = time.perf_counter() - t0
    costs = _relative_costs(tiers, config.max_sequence_len, _TYPICAL_CANDIDATES)

    router_eval = evaluate(embeddings, tiers, logs, store, roles, router_start, eval_start, config)
    router = TierRouter.fit(
        [t.value for t in TIERS],
        costs,
        router_eval["features"],
        np.stack(
            [
                uplift_targets(
                    router_eval["losses"][0],
                    router_eval["losses"][k],
                    router_eval["candidate_request"],
                    len(router_eval["features"]),
                )
                for k in (1, 2)
            ],
            axis=1,
        ),
        safe_tier=TIERS.index(config.safe_tier),
    )
    calib = router.calibrate(
        router_eval["features"],
        router_eval["scores"],
        router_eval["labels"],
        router_eval["candidate_request"],
        max_auc_loss=config.max_auc_loss,
    )
    held = evaluate(embeddings, tiers, logs, store, roles, eval_start, None, config)
    decisions = router.route(held["features"])
    routed_tier = np.array([d.tier for d in decisions], dtype=np.int64)
    routed_scores = np.choose(routed_tier[held["candidate_request"]], held["scores"])
    cand_counts = np.bincount(held["candidate_request"], minlength=len(routed_tier))
    per_request_cost = np.asarray(costs)[routed_tier]
    routed_cost = float((per_request_cost * cand_counts).sum() / max(cand_counts.sum(), 1))
    metrics: dict[str, Any] = {
        "tiers": {
            t.value: {
                "auc": auc(held["labels"], held["scores"][k]),
                "logloss": logloss(held["labels"], held["scores"][k]),
                "relative_cost": costs[k],
            }
            for k, t in enumerate(TIERS)
        },
        "routed": {
            "auc": auc(held["labels"], routed_scores),
            "logloss": logloss(held["labels"], routed_scores),
            "relative_cost": routed_cost,
            "cost_ratio_vs_large": 1.0 / routed_cost if routed_cost > 0 else float("inf"),
            "tier_mix": {t.value: float(np.mean(routed_tier == k)) for k, t in enumerate(TIERS)},
            "cold_start_requests": int(sum(d.reason.value == "cold_start" for d in decisions)),
        },
        "router_calibration": calib,
        "requests": {
            "train": seen,
            "router": len(router_eval["features"]),
            "held_out": len(held["features"]),
        },
        "candidates_held_out": len(held["labels"]),
        "train_s": train_s,
        "steps": steps,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoint"
    if ckpt_dir.exists():
        import shutil

        shutil.rmtree(ckpt_dir)
    save_checkpoint(ckpt_dir, plan, embeddings.weights())
    with atomic_path(out / "tiers.pt") as tmp:
        torch.save({t.value: tiers[t].state_dict() for t in TIERS}, tmp)
    router.save(out / "router.json")
    write_json_document(
        out / "ranker.json",
        MODEL_KIND,
        FORMAT_VERSION_MODEL,
        {
            "plan_fingerprint": plan.inputs_fingerprint,
            "roles": dataclasses.asdict(roles),
            "dims": {t.value: dataclasses.asdict(dims[t]) for t in TIERS},
            "tiers": [t.value for t in TIERS],
            "relative_cost": costs,
            "max_sequence_len": config.max_sequence_len,
        },
    )
    write_json_document(out / "metrics.json", "adrank.ranker_metrics", 1, metrics)
    return TrainResult(out_dir=out, metrics=metrics)


@torch.no_grad()
def _load_weights(embeddings: PlanEmbeddings, tables: dict[str, np.ndarray]) -> None:
    """Put trained tables (e.g. gathered from the ranks) into the single-process modules."""
    modules: dict[str, Any] = dict(embeddings.ebc.embedding_bags.items())
    if embeddings.ec is not None:
        modules.update(embeddings.ec.embeddings.items())
    for name, module in modules.items():
        module.weight.copy_(torch.from_numpy(tables[name]))


def _relative_costs(
    tiers: dict[TierName, RankerTier[Any]], seq_len: int, candidates: int
) -> list[float]:
    """FLOPs of each tier for a typical request relative to the large tier."""
    flops = [float(tiers[t].flops(candidates, seq_len)) for t in TIERS]
    return [f / flops[-1] for f in flops]


@torch.no_grad()
def evaluate(
    embeddings: PlanEmbeddings,
    tiers: dict[TierName, RankerTier[Any]],
    logs: Path,
    store: FeatureStore,
    roles: FeatureRoles,
    start_s: int | None,
    stop_s: int | None,
    config: TrainConfig,
) -> dict[str, Any]:
    """Scores of every tier on the requests in ``[start_s, stop_s)``.

    Returns:
        ``features`` (router context per request), ``scores`` (per tier, per candidate logits),
        ``losses`` (per tier, per candidate log loss), ``labels``, ``candidate_request``.
    """
    for t in tiers.values():
        t.eval()
    feats, labels, cand_req = [], [], []
    scores: list[list[np.ndarray]] = [[] for _ in TIERS]
    offset = 0
    for batch in iter_request_batches(
        logs,
        store,
        roles,
        requests_per_batch=config.requests_per_batch,
        start_s=start_s,
        stop_s=stop_s,
    ):
        req, cand = to_inputs(embeddings(batch), batch)
        for k, name in enumerate(TIERS):
            scores[k].append(tiers[name](req, cand).numpy().astype(np.float64))
        activity = (
            batch.request_dense[:, roles.request_dense.index("user_activity")]
            if "user_activity" in roles.request_dense
            else np.zeros(batch.num_requests)
        )
        counts = np.bincount(batch.candidate_request, minlength=batch.num_requests)
        # request_dense holds sign*log1p(x): undo it for the router's own transform.
        feats.append(router_features(batch.history_len, np.expm1(activity), counts))
        labels.append(batch.labels)
        cand_req.append(batch.candidate_request + offset)
        offset += batch.num_requests
    for t in tiers.values():
        t.train()
    if not labels:
        raise InputError(
            "no requests in an evaluation window",
            source=str(logs),
            hint="synthesize more days or change --holdout-days/--router-days",
        )
    y = np.concatenate(labels)
    s = [np.concatenate(x) for x in scores]
    return {
        "features": np.concatenate(feats),
        "scores": s,
        "losses": [per_example_logloss(y, x) for x in s],
        "labels": y,
        "candidate_request": np.concatenate(cand_req),
    }
