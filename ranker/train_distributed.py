"""Multi-process training (``adrank train --devices N``): the plan's tables sharded across N gloo
ranks by TorchRec's ``DistributedModelParallel`` exactly as the plan places them, the tiers
replicated (data parallel, gradients averaged with an all-reduce).

Every rank reads the same request stream and takes every N-th batch (so all ranks step together,
as DMP's collectives need); batches are padded to a fixed number of bags per feature (TorchRec's
all-to-alls expect one batch size on every rank). The embedding tables learn with FBGEMM's fused
row-wise Adagrad inside backward; the tiers with Adam. At the end rank 0 gathers every table from
the ranks' shards and returns them with the tier weights; evaluation and the router then run in
the calling process (:func:`ranker.train.train`).
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from adrank.errors import InputError
from adrank.planfile import read_plan
from adrank.types import PoolingType, ShardPlan

__all__ = ["MAX_CANDIDATES_PER_REQUEST", "train_sharded"]

MAX_CANDIDATES_PER_REQUEST = 64
"""Bag slots per request in a padded batch (the synthetic logs have at most 35 candidates)."""


class _Tables(nn.Module):
    """The plan's tables: a bag collection for pooled tables, a collection for sequence ones."""

    def __init__(self, plan: ShardPlan, device: torch.device) -> None:
        super().__init__()
        from ranker.embeddings import table_modules

        self.ebc, self.ec = table_modules(plan, device)

    def forward(
        self, pooled: KeyedJaggedTensor, sequences: KeyedJaggedTensor | None
    ) -> tuple[Any, Any]:
        return self.ebc(pooled), (self.ec(sequences) if self.ec is not None else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every rank needs (pickled to the spawned processes)."""

    world: int
    port: int
    logs_dir: Path
    store_dir: Path
    plan_dir: Path
    roles: Any
    dims: dict[Any, Any]
    config: Any
    stop_s: int
    init_tables: dict[str, np.ndarray]


def train_sharded(
    logs_dir: Path,
    store_dir: Path,
    plan_dir: Path,
    roles: Any,
    dims: dict[Any, Any],
    config: Any,
    world: int,
    stop_s: int,
    init_tables: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, Any], int, int]:
    """Train on ``world`` gloo ranks; return (tables, tier state dicts, steps, requests seen).

    Raises:
        InputError: The plan is for another number of devices.
    """
    plan = read_plan(plan_dir, require_remaps=True)
    if len(plan.devices) != world:
        raise InputError(
            f"the plan places shards on {len(plan.devices)} devices, not {world}",
            source=str(plan_dir),
            hint=f"train with --devices {len(plan.devices)}",
        )
    import tempfile

    ctx = mp.get_context("spawn")
    job = _Job(
        world,
        _free_port(),
        logs_dir,
        store_dir,
        plan_dir,
        roles,
        dims,
        config,
        stop_s,
        init_tables,
    )
    with tempfile.TemporaryDirectory(prefix="adrank-train-") as tmp:
        # Rank 0 writes its result to a file: tensors sent through a multiprocessing queue
        # travel as shared-memory file descriptors, which vanish if the rank exits first.
        out = Path(tmp) / "result.pt"
        procs = [
            ctx.Process(
                target=_rank_main,
                args=(r, job, out),
                name=f"adrank-train-rank{r}",
            )
            for r in range(world)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode != 0]
        if failed or not out.exists():
            raise RuntimeError(
                f"distributed training failed: exit codes {failed} (see the ranks' logs above)"
            )
        result = torch.load(out, weights_only=False)
    return result["tables"], result["tiers"], result["steps"], result["seen"]


def _rank_main(rank: int, job: _Job, out_path: Path) -> None:
    try:
        out = _train_rank(rank, job)
        if rank == 0 and out is not None:
            tables, tiers, steps, seen = out
            torch.save({"tables": tables, "tiers": tiers, "steps": steps, "seen": seen}, out_path)
    finally:
        if dist.is_initialized():
            dist.barrier()
            gc.collect()
            dist.destroy_process_group()


def _train_rank(
    rank: int, job: _Job
) -> tuple[dict[str, np.ndarray], dict[str, Any], int, int] | None:
    import warnings

    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.types import EmbeddingModuleShardingPlan, ShardingPlan

    from embed_store.sharders import CpuEmbeddingBagCollectionSharder
    from embed_store.torchrec_plan import parameter_shardings
    from feature_service import FeatureStore
    from ranker.data import iter_request_batches
    from ranker.embeddings import FeatureHasher
    from ranker.tiers import build_tier
    from ranker.train import TIERS, to_inputs

    world, port, logs_dir, store_dir, plan_dir = (
        job.world,
        job.port,
        job.logs_dir,
        job.store_dir,
        job.plan_dir,
    )
    roles, dims, config, stop_s = job.roles, job.dims, job.config, job.stop_s
    # TorchRec 1.8 calls torch.distributed functions torch 2.13 deprecates; not ours to fix.
    warnings.filterwarnings(
        "ignore", message=r".*is deprecated\. Please use", category=FutureWarning
    )
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_WORLD_SIZE=str(world))
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300)
    )
    plan = read_plan(plan_dir, require_remaps=True)
    shardings = parameter_shardings(plan)
    seq_tables = {t.name for t in plan.tables if t.pooling is PoolingType.NONE}
    sharding_plan = ShardingPlan(
        plan={
            "ebc": EmbeddingModuleShardingPlan(
                {k: v for k, v in shardings.items() if k not in seq_tables}
            ),
            **(
                {"ec": EmbeddingModuleShardingPlan({k: shardings[k] for k in seq_tables})}
                if seq_tables
                else {}
            ),
        }
    )
    fused = {
        "optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
        "learning_rate": config.embedding_lr,
    }
    model = DistributedModelParallel(
        _Tables(plan, torch.device("meta")),
        device=torch.device("cpu"),
        plan=sharding_plan,
        sharders=[
            CpuEmbeddingBagCollectionSharder(fused_params=fused),
            EmbeddingCollectionSharder(fused_params=fused),
        ],
    )
    _load_tables(model, job.init_tables)
    tiers = {name: build_tier(name, dims[name]) for name in TIERS}
    dense = [p for t in tiers.values() for p in t.parameters()]
    for p in dense:  # same start on every rank
        dist.broadcast(p.data, src=0)
    opt = torch.optim.Adam(dense, lr=config.dense_lr)
    hasher = FeatureHasher(plan, plan_dir)
    pooled_features = [
        f.name for t in plan.tables if t.pooling is not PoolingType.NONE for f in t.features
    ]
    stride = config.requests_per_batch * MAX_CANDIDATES_PER_REQUEST
    steps = seen = 0
    with FeatureStore.open(store_dir, read_only=True) as store:
        for _ in range(config.epochs):
            batches = iter_request_batches(
                logs_dir, store, roles, requests_per_batch=config.requests_per_batch, stop_s=stop_s
            )
            group: list[Any] = []
            for batch in batches:
                group.append(batch)
                if len(group) < world:
                    continue
                mine, group = group[rank], []
                seen += _step(
                    model,
                    tiers,
                    opt,
                    dense,
                    mine,
                    hasher,
                    roles,
                    pooled_features,
                    stride,
                    config,
                    world,
                    to_inputs,
                )
                steps += 1
    tables = _gather_tables(model, plan)
    if rank != 0:
        return None
    return tables, {t.value: tiers[t].state_dict() for t in TIERS}, steps, seen * world


def _step(
    model: Any,
    tiers: dict[Any, Any],
    opt: Any,
    dense: list[Any],
    batch: Any,
    hasher: Any,
    roles: Any,
    pooled_features: list[str],
    stride: int,
    config: Any,
    world: int,
    to_inputs: Any,
) -> int:
    from ranker.embeddings import EmbeddedBatch

    r, c = batch.num_requests, batch.num_candidates
    if c > stride or r > config.requests_per_batch:
        raise InputError(f"a batch has {c} candidates, more than the {stride} padded slots")
    values, lengths = [], []
    for f in pooled_features:
        bags, n = (
            (batch.request_sparse[f], r)
            if f in batch.request_sparse
            else (batch.candidate_sparse[f], c)
        )
        rows = hasher.rows(f, bags)
        values.append(rows.values)
        lengths.append(np.concatenate([rows.lengths, np.zeros(stride - n, dtype=np.int64)]))
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=pooled_features,
        values=torch.from_numpy(np.concatenate(values)),
        lengths=torch.from_numpy(np.concatenate(lengths)),
    )
    seq_kjt = None
    cut: dict[str, Any] = {}
    if roles.sequences:
        from ranker.embeddings import _truncate

        cut = {f: _truncate(batch.sequences[f], config.max_sequence_len) for f in roles.sequences}
        rows_seq = {f: hasher.rows(f, cut[f]) for f in roles.sequences}
        pad = config.requests_per_batch - r
        seq_kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=list(roles.sequences),
            values=torch.from_numpy(np.concatenate([rows_seq[f].values for f in roles.sequences])),
            lengths=torch.from_numpy(
                np.concatenate(
                    [
                        np.concatenate([rows_seq[f].lengths, np.zeros(pad, np.int64)])
                        for f in roles.sequences
                    ]
                )
            ),
        )
    pooled_out, seq_out = model(kjt, seq_kjt)
    pooled = pooled_out.to_dict()
    req = torch.cat([pooled[f][:r] for f in roles.request_sparse], dim=1)
    cand = torch.cat([pooled[f][:c] for f in roles.candidate_sparse], dim=1)
    if seq_out is not None:
        lens = torch.from_numpy(cut[roles.sequences[0]].lengths)
        longest = int(lens.max()) if r else 0
        parts = [seq_out[f].to_padded_dense(desired_length=longest)[:r] for f in roles.sequences]
        seq = torch.cat(parts, dim=2)
        mask = torch.arange(longest).unsqueeze(0) < lens.unsqueeze(1)
    else:
        seq, mask = torch.zeros((r, 0, 0)), torch.zeros((r, 0), dtype=torch.bool)
    req_in, cand_in = to_inputs(EmbeddedBatch(req, cand, seq, mask), batch)
    labels = torch.from_numpy(batch.labels)
    loss = sum(
        torch.nn.functional.binary_cross_entropy_with_logits(t(req_in, cand_in), labels)
        for t in tiers.values()
    )
    opt.zero_grad(set_to_none=False)
    loss.backward()  # type: ignore[union-attr]  # embeddings update inside (fused optimizer)
    for p in dense:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)
    opt.step()
    return r


@torch.no_grad()
def _load_tables(model: Any, tables: dict[str, np.ndarray]) -> None:
    for key, value in model.state_dict().items():
        if not key.endswith(".weight"):
            continue
        name = key.split(".")[-2]
        full = torch.from_numpy(tables[name])
        for shard in value.local_shards():
            r0, c0 = (int(x) for x in shard.metadata.shard_offsets)
            n, m = (int(x) for x in shard.metadata.shard_sizes)
            shard.tensor.copy_(full[r0 : r0 + n, c0 : c0 + m])


def _gather_tables(model: Any, plan: ShardPlan) -> dict[str, np.ndarray]:
    """Every table, assembled on every rank from all ranks' shards (gloo all_gather_object)."""
    local: list[tuple[str, int, int, np.ndarray]] = []
    for key, value in model.state_dict().items():
        if not key.endswith(".weight"):
            continue
        name = key.split(".")[-2]
        for shard in value.local_shards():
            r0, c0 = (int(x) for x in shard.metadata.shard_offsets)
            local.append((name, r0, c0, shard.tensor.detach().numpy().copy()))
    everything: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everything, local)
    out = {t.name: np.zeros((t.num_rows, t.dim), dtype=np.float32) for t in plan.tables}
    for part in everything:
        for name, r0, c0, block in part:
            out[name][r0 : r0 + block.shape[0], c0 : c0 + block.shape[1]] = block
    return out
