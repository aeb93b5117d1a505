"""Build a TorchRec ``EmbeddingBagCollection`` sharded exactly as an adrank plan says.

Call on every rank after ``torch.distributed.init_process_group`` (gloo on CPU, NCCL on GPU),
with the same plan everywhere (plan on one rank and broadcast, or read the same plan file: a rank
that fails to plan alone leaves the others waiting until the process-group timeout).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torchrec.distributed.comm import get_local_size
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from adrank.errors import PlanError, PlanErrorKind
from adrank.types import ShardingType, ShardPlan
from embed_store.sharders import CpuEmbeddingBagCollectionSharder
from embed_store.torchrec_plan import (
    check_placements,
    embedding_bag_configs,
    local_world_size,
    sharded_placements,
    torchrec_sharding_plan,
)

__all__ = ["build_sharded_ebc", "load_full_weights"]

logger = logging.getLogger(__name__)


def build_sharded_ebc(
    plan: ShardPlan,
    *,
    device: torch.device | None = None,
    fused_params: Mapping[str, Any] | None = None,
    compute_kernel: str = EmbeddingComputeKernel.FUSED.value,
    expected_fingerprint: str | None = None,
) -> DistributedModelParallel:
    """Shard an ``EmbeddingBagCollection`` of the plan's tables across the process group.

    The collection is created on the meta device (no full table is ever materialised); each rank
    allocates only its shards. The shards TorchRec reports afterwards are checked against the plan.

    Args:
        plan: The plan (same on every rank).
        device: Compute device (default CPU).
        fused_params: FBGEMM TBE parameters for the sharder (optimizer, learning rate...).
        compute_kernel: TorchRec compute kernel for every table.
        expected_fingerprint: When given, refuse a plan made from other inputs.

    Returns:
        The ``DistributedModelParallel`` module; call it with a ``KeyedJaggedTensor`` of this
        rank's batch (keys: the plan's feature names; values: rows).

    Raises:
        PlanError: ``PLAN_MISMATCH``: no process group, a world size other than the plan's, a
            ``LOCAL_WORLD_SIZE`` that does not match the plan's hosts (table-row-wise plans), a
            layout TorchRec cannot express, or shards that came out differently from the plan.
    """
    device = device or torch.device("cpu")
    if not dist.is_available() or not dist.is_initialized():
        raise PlanError(
            "torch.distributed is not initialised",
            kind=PlanErrorKind.PLAN_MISMATCH,
            hint="call torch.distributed.init_process_group on every rank first",
        )
    world = dist.get_world_size()
    if world != len(plan.devices):
        raise PlanError(
            f"the plan is for {len(plan.devices)} ranks but the process group has {world}",
            kind=PlanErrorKind.PLAN_MISMATCH,
            hint="launch one process per device of the plan, or re-plan for this world size",
        )
    if any(t.sharding_type is ShardingType.TABLE_ROW_WISE for t in plan.tables):
        want = local_world_size(plan)
        got = get_local_size(world)
        if got != want:
            raise PlanError(
                f"the plan's hosts have {want} ranks each but TorchRec sees a local world size "
                f"of {got}",
                kind=PlanErrorKind.PLAN_MISMATCH,
                hint=f"set LOCAL_WORLD_SIZE={want} in every process (torchrun sets it; "
                "mp.spawn does not)",
            )
    sharding_plan = torchrec_sharding_plan(
        plan,
        device_type=device.type,
        compute_kernel=compute_kernel,
        expected_fingerprint=expected_fingerprint,
    )
    ebc = EmbeddingBagCollection(tables=embedding_bag_configs(plan), device=torch.device("meta"))
    sharder = CpuEmbeddingBagCollectionSharder(
        fused_params=dict(fused_params) if fused_params is not None else None
    )
    model = DistributedModelParallel(ebc, device=device, plan=sharding_plan, sharders=[sharder])
    check_placements(plan, sharded_placements(model))
    logger.info(
        "sharded %d tables on rank %d of %d as planned", len(plan.tables), dist.get_rank(), world
    )
    return model


@torch.no_grad()
def load_full_weights(
    model: torch.nn.Module, weights: Mapping[str, torch.Tensor], prefix: str = ""
) -> None:
    """Copy each table's full weights into the shards this rank holds.

    Args:
        model: A sharded module from :func:`build_sharded_ebc`.
        weights: Table name -> full ``[num_rows, dim]`` tensor (only the local shards' slices are
            read).
        prefix: Key prefix of the EBC's state-dict entries.

    Raises:
        PlanError: ``PLAN_MISMATCH`` when a table is missing from ``weights`` or a shard lies
            outside its tensor.
    """
    head = f"{prefix}embedding_bags."
    for key, value in model.state_dict().items():
        if not (key.startswith(head) and key.endswith(".weight")):
            continue
        table = key[len(head) : -len(".weight")]
        if table not in weights:
            raise PlanError(
                f"no weights given for table {table!r}",
                kind=PlanErrorKind.PLAN_MISMATCH,
                source=table,
            )
        full = weights[table]
        for shard in value.local_shards():
            r0, c0 = (int(x) for x in shard.metadata.shard_offsets)
            n, m = (int(x) for x in shard.metadata.shard_sizes)
            if r0 + n > full.shape[0] or c0 + m > full.shape[1]:
                raise PlanError(
                    f"table {table!r}: shard rows {r0}+{n} x cols {c0}+{m} lie outside the given "
                    f"{tuple(full.shape)} weights",
                    kind=PlanErrorKind.PLAN_MISMATCH,
                    source=table,
                )
            shard.tensor.copy_(full[r0 : r0 + n, c0 : c0 + m])
