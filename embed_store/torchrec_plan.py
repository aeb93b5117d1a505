"""Convert an adrank :class:`~adrank.types.ShardPlan` into TorchRec's terms, and check it stayed.

* :func:`embedding_bag_configs`: one ``EmbeddingBagConfig`` per table (name, dim, ``num_rows``,
  feature names, pooling, data type from the precision).
* :func:`torchrec_sharding_plan`: a ``ShardingPlan`` whose ``ParameterSharding`` per table puts
  exactly the plan's shards (rank, row/column offsets, sizes) where the plan says. Each table's
  sharding is produced by TorchRec's own generators in ``torchrec.distributed.sharding_plan``
  (``table_wise(rank)``, ``row_wise()``, ``table_row_wise(host_index)``), or, for column-wise
  tables, by ShardMetadata built from the plan; then the generated shards are compared with the
  plan's, so a plan TorchRec's runtime would silently lay out differently is refused.
* :func:`sharded_placements` / :func:`check_placements`: read the shards a sharded module holds
  and compare them with the plan.

What TorchRec's training runtime can express (anything else raises ``PlanError(PLAN_MISMATCH)``):

==============  ==============================================================================
table_wise      the whole table on any one rank
column_wise     full-height column blocks of any widths on any ranks (a rank may hold several)
row_wise        exactly TorchRec's even layout over *all* ranks: rank ``r`` holds rows
                ``[r*B, (r+1)*B)`` with ``B = ceil(num_rows / world_size)`` (the last ranks may
                get fewer or none), because the runtime routes ids to ranks by that block size
table_row_wise  the same layout over the ``L`` ranks of one host, hosts being consecutive blocks
                of ``L = LOCAL_WORLD_SIZE`` ranks (TorchRec's host index is ``rank // L``)
==============  ==============================================================================

Uneven row-wise splits (adrank's planner spreads remainder rows one per rank, or splits by free
memory) are refused even though ``row_wise(sizes_placement=(sizes, device))`` builds such a
``ParameterSharding``: TorchRec 1.8's training input dist (``RwSparseFeaturesDist``) ignores the
shard sizes and sends id ``i`` to rank ``i // B`` (``B = ceil(num_rows / world_size)``) as local
row ``i % B``. On 2 gloo ranks, a 10-row table split 7+3 (or 3+7) looked up wrong rows for ids
5..9 (3..9), and FBGEMM's bounds check clamped out-of-range local rows to 0; only the inference
dist (``InferRwSparseFeaturesDist``, compute kernel "quant") reads the shard offsets.

Two TorchRec 1.8 / FBGEMM 1.8 runtime limits are refused as well (both found by the multi-process
parity test):

* A row-wise or table-row-wise table with MEAN pooling next to any table_wise or column_wise table
  in one collection: ``ShardedEmbeddingBagCollection``'s mean-pooling callback then divides *every*
  non-row-wise feature by its bag length too (its divisor resets lengths to 1 only for row-wise
  SUM features), so those outputs come out wrong.
* On CPU, a rank whose row-wise (or table-row-wise) shards of one (precision, pooling) group are all
  empty: TorchRec still builds a TBE for it, and FBGEMM's training TBE, finding no host weights,
  takes its GPU path and fails ("weights[0] must be a GPU or MTIA tensor").
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

import torch
from torch.distributed._shard.sharding_spec import EnumerableShardingSpec, ShardMetadata
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.sharding_plan import row_wise, table_row_wise, table_wise
from torchrec.distributed.types import (
    EmbeddingModuleShardingPlan,
    ParameterSharding,
    ShardingPlan,
)
from torchrec.distributed.types import ShardingType as TorchrecShardingType
from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig
from torchrec.modules.embedding_configs import PoolingType as TorchrecPoolingType

from adrank.errors import PlanError, PlanErrorKind
from adrank.planfile import check_fingerprint, validate_plan
from adrank.types import PoolingType, Precision, ShardingType, ShardPlan, ShardSpec, TablePlan
from embed_store.sharders import CpuEmbeddingBagCollectionSharder

__all__ = [
    "check_placements",
    "embedding_bag_configs",
    "local_world_size",
    "parameter_shardings",
    "sharded_placements",
    "sharding_spec_placements",
    "torchrec_sharding_plan",
]

logger = logging.getLogger(__name__)

_DATA_TYPES = {
    Precision.FP32: DataType.FP32,
    Precision.FP16: DataType.FP16,
    Precision.INT8: DataType.INT8,
    Precision.INT4: DataType.INT4,
}
_HINT = (
    "re-plan with TorchRec-compatible layouts (row_wise: TorchRec's even split over all ranks; "
    "table_row_wise: even split over one host's ranks), or use table_wise/column_wise shards"
)


def _mismatch(problems: list[str], source: str | None) -> PlanError:
    text = (
        problems[0]
        if len(problems) == 1
        else f"{len(problems)} tables cannot be expressed in TorchRec:\n"
        + "\n".join(f"{i}. {p}" for i, p in enumerate(problems, 1))
    )
    return PlanError(text, kind=PlanErrorKind.PLAN_MISMATCH, source=source, hint=_HINT)


def embedding_bag_configs(plan: ShardPlan) -> list[EmbeddingBagConfig]:
    """One TorchRec ``EmbeddingBagConfig`` per table of ``plan``, in the plan's (name) order.

    ``num_embeddings`` is the table's stored rows (``num_rows``: after pruning; ids reach it as
    rows, i.e. remapped before lookup); ``feature_names`` are the features looked up in it;
    ``data_type`` follows the precision (training kernels take fp32/fp16 tables; int8/int4 tables
    of inference plans are for TorchRec's quantized modules).

    Args:
        plan: The plan.

    Returns:
        The configs.

    Raises:
        PlanError: ``PLAN_MISMATCH`` for tables with pooling NONE (sequence features belong in an
            ``EmbeddingCollection``, not a bag collection).
    """
    problems = [
        f"table {t.name!r} has pooling NONE; EmbeddingBagConfig needs SUM or MEAN"
        for t in plan.tables
        if t.pooling is PoolingType.NONE
    ]
    if problems:
        raise _mismatch(problems, None)
    return [
        EmbeddingBagConfig(
            num_embeddings=t.num_rows,
            embedding_dim=t.dim,
            name=t.name,
            data_type=_DATA_TYPES[t.precision],
            feature_names=[f.name for f in t.features],
            pooling=TorchrecPoolingType[t.pooling.value],
        )
        for t in plan.tables
    ]


def local_world_size(plan: ShardPlan) -> int:
    """Ranks per host, as TorchRec's ``LOCAL_WORLD_SIZE`` must be set for this plan.

    Args:
        plan: The plan.

    Returns:
        ``L`` such that host ``h`` holds exactly ranks ``h*L .. h*L+L-1``.

    Raises:
        PlanError: ``PLAN_MISMATCH`` when hosts are not consecutive rank blocks of one size
            (TorchRec derives a rank's host as ``rank // LOCAL_WORLD_SIZE``).
    """
    hosts = [d.host for d in plan.devices]
    if not hosts:
        raise PlanError("the plan has no devices", kind=PlanErrorKind.PLAN_MISMATCH)
    sizes = [sum(1 for h in hosts if h == host) for host in dict.fromkeys(hosts)]
    size = sizes[0]
    blocks_ok = all(s == size for s in sizes) and all(
        hosts[r] == hosts[(r // size) * size] for r in range(len(hosts))
    )
    if not blocks_ok:
        raise PlanError(
            "TorchRec needs hosts of equal size holding consecutive ranks; the plan's hosts per "
            f"rank are {hosts}",
            kind=PlanErrorKind.PLAN_MISMATCH,
            hint="number ranks host by host, with the same number of devices on every host",
        )
    return size


def _placement_rank(m: ShardMetadata) -> int:
    """Rank a shard is placed on (-1 when TorchRec left it unplaced)."""
    rank = m.placement.rank() if m.placement is not None else None
    return -1 if rank is None else int(rank)


def _shard_key(s: ShardSpec) -> tuple[int, int, int]:
    return (s.row_offset, s.col_offset, s.rank)


def sharding_spec_placements(ps: ParameterSharding) -> tuple[ShardSpec, ...]:
    """The non-empty shards a ``ParameterSharding`` places, as adrank ``ShardSpec``s.

    Zero-sized shards (TorchRec's row-wise layout gives trailing ranks none when rows are few)
    are left out, so the result compares directly with a plan's shards.

    Args:
        ps: A TorchRec parameter sharding.

    Returns:
        Shards sorted by (row offset, column offset, rank); empty for data-parallel.
    """
    spec = ps.sharding_spec
    if not isinstance(spec, EnumerableShardingSpec):
        return ()
    out = []
    for m in spec.shards:
        rows, cols = int(m.shard_sizes[0]), int(m.shard_sizes[1])
        if rows == 0 or cols == 0:
            continue
        out.append(
            ShardSpec(
                _placement_rank(m), int(m.shard_offsets[0]), rows, int(m.shard_offsets[1]), cols
            )
        )
    return tuple(sorted(out, key=_shard_key))


def _device_placements(plan: ShardPlan, device_type: str) -> dict[int, str]:
    """Rank -> TorchRec placement string: ``rank:R/cpu``, or ``rank:R/cuda:I`` with ``I`` the
    rank's index among its host's ranks (its local device)."""
    local_index: dict[int, int] = {}
    seen: dict[str, int] = {}
    for d in plan.devices:
        local_index[d.rank] = seen.get(d.host, 0)
        seen[d.host] = local_index[d.rank] + 1
    if device_type == "cpu":
        return {r: f"rank:{r}/cpu" for r in local_index}
    return {r: f"rank:{r}/{device_type}:{i}" for r, i in local_index.items()}


def _table_sharding(
    t: TablePlan,
    world_size: int,
    local_size: int | None,
    device_type: str,
    compute_kernel: str,
    placements: Mapping[int, str],
) -> ParameterSharding:
    """TorchRec's ParameterSharding for one table (not yet compared with the plan)."""
    st = t.sharding_type
    # TorchRec's generators read only the parameter's shape: a meta tensor allocates nothing.
    param = torch.nn.Parameter(torch.empty((t.num_rows, t.dim), device="meta"))
    sharder = CpuEmbeddingBagCollectionSharder()
    local = local_size or world_size
    if st is ShardingType.TABLE_WISE:
        gen = table_wise(rank=t.shards[0].rank, compute_kernel=compute_kernel)
        ps = gen(param, local, world_size, device_type, sharder)
    elif st is ShardingType.ROW_WISE:
        ps = row_wise(compute_kernel=compute_kernel)(param, local, world_size, device_type, sharder)
    elif st is ShardingType.TABLE_ROW_WISE:
        host_index = min(s.rank for s in t.shards) // local
        ps = table_row_wise(host_index=host_index)(param, local, world_size, device_type, sharder)
    else:
        # column_wise: TorchRec's column_wise() generator only splits evenly into multiples of 4
        # columns (and places uneven splits on ranks 0..n-1), so the shards are written directly.
        shards = sorted(t.shards, key=lambda s: s.col_offset)
        ps = ParameterSharding(
            sharding_type=TorchrecShardingType.COLUMN_WISE.value,
            compute_kernel=compute_kernel,
            ranks=[s.rank for s in shards],
            sharding_spec=EnumerableShardingSpec(
                [
                    ShardMetadata(
                        shard_offsets=[s.row_offset, s.col_offset],
                        shard_sizes=[s.num_rows, s.num_cols],
                        placement=f"rank:{s.rank}/cpu",
                    )
                    for s in shards
                ]
            ),
        )
    spec = ps.sharding_spec
    assert isinstance(spec, EnumerableShardingSpec)
    # TorchRec's generators name the device cuda:<rank % local size>; use each rank's own index
    # on its host instead (hosts of unequal size stay right).
    fixed = EnumerableShardingSpec(
        [
            ShardMetadata(
                shard_offsets=list(m.shard_offsets),
                shard_sizes=list(m.shard_sizes),
                placement=placements.get(_placement_rank(m), str(m.placement)),
            )
            for m in spec.shards
        ]
    )
    return dataclasses.replace(ps, compute_kernel=compute_kernel, sharding_spec=fixed)


def parameter_shardings(
    plan: ShardPlan,
    *,
    device_type: str = "cpu",
    compute_kernel: str = EmbeddingComputeKernel.FUSED.value,
    source: str | None = None,
) -> dict[str, ParameterSharding]:
    """TorchRec ``ParameterSharding`` per table, each placing exactly the plan's shards.

    Args:
        plan: A valid plan.
        device_type: "cpu" or "cuda" (sets the shards' placement device).
        compute_kernel: TorchRec compute kernel for every table ("fused": FBGEMM's training TBE
            with the optimizer fused into backward; "dense"; "quant" for inference modules).
        source: Plan file name, for messages.

    Returns:
        Table name -> parameter sharding.

    Raises:
        PlanError: ``PLAN_MISMATCH`` naming every table TorchRec cannot lay out as the plan does
            (with both layouts), or the plan is invalid.
    """
    validate_plan(plan, source=source)
    world_size = len(plan.devices)
    needs_hosts = any(t.sharding_type is ShardingType.TABLE_ROW_WISE for t in plan.tables)
    local_size = local_world_size(plan) if needs_hosts else None
    placements = _device_placements(plan, device_type)
    out: dict[str, ParameterSharding] = {}
    problems: list[str] = []
    for t in plan.tables:
        ps = _table_sharding(t, world_size, local_size, device_type, compute_kernel, placements)
        got = sharding_spec_placements(ps)
        want = tuple(sorted(t.shards, key=_shard_key))
        if got != want:
            problems.append(
                f"table {t.name!r} ({t.sharding_type.value}, {t.num_rows} rows x {t.dim}): the "
                f"plan has shards {_fmt(want)}, TorchRec would place {_fmt(got)}"
                + _row_routing_note(t, world_size, local_size)
            )
            continue
        out[t.name] = ps
    problems += _runtime_limit_problems(plan, out, device_type)
    if problems:
        raise _mismatch(problems, source)
    return out


def _row_routing_note(t: TablePlan, world_size: int, local_size: int | None) -> str:
    """Why an uneven row split cannot be expressed ("" for other sharding types)."""
    if t.sharding_type is ShardingType.ROW_WISE:
        ranks = world_size
    elif t.sharding_type is ShardingType.TABLE_ROW_WISE:
        ranks = local_size or world_size
    else:
        return ""
    block = -(-t.num_rows // ranks)
    return (
        f"; TorchRec's training runtime sends row i to the {ranks} ranks by blocks of "
        f"ceil({t.num_rows} / {ranks}) = {block} rows whatever the shard sizes, so another split "
        "would look up wrong rows"
    )


def _runtime_limit_problems(
    plan: ShardPlan, shardings: Mapping[str, ParameterSharding], device_type: str
) -> list[str]:
    """Plans TorchRec accepts but computes wrongly or fails on (see the module docstring)."""
    problems: list[str] = []
    row_types = (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE)
    mean_rs = [
        t.name
        for t in plan.tables
        if t.sharding_type in row_types and t.pooling is PoolingType.MEAN
    ]
    others = [t.name for t in plan.tables if t.sharding_type not in row_types]
    if mean_rs and others:
        problems.append(
            f"row-wise tables with MEAN pooling ({', '.join(mean_rs)}) beside table-wise or "
            f"column-wise tables ({', '.join(others)}): TorchRec's mean-pooling callback would "
            "also divide the latter's outputs by their bag lengths; use SUM pooling, or shard "
            "these MEAN tables table-wise/column-wise, or put them in their own collection"
        )
    if device_type != "cpu":
        return problems
    # (sharding type, precision, pooling) -> rows per rank over the ranks the group spans.
    groups: dict[tuple[ShardingType, Precision, PoolingType], dict[int, int]] = {}
    names: dict[tuple[ShardingType, Precision, PoolingType], list[str]] = {}
    for t in plan.tables:
        if t.sharding_type not in row_types or t.name not in shardings:
            continue
        key = (t.sharding_type, t.precision, t.pooling)
        rows = groups.setdefault(key, {})
        names.setdefault(key, []).append(t.name)
        ps = shardings[t.name]
        for rank in ps.ranks or []:
            rows.setdefault(rank, 0)
        for s in t.shards:
            rows[s.rank] = rows.get(s.rank, 0) + s.num_rows
    for key, rows in groups.items():
        empty = sorted(r for r, n in rows.items() if n == 0)
        if empty:
            problems.append(
                f"{key[0].value} tables {', '.join(names[key])} ({key[1].value}, "
                f"{key[2].value}) leave ranks {empty} without rows; FBGEMM's CPU training kernel "
                "fails on an empty table group: shard such small tables table-wise"
            )
    return problems


def _fmt(shards: Sequence[ShardSpec]) -> str:
    return (
        "["
        + ", ".join(
            f"rank {s.rank}: rows {s.row_offset}+{s.num_rows} cols {s.col_offset}+{s.num_cols}"
            for s in shards
        )
        + "]"
    )


def torchrec_sharding_plan(
    plan: ShardPlan,
    *,
    module_path: str = "",
    device_type: str = "cpu",
    compute_kernel: str = EmbeddingComputeKernel.FUSED.value,
    expected_fingerprint: str | None = None,
    source: str | None = None,
) -> ShardingPlan:
    """A TorchRec ``ShardingPlan`` for one ``EmbeddingBagCollection`` built from
    :func:`embedding_bag_configs`.

    Example::

        ebc = EmbeddingBagCollection(tables=embedding_bag_configs(plan), device=meta)
        model = DistributedModelParallel(
            ebc, plan=torchrec_sharding_plan(plan), sharders=[CpuEmbeddingBagCollectionSharder()],
            device=torch.device("cpu"))

    Args:
        plan: A valid plan.
        module_path: Path of the EBC inside the module ``DistributedModelParallel`` wraps ("" when
            it wraps the EBC itself, e.g. "sparse_arch.embedding_bag_collection" in a DLRM).
        device_type: "cpu" or "cuda".
        compute_kernel: See :func:`parameter_shardings`.
        expected_fingerprint: When given, refuse a plan made from other inputs.
        source: Plan file name, for messages.

    Returns:
        The sharding plan.

    Raises:
        PlanError: ``PLAN_MISMATCH``: another fingerprint, or a layout TorchRec cannot express.
    """
    if expected_fingerprint is not None:
        check_fingerprint(plan, expected_fingerprint, source=source)
    shardings = parameter_shardings(
        plan, device_type=device_type, compute_kernel=compute_kernel, source=source
    )
    logger.info(
        "converted plan with %d tables on %d ranks to a TorchRec sharding plan",
        len(shardings),
        len(plan.devices),
    )
    return ShardingPlan(plan={module_path: EmbeddingModuleShardingPlan(shardings)})


def sharded_placements(
    module: torch.nn.Module, prefix: str = ""
) -> dict[str, tuple[ShardSpec, ...]]:
    """The shards a sharded TorchRec module reports, per table, from its ``ShardedTensor`` state.

    Reads the global shard metadata of every ``<prefix>embedding_bags.<table>.weight`` entry of
    ``module.state_dict()`` (a sharded EBC, or a DistributedModelParallel wrapping one).

    Args:
        module: The sharded module.
        prefix: Key prefix of the EBC's entries (DMP adds ``module.``-style prefixes when nested).

    Returns:
        Table name -> non-empty shards, sorted by (row offset, column offset, rank).
    """
    out: dict[str, tuple[ShardSpec, ...]] = {}
    head = f"{prefix}embedding_bags."
    for key, value in module.state_dict().items():
        if not (key.startswith(head) and key.endswith(".weight")):
            continue
        table = key[len(head) : -len(".weight")]
        metadata = getattr(value, "metadata", None)
        if metadata is None:
            continue
        shards = []
        for m in metadata().shards_metadata:
            rows, cols = int(m.shard_sizes[0]), int(m.shard_sizes[1])
            if rows and cols:
                rank = _placement_rank(m)
                shards.append(
                    ShardSpec(rank, int(m.shard_offsets[0]), rows, int(m.shard_offsets[1]), cols)
                )
        out[table] = tuple(sorted(shards, key=_shard_key))
    return out


def check_placements(
    plan: ShardPlan,
    placements: Mapping[str, Sequence[ShardSpec]],
    *,
    source: str | None = None,
) -> None:
    """Check that the shards a runtime holds are exactly the plan's.

    Args:
        plan: The plan.
        placements: Table name -> shards (from :func:`sharded_placements`).
        source: Plan file name, for messages.

    Raises:
        PlanError: ``PLAN_MISMATCH`` listing each table that is missing, extra, or placed
            differently.
    """
    problems = []
    names = {t.name for t in plan.tables}
    for t in plan.tables:
        if t.name not in placements:
            problems.append(f"table {t.name!r} is not in the sharded module")
            continue
        got = tuple(sorted(placements[t.name], key=_shard_key))
        want = tuple(sorted(t.shards, key=_shard_key))
        if got != want:
            problems.append(f"table {t.name!r}: plan {_fmt(want)}, module {_fmt(got)}")
    for extra in sorted(set(placements) - names):
        problems.append(f"table {extra!r} is in the sharded module but not in the plan")
    if problems:
        raise PlanError(
            "the sharded module does not hold the plan's shards: " + "; ".join(problems),
            kind=PlanErrorKind.PLAN_MISMATCH,
            source=source,
            hint="shard the module with torchrec_sharding_plan(plan)",
        )
