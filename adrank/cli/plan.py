"""``adrank plan``: feature stats (or table sizes) and a hardware description -> a shard plan.

    adrank plan (--stats stats.json | --tables tables.json)
                (--devices N --device-memory 16GiB [--devices-per-host K] | --topology topo.yaml)
                [--mode inference|training] [--memory-budget SIZE] [--dim 64]
                [--dim-override FEATURE=DIM ...] [--importance weights.json]
                [--precision-errors errors.json] [--default-precision fp16]
                [--sharding NAME=row_wise ...] -o DIR
    adrank plan ... --explain FEATURE [--explain FEATURE ...]   (with or without -o)

Writes DIR/plan.json (+ DIR/dedicated/*.npy), DIR/report.md and DIR/report.png atomically.
"""

from __future__ import annotations

import argparse
from typing import Any

from adrank.cli._args import positive_int

__all__ = ["print_plan_summary", "register", "run"]

_PRECISIONS = ("fp32", "fp16", "int8", "int4")
_SHARDING = ("table_wise", "row_wise", "column_wise", "table_row_wise")

_TOPOLOGY_HELP = """\
topology file (YAML or JSON):
  inter_host_bandwidth: 12.5GB/s
  hosts:
    - {name: host0, devices: 4, device_memory: 16GiB, memory_bandwidth: 900GB/s}
    - name: host1
      devices: [{memory: 16GiB}, {memory: 8GiB}]
or a flat list:  devices: [{host: a, memory: 16GiB}, {host: a, memory: 12GiB}]

tables file (JSON): [{"name": "C1", "num_embeddings": 1460, "dim": 64, "pooling_factor": 1}, ...]
precision errors (JSON): {"table_or_feature": {"fp16": 0.0004, "int8": 0.006, "int4": 0.09}}
importance (JSON): {"feature": 2.0, ...}
"""


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, found {text!r}")
    return name.strip(), value.strip()


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {text!r}")
    return value


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``plan`` subcommand to ``subparsers`` and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "plan",
        help="make a shard plan (hash sizes, unified tables, precision, placement) from stats",
        description=(
            "Choose rows per feature under a memory budget (minimising traffic-weighted hash "
            "collisions; heavy hitters get dedicated rows), merge small features into unified "
            "tables, plan dead-row pruning, pick a precision per table and shard the tables "
            "over the devices balancing memory and estimated lookup cost."
        ),
        epilog=_TOPOLOGY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--stats", metavar="FILE", help="stats file from `adrank stats`")
    src.add_argument(
        "--tables", metavar="FILE", help="JSON list of {name, num_embeddings, dim, pooling_factor}"
    )
    hw = p.add_argument_group("hardware (either --devices and --device-memory, or --topology)")
    hw.add_argument("--devices", type=positive_int, metavar="N", help="identical devices")
    hw.add_argument(
        "--device-memory", metavar="SIZE", help="memory per device for embeddings, e.g. 16GiB"
    )
    hw.add_argument(
        "--devices-per-host",
        type=positive_int,
        metavar="K",
        help="with --devices: K devices per host (default: all on one host)",
    )
    hw.add_argument("--topology", metavar="FILE", help="YAML/JSON topology (see below)")
    p.add_argument(
        "--mode",
        choices=("inference", "training"),
        default="inference",
        help="training adds optimizer state (default inference)",
    )
    p.add_argument(
        "--optimizer",
        choices=("rowwise_adagrad", "adagrad"),
        default=None,
        help="optimizer state counted in training (default rowwise_adagrad: "
        "+4 bytes per row; adagrad: +4 bytes per value)",
    )
    p.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="bytes all tables may take (default 90%% of the devices' memory)",
    )
    p.add_argument(
        "--dim",
        type=positive_int,
        default=None,
        metavar="D",
        help="embedding dim of features without one (default 64)",
    )
    p.add_argument(
        "--dim-override",
        type=_key_value,
        action="append",
        default=[],
        metavar="FEATURE=DIM",
        help="per-feature dim (repeatable)",
    )
    p.add_argument("--importance", metavar="FILE", help="JSON {feature: weight} for collisions")
    p.add_argument(
        "--sequence-features",
        default="",
        metavar="F1,F2",
        help="features looked up unpooled, one embedding per id (behaviour sequences)",
    )
    p.add_argument(
        "--precision-errors",
        metavar="FILE",
        help="measured relative errors per table/feature and precision",
    )
    p.add_argument(
        "--default-precision",
        choices=_PRECISIONS,
        default=None,
        help="precision without measured errors (default fp16; fp32 in training)",
    )
    p.add_argument(
        "--max-precision-error",
        type=_non_negative_float,
        default=0.01,
        metavar="E",
        help="largest measured relative error a precision may have (default 0.01)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="B",
        help="examples per device per step for the cost model (default 512)",
    )
    p.add_argument(
        "--sharding",
        type=_key_value,
        action="append",
        default=[],
        metavar="NAME=TYPE",
        help=f"force a table's (or feature's table's) sharding: "
        f"{', '.join(_SHARDING)} (repeatable)",
    )
    p.add_argument(
        "--max-rows-per-live-id",
        type=_non_negative_float,
        default=None,
        metavar="X",
        help="cap rows per feature at X x its live ids (default 1)",
    )
    p.add_argument(
        "--merge-max-collision-increase",
        type=_non_negative_float,
        default=None,
        metavar="X",
        help="collision rise (absolute share) accepted to share a salted "
        "range in a unified table (default 0.01; 0: concatenate only)",
    )
    p.add_argument("--no-merge", action="store_true", help="one table per feature")
    p.add_argument("--no-prune", action="store_true", help="plan no dead-row pruning")
    p.add_argument(
        "-o", "--output", metavar="DIR", help="plan directory to write (replaced as a whole)"
    )
    p.add_argument(
        "--explain",
        action="append",
        default=[],
        metavar="FEATURE",
        help="print why FEATURE got its rows, table, precision and shards (repeatable)",
    )
    p.add_argument("--no-png", action="store_true", help="skip report.png")
    return p


def run(args: argparse.Namespace) -> int:
    """Validate every flag, plan, write the plan directory and print a summary."""
    from adrank.constants import DEFAULT_EMBEDDING_DIM, DEFAULT_PLAN_BATCH_SIZE
    from adrank.errors import InputError
    from adrank.planfile import read_precision_errors
    from adrank.types import OptimizerStateKind, PlanMode, Precision, ShardingType
    from adrank.units import parse_size_bytes
    from sharding_planner import (
        AllocationConfig,
        MergeConfig,
        PlacementConfig,
        PlannerConfig,
        PruningConfig,
        explain_feature,
        load_plan_inputs,
        plan_shards,
        read_topology,
        uniform_topology,
        write_plan_dir,
    )

    problems: list[InputError] = []
    if args.output is None and not args.explain:
        problems.append(
            InputError("nothing to do: give -o DIR and/or --explain FEATURE", source="-o/--explain")
        )
    if args.topology is not None:
        given = [
            f
            for f, v in (
                ("--devices", args.devices),
                ("--device-memory", args.device_memory),
                ("--devices-per-host", args.devices_per_host),
            )
            if v is not None
        ]
        if given:
            problems.append(
                InputError(
                    f"{', '.join(given)} cannot be combined with --topology",
                    source=", ".join(given),
                )
            )
    elif args.devices is None or args.device_memory is None:
        problems.append(
            InputError(
                "give --devices N and --device-memory SIZE, or --topology FILE",
                source="--devices/--device-memory/--topology",
            )
        )
    device_memory = budget = None
    for attr, flag in (("device_memory", "--device-memory"), ("memory_budget", "--memory-budget")):
        value = getattr(args, attr)
        if value is not None:
            try:
                parsed = parse_size_bytes(value, source=flag)
            except InputError as exc:
                problems.append(exc)
                continue
            if attr == "device_memory":
                device_memory = parsed
            else:
                budget = parsed
    dims: dict[str, int] = {}
    for name, value in args.dim_override:
        try:
            dims[name] = int(value)
            if dims[name] < 1:
                raise ValueError
        except ValueError:
            problems.append(
                InputError(
                    f"expected FEATURE=DIM with DIM >= 1, found {name}={value}",
                    source="--dim-override",
                )
            )
    overrides: dict[str, ShardingType] = {}
    for name, value in args.sharding:
        try:
            overrides[name] = ShardingType(value)
        except ValueError:
            problems.append(
                InputError(
                    f"unknown sharding type {value!r} for {name!r}; expected "
                    f"one of {', '.join(_SHARDING)}",
                    source="--sharding",
                )
            )
    errors = None
    if args.precision_errors is not None:
        try:
            errors = read_precision_errors(args.precision_errors)
        except InputError as exc:
            problems.append(exc)
    inputs = topology = None
    try:
        inputs = load_plan_inputs(
            stats_path=args.stats,
            tables_path=args.tables,
            default_dim=args.dim or DEFAULT_EMBEDDING_DIM,
            dim_overrides=dims or None,
            importance_path=args.importance,
            sequence_features=[f for f in args.sequence_features.split(",") if f],
        )
    except InputError as exc:
        problems.append(exc)
    try:
        if args.topology is not None:
            topology = read_topology(args.topology)
        elif args.devices is not None and device_memory is not None:
            topology = uniform_topology(
                args.devices, device_memory, devices_per_host=args.devices_per_host
            )
    except InputError as exc:
        problems.append(exc)
    if inputs is not None:
        known = {f.name for f in inputs.features}
        unknown = [f for f in args.explain if f not in known]
        if unknown:
            problems.append(
                InputError(
                    f"--explain names unknown features {unknown}",
                    source="--explain",
                    hint=f"known: {', '.join(sorted(known))}",
                )
            )
    if problems:
        raise InputError.from_problems(problems)
    assert inputs is not None and topology is not None

    defaults = PlannerConfig()
    config = PlannerConfig(
        mode=PlanMode(args.mode),
        memory_budget_bytes=budget,
        default_precision=None
        if args.default_precision is None
        else Precision(args.default_precision),
        max_precision_error=args.max_precision_error,
        optimizer=None if args.optimizer is None else OptimizerStateKind(args.optimizer),
        batch_size=args.batch_size or DEFAULT_PLAN_BATCH_SIZE,
        allocation=AllocationConfig(
            max_rows_per_live_id=(
                defaults.allocation.max_rows_per_live_id
                if args.max_rows_per_live_id is None
                else args.max_rows_per_live_id
            )
        ),
        merging=MergeConfig(
            enabled=not args.no_merge,
            max_collision_increase=(
                defaults.merging.max_collision_increase
                if args.merge_max_collision_increase is None
                else args.merge_max_collision_increase
            ),
        ),
        pruning=PruningConfig(enabled=not args.no_prune),
        placement=PlacementConfig(sharding_overrides=overrides),
    )
    result = plan_shards(inputs, topology, config, precision_errors=errors)
    if args.output is not None:
        plan_path = write_plan_dir(result, args.output, png=not args.no_png)
    print_plan_summary(result)
    for feature in args.explain:
        print()
        print(explain_feature(result, feature))
    if args.output is not None:
        print(f"wrote {plan_path} and the report to {args.output}")
    return 0


def print_plan_summary(result: Any) -> None:
    """Print a PlanResult's devices (memory, cost) and the headline numbers."""
    from sharding_planner.report import imbalance

    plan = result.plan
    print(f"{'rank':>4}  {'host':<10} {'used':>12} {'capacity':>12} {'used%':>6} {'cost ms':>9}")
    for d in plan.devices:
        print(
            f"{d.rank:>4}  {d.host:<10} {d.used_bytes:>12,} {d.memory_bytes:>12,} "
            f"{100 * d.used_bytes / d.memory_bytes:>5.1f}% {d.est_cost_ms:>9.4g}"
        )
    used = [float(d.used_bytes) for d in plan.devices]
    cost = [d.est_cost_ms for d in plan.devices]
    print(
        f"{len(result.report.inputs.features)} features -> {len(plan.tables)} tables; memory "
        f"imbalance {imbalance(used):.3f}, cost imbalance {imbalance(cost):.3f}; expected "
        f"collision rate {100 * result.report.allocation.expected_collision_rate:.2f}%"
    )
