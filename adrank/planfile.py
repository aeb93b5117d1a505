"""The plan file (``plan.json``) and the measured-precision-errors file: layout, I/O, validation.

The planner writes a plan directory::

    DIR/plan.json                         this layout (kind "adrank.plan")
    DIR/dedicated/<feature>.npy           sorted int64 id keys with dedicated rows (one per feature
                                          that has any; named by FeatureSlot.dedicated_keys_file)
    DIR/report.md, DIR/report.png         for people

``plan.json`` (``format_version`` 1)::

    {
     "kind": "adrank.plan", "format_version": 1,
     "inputs_fingerprint": "sha256:...",        # stats (or tables file) + topology + config
     "mode": "inference",                       # or "training"
     "optimizer": "none",                       # rowwise_adagrad / adagrad in training
     "batch_size": 512, "row_alignment_bytes": 16,
     "tables": [{
       "name": "t_ad_id", "rows": 701, "hashed_rows": 1000, "dim": 64,
       "precision": "fp16", "pooling": "SUM", "sharding_type": "row_wise",
       "fallback_row": 700, "remap_file": null,
       "pruning": {"action": "drop_dead", "unseen_window_s": 86400, "min_count": 0,
                   "expected_pruned_rows": 300, "expected_pruned_traffic_share": 0.01},
       "features": [{"name": "ad_id", "seed": 2166136261, "hash_size": 998, "row_offset": 0,
                     "num_dedicated_rows": 2, "dedicated_row_offset": 998,
                     "dedicated_keys_file": "dedicated/ad_id.npy", "pooling": "SUM",
                     "pooling_factor": 1.0, "traffic_share": 0.4,
                     "expected_collision_rate": 0.05, "expected_pruned_rows": 300}],
       "shards": [{"rank": 0, "row_offset": 0, "rows": 351, "col_offset": 0, "cols": 64},
                  {"rank": 1, "row_offset": 351, "rows": 350, "col_offset": 0, "cols": 64}]
     }],
     "devices": [{"rank": 0, "host": "host0", "memory_bytes": 17179869184, "used_bytes": 44928,
                  "est_cost_ms": 0.01}]
    }

The measured-precision-errors file (embed_store's calibration writes it; the planner reads it) maps
a table or feature name to the relative error measured at each precision::

    {"kind": "adrank.precision_errors", "format_version": 1,
     "errors": {"ad_id": {"fp16": 0.0004, "int8": 0.006, "int4": 0.09}}}

A bare ``{"ad_id": {"fp16": 0.0004, ...}}`` object (no ``kind``) is accepted too, for hand-written
files. Relative error is ``||pooled_q - pooled_fp32|| / ||pooled_fp32||`` over sampled bags.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adrank.constants import FORMAT_VERSION_PLAN, FORMAT_VERSION_PRECISION_ERRORS
from adrank.errors import InputError, NotFoundError, PlanError, PlanErrorKind
from adrank.formats import read_json_document, write_json_document
from adrank.types import (
    DevicePlan,
    FeatureSlot,
    OptimizerStateKind,
    PlanMode,
    PoolingType,
    Precision,
    PruningAction,
    PruningPolicy,
    ShardingType,
    ShardPlan,
    ShardSpec,
    TablePlan,
)

__all__ = [
    "PLAN_FILE_NAME",
    "PLAN_KIND",
    "PRECISION_ERRORS_KIND",
    "check_fingerprint",
    "plan_from_json",
    "plan_to_json",
    "read_plan",
    "read_precision_errors",
    "validate_plan",
    "write_plan",
    "write_precision_errors",
]

PLAN_KIND = "adrank.plan"
"""The ``kind`` of plan documents."""
PRECISION_ERRORS_KIND = "adrank.precision_errors"
"""The ``kind`` of measured-precision-errors documents."""
PLAN_FILE_NAME = "plan.json"
"""Name of the plan document inside a plan directory."""

_UINT32 = 1 << 32


# --------------------------------------------------------------------------------------------------
# JSON <-> ShardPlan
# --------------------------------------------------------------------------------------------------


def plan_to_json(plan: ShardPlan) -> dict[str, Any]:
    """The JSON body of a plan document (without ``kind``/``format_version``)."""
    return {
        "inputs_fingerprint": plan.inputs_fingerprint,
        "mode": plan.mode.value,
        "optimizer": plan.optimizer.value,
        "batch_size": plan.batch_size,
        "row_alignment_bytes": plan.row_alignment_bytes,
        "tables": [_table_to_json(t) for t in plan.tables],
        "devices": [
            {
                "rank": d.rank,
                "host": d.host,
                "memory_bytes": d.memory_bytes,
                "used_bytes": d.used_bytes,
                "est_cost_ms": d.est_cost_ms,
            }
            for d in plan.devices
        ],
    }


def _table_to_json(t: TablePlan) -> dict[str, Any]:
    p = t.pruning
    return {
        "name": t.name,
        "rows": t.num_rows,
        "hashed_rows": t.hashed_rows,
        "dim": t.dim,
        "precision": t.precision.value,
        "pooling": t.pooling.value,
        "sharding_type": t.sharding_type.value,
        "fallback_row": t.fallback_row,
        "remap_file": t.remap_file,
        "pruning": {
            "action": p.action.value,
            "unseen_window_s": p.unseen_window_s,
            "min_count": p.min_count,
            "expected_pruned_rows": p.expected_pruned_rows,
            "expected_pruned_traffic_share": p.expected_pruned_traffic_share,
        },
        "features": [
            {
                "name": f.name,
                "seed": f.seed,
                "hash_size": f.hash_size,
                "row_offset": f.row_offset,
                "num_dedicated_rows": f.num_dedicated_rows,
                "dedicated_row_offset": f.dedicated_row_offset,
                "dedicated_keys_file": f.dedicated_keys_file,
                "pooling": f.pooling.value,
                "pooling_factor": f.pooling_factor,
                "traffic_share": f.traffic_share,
                "expected_collision_rate": f.expected_collision_rate,
                "expected_pruned_rows": f.expected_pruned_rows,
            }
            for f in t.features
        ],
        "shards": [
            {
                "rank": s.rank,
                "row_offset": s.row_offset,
                "rows": s.num_rows,
                "col_offset": s.col_offset,
                "cols": s.num_cols,
            }
            for s in t.shards
        ],
    }


class _Reader:
    """Typed field access on parsed JSON that names the failing field path in its errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, expected: str, found: Any) -> InputError:
        return InputError(
            f"malformed plan: {where} must be {expected}, found {found!r}",
            source=f"{self.source}:{where}",
            hint="regenerate the plan with `adrank plan`",
        )

    def get(self, d: Any, key: str, where: str) -> Any:
        if not isinstance(d, dict):
            raise self.fail(where, "an object", d)
        if key not in d:
            raise InputError(
                f"malformed plan: missing field {where}.{key}",
                source=f"{self.source}:{where}.{key}",
                hint="regenerate the plan with `adrank plan`",
            )
        return d[key]

    def int_(self, d: Any, key: str, where: str, optional: bool = False) -> Any:
        v = self.get(d, key, where)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(f"{where}.{key}", "an integer" + (" or null" if optional else ""), v)
        return v

    def float_(self, d: Any, key: str, where: str) -> float:
        v = self.get(d, key, where)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.fail(f"{where}.{key}", "a number", v)
        return float(v)

    def str_(self, d: Any, key: str, where: str, optional: bool = False) -> Any:
        v = self.get(d, key, where)
        if v is None and optional:
            return None
        if not isinstance(v, str):
            raise self.fail(f"{where}.{key}", "a string" + (" or null" if optional else ""), v)
        return v

    def enum_(self, d: Any, key: str, where: str, cls: Any) -> Any:
        v = self.get(d, key, where)
        try:
            return cls(v)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in cls)
            raise self.fail(f"{where}.{key}", f"one of {choices}", v) from None

    def list_(self, d: Any, key: str, where: str) -> list[Any]:
        v = self.get(d, key, where)
        if not isinstance(v, list):
            raise self.fail(f"{where}.{key}", "a list", v)
        return v


def plan_from_json(doc: Mapping[str, Any], source: str = "plan") -> ShardPlan:
    """Parse a plan document (as read from JSON) into a :class:`ShardPlan` (no invariant checks).

    Args:
        doc: The document, with or without ``kind``/``format_version``.
        source: File name used in error messages.

    Returns:
        The plan.

    Raises:
        InputError: A field is missing or has the wrong type; the message names its path.
    """
    r = _Reader(source)
    d = dict(doc)
    tables = []
    for i, td in enumerate(r.list_(d, "tables", "")):
        w = f"tables[{i}]"
        pd = r.get(td, "pruning", w)
        pw = f"{w}.pruning"
        pruning = PruningPolicy(
            action=r.enum_(pd, "action", pw, PruningAction),
            unseen_window_s=r.int_(pd, "unseen_window_s", pw, optional=True),
            min_count=r.int_(pd, "min_count", pw),
            expected_pruned_rows=r.int_(pd, "expected_pruned_rows", pw),
            expected_pruned_traffic_share=r.float_(pd, "expected_pruned_traffic_share", pw),
        )
        features = []
        for j, fd in enumerate(r.list_(td, "features", w)):
            fw = f"{w}.features[{j}]"
            features.append(
                FeatureSlot(
                    name=r.str_(fd, "name", fw),
                    seed=r.int_(fd, "seed", fw),
                    hash_size=r.int_(fd, "hash_size", fw),
                    row_offset=r.int_(fd, "row_offset", fw),
                    num_dedicated_rows=r.int_(fd, "num_dedicated_rows", fw),
                    dedicated_row_offset=r.int_(fd, "dedicated_row_offset", fw),
                    dedicated_keys_file=r.str_(fd, "dedicated_keys_file", fw, optional=True),
                    pooling=r.enum_(fd, "pooling", fw, PoolingType),
                    pooling_factor=r.float_(fd, "pooling_factor", fw),
                    traffic_share=r.float_(fd, "traffic_share", fw),
                    expected_collision_rate=r.float_(fd, "expected_collision_rate", fw),
                    expected_pruned_rows=r.int_(fd, "expected_pruned_rows", fw),
                )
            )
        shards = []
        for j, sd in enumerate(r.list_(td, "shards", w)):
            sw = f"{w}.shards[{j}]"
            shards.append(
                ShardSpec(
                    rank=r.int_(sd, "rank", sw),
                    row_offset=r.int_(sd, "row_offset", sw),
                    num_rows=r.int_(sd, "rows", sw),
                    col_offset=r.int_(sd, "col_offset", sw),
                    num_cols=r.int_(sd, "cols", sw),
                )
            )
        tables.append(
            TablePlan(
                name=r.str_(td, "name", w),
                features=tuple(features),
                num_rows=r.int_(td, "rows", w),
                dim=r.int_(td, "dim", w),
                precision=r.enum_(td, "precision", w, Precision),
                pooling=r.enum_(td, "pooling", w, PoolingType),
                sharding_type=r.enum_(td, "sharding_type", w, ShardingType),
                shards=tuple(shards),
                hashed_rows=r.int_(td, "hashed_rows", w),
                fallback_row=r.int_(td, "fallback_row", w, optional=True),
                remap_file=r.str_(td, "remap_file", w, optional=True),
                pruning=pruning,
            )
        )
    devices = []
    for i, dd in enumerate(r.list_(d, "devices", "")):
        w = f"devices[{i}]"
        devices.append(
            DevicePlan(
                rank=r.int_(dd, "rank", w),
                host=r.str_(dd, "host", w),
                memory_bytes=r.int_(dd, "memory_bytes", w),
                used_bytes=r.int_(dd, "used_bytes", w),
                est_cost_ms=r.float_(dd, "est_cost_ms", w),
            )
        )
    return ShardPlan(
        mode=r.enum_(d, "mode", "", PlanMode),
        tables=tuple(tables),
        devices=tuple(devices),
        inputs_fingerprint=r.str_(d, "inputs_fingerprint", ""),
        batch_size=r.int_(d, "batch_size", ""),
        optimizer=r.enum_(d, "optimizer", "", OptimizerStateKind),
        row_alignment_bytes=r.int_(d, "row_alignment_bytes", ""),
        format_version=int(d.get("format_version", FORMAT_VERSION_PLAN)),
    )


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def validate_plan(
    plan: ShardPlan, *, source: str | None = None, require_remaps: bool = False
) -> None:
    """Check every invariant of a plan; report all violations in one error.

    Checked: device ranks are exactly 0..n-1; table names and feature names are unique (every
    feature in exactly one table); feature ranges lie inside ``[0, hashed_rows)`` with distinct
    seeds per table; ``num_rows <= hashed_rows`` and they differ only with a pruning policy; the
    fallback row exists; shards tile ``num_rows x dim`` exactly once, on existing ranks, in the
    shape their ``sharding_type`` promises; each device's ``used_bytes`` equals the bytes of its
    shards and stays within ``memory_bytes``; training uses fp32/fp16 tables only.

    Args:
        plan: The plan.
        source: File name for messages.
        require_remaps: Also require a ``remap_file`` on every table whose ``num_rows <
            hashed_rows`` (the runtime's check; a plan fresh from the planner has none yet).

    Raises:
        PlanError: ``kind=PLAN_MISMATCH`` for an inconsistent plan, ``CONSTRAINT_CONFLICT`` for a
            consistent plan that breaks a constraint (a device over its memory, int precision in
            training). The message lists each problem with the table or rank it concerns.
    """
    problems: list[tuple[PlanErrorKind, str]] = []

    def bad(msg: str, kind: PlanErrorKind = PlanErrorKind.PLAN_MISMATCH) -> None:
        problems.append((kind, msg))

    ranks = [d.rank for d in plan.devices]
    if ranks != list(range(len(ranks))):
        bad(f"devices must have ranks 0..{len(ranks) - 1} in order, found {ranks}")
    rank_set = set(ranks)
    if plan.row_alignment_bytes < 1 or plan.batch_size < 1:
        bad("row_alignment_bytes and batch_size must be >= 1")
    if plan.mode is PlanMode.INFERENCE and plan.optimizer is not OptimizerStateKind.NONE:
        bad(f"inference plans keep no optimizer state, found optimizer {plan.optimizer.value!r}")

    seen_tables: set[str] = set()
    feature_table: dict[str, str] = {}
    used = dict.fromkeys(rank_set, 0)
    for t in plan.tables:
        where = f"table {t.name!r}"
        if t.name in seen_tables:
            bad(f"{where} appears twice")
        seen_tables.add(t.name)
        if not t.features:
            bad(f"{where} has no features")
        for f in t.features:
            if f.name in feature_table:
                bad(f"feature {f.name!r} is in tables {feature_table[f.name]!r} and {t.name!r}")
            else:
                feature_table[f.name] = t.name
        _check_table(t, plan, where, bad)
        if plan.mode is PlanMode.TRAINING and t.precision.is_quantized:
            bad(
                f"{where} has precision {t.precision.value} in a training plan; training tables "
                "are fp32 or fp16",
                PlanErrorKind.CONSTRAINT_CONFLICT,
            )
        if require_remaps and t.num_rows < t.hashed_rows and t.remap_file is None:
            bad(
                f"{where} has {t.num_rows} rows for {t.hashed_rows} hashed rows but no remap_file; "
                "run `adrank prune` on the plan first"
            )
        for s in t.shards:
            if s.rank in used and s.num_rows > 0 and s.num_cols > 0:
                try:
                    used[s.rank] += plan.shard_bytes(t, s)
                except ValueError as exc:
                    bad(f"{where}: {exc}")

    for d in plan.devices:
        if d.rank not in used:
            continue
        if d.used_bytes != used[d.rank]:
            bad(
                f"rank {d.rank}: used_bytes is {d.used_bytes} but its shards take "
                f"{used[d.rank]} bytes"
            )
        if used[d.rank] > d.memory_bytes:
            bad(
                f"rank {d.rank}: shards take {used[d.rank]:,} bytes, over its "
                f"{d.memory_bytes:,} bytes",
                PlanErrorKind.CONSTRAINT_CONFLICT,
            )

    if problems:
        kinds = [k for k, _ in problems]
        kind = PlanErrorKind.PLAN_MISMATCH if PlanErrorKind.PLAN_MISMATCH in kinds else kinds[0]
        lines = [m for _, m in problems]
        text = (
            lines[0]
            if len(lines) == 1
            else f"{len(lines)} problems in the plan:\n"
            + "\n".join(f"{i}. {m}" for i, m in enumerate(lines, 1))
        )
        raise PlanError(
            text,
            kind=kind,
            source=source,
            hint="regenerate the plan with `adrank plan` for these tables and devices",
        )


def _check_table(t: TablePlan, plan: ShardPlan, where: str, bad: Any) -> None:
    if t.dim < 1 or t.num_rows < 1 or t.hashed_rows < 1:
        bad(
            f"{where}: dim, rows and hashed_rows must be >= 1, found {t.dim}, {t.num_rows}, "
            f"{t.hashed_rows}"
        )
        return
    if t.num_rows > t.hashed_rows:
        bad(f"{where}: rows ({t.num_rows}) exceed hashed_rows ({t.hashed_rows})")
    if t.num_rows < t.hashed_rows and t.pruning.action is PruningAction.KEEP_ALL:
        bad(
            f"{where}: rows ({t.num_rows}) < hashed_rows ({t.hashed_rows}) without a pruning policy"
        )
    if t.fallback_row is not None and not 0 <= t.fallback_row < t.num_rows:
        bad(f"{where}: fallback_row {t.fallback_row} is outside [0, {t.num_rows})")
    seeds: dict[int, str] = {}
    for f in t.features:
        fw = f"{where} feature {f.name!r}"
        if not 0 <= f.seed < _UINT32:
            bad(f"{fw}: seed {f.seed} is not a uint32")
        elif f.seed in seeds and _ranges_overlap(f, t, seeds[f.seed]):
            bad(f"{fw}: seed {f.seed} is also used by {seeds[f.seed]!r} over an overlapping range")
        seeds.setdefault(f.seed, f.name)
        if f.hash_size < 1 or f.row_offset < 0 or f.row_offset + f.hash_size > t.hashed_rows:
            bad(
                f"{fw}: hashed range [{f.row_offset}, {f.row_offset + f.hash_size}) is outside "
                f"[0, {t.hashed_rows})"
            )
        if f.num_dedicated_rows < 0 or (
            f.num_dedicated_rows
            and not 0 <= f.dedicated_row_offset <= t.hashed_rows - f.num_dedicated_rows
        ):
            bad(
                f"{fw}: dedicated rows [{f.dedicated_row_offset}, "
                f"{f.dedicated_row_offset + f.num_dedicated_rows}) are outside [0, {t.hashed_rows})"
            )
        if (f.num_dedicated_rows > 0) != (f.dedicated_keys_file is not None):
            bad(f"{fw}: dedicated_keys_file must be set exactly when num_dedicated_rows > 0")
        if f.pooling is not t.pooling:
            bad(f"{fw}: pooling {f.pooling.value} differs from the table's {t.pooling.value}")
    _check_shards(t, plan, where, bad)


def _ranges_overlap(f: FeatureSlot, t: TablePlan, other_name: str) -> bool:
    o = next(x for x in t.features if x.name == other_name)
    return f.row_offset < o.row_offset + o.hash_size and o.row_offset < f.row_offset + f.hash_size


def _check_shards(t: TablePlan, plan: ShardPlan, where: str, bad: Any) -> None:
    if not t.shards:
        bad(f"{where} has no shards")
        return
    ranks = {d.rank: d.host for d in plan.devices}
    area = 0
    ok = True
    for s in t.shards:
        if s.rank not in ranks:
            bad(f"{where}: a shard is on rank {s.rank}, which the plan has no device for")
            ok = False
        if (
            s.num_rows < 1
            or s.num_cols < 1
            or s.row_offset < 0
            or s.col_offset < 0
            or s.row_offset + s.num_rows > t.num_rows
            or s.col_offset + s.num_cols > t.dim
        ):
            bad(
                f"{where}: shard rows [{s.row_offset}, {s.row_offset + s.num_rows}) x cols "
                f"[{s.col_offset}, {s.col_offset + s.num_cols}) is empty or outside "
                f"{t.num_rows} x {t.dim}"
            )
            ok = False
        area += s.num_rows * s.num_cols
    if not ok:
        return
    # Shards inside the table that cover its area without overlapping tile it exactly once.
    if area != t.num_rows * t.dim or _any_overlap(t.shards):
        bad(f"{where}: shards do not cover its {t.num_rows} rows x {t.dim} cols exactly once")
        return
    st = t.sharding_type
    full_cols = all(s.col_offset == 0 and s.num_cols == t.dim for s in t.shards)
    full_rows = all(s.row_offset == 0 and s.num_rows == t.num_rows for s in t.shards)
    if st is ShardingType.TABLE_WISE and len(t.shards) != 1:
        bad(f"{where}: table_wise needs exactly one shard, found {len(t.shards)}")
    elif st in (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE) and not full_cols:
        bad(f"{where}: {st.value} shards must span all {t.dim} columns")
    elif st is ShardingType.COLUMN_WISE and not full_rows:
        bad(f"{where}: column_wise shards must span all {t.num_rows} rows")
    if st is ShardingType.TABLE_ROW_WISE and len({ranks[s.rank] for s in t.shards}) > 1:
        bad(f"{where}: table_row_wise shards must be on one host")


def _any_overlap(shards: tuple[ShardSpec, ...]) -> bool:
    # Sweep by row start; shards per table are few (<= world size), so the inner loop is short.
    ordered = sorted(shards, key=lambda s: (s.row_offset, s.col_offset))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.row_offset >= a.row_offset + a.num_rows:
                break
            if (
                a.col_offset < b.col_offset + b.num_cols
                and b.col_offset < a.col_offset + a.num_cols
            ):
                return True
    return False


def check_fingerprint(plan: ShardPlan, expected: str, *, source: str | None = None) -> None:
    """Refuse a plan made from other inputs (TorchRec's ``PLANNER_INPUT_CONTEXT_MISMATCH``).

    Args:
        plan: The plan.
        expected: The fingerprint of the inputs the caller has.
        source: File name for messages.

    Raises:
        PlanError: ``kind=PLAN_MISMATCH`` when the fingerprints differ.
    """
    if plan.inputs_fingerprint != expected:
        raise PlanError(
            "plan was made from other inputs: its inputs_fingerprint is "
            f"{plan.inputs_fingerprint}, expected {expected}",
            kind=PlanErrorKind.PLAN_MISMATCH,
            source=source,
            hint="re-run `adrank plan` on the current stats, topology and config",
        )


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def write_plan(plan: ShardPlan, path: str | os.PathLike[str]) -> None:
    """Write ``plan`` as a plan document, atomically (sidecar ``.npy`` files are the caller's).

    Args:
        plan: A plan that passes :func:`validate_plan`.
        path: Destination, normally ``DIR/plan.json``.

    Raises:
        PlanError: The plan is invalid (nothing is written).
    """
    validate_plan(plan, source=str(path))
    write_json_document(path, PLAN_KIND, FORMAT_VERSION_PLAN, plan_to_json(plan))


def read_plan(
    path: str | os.PathLike[str],
    *,
    expected_fingerprint: str | None = None,
    require_remaps: bool = False,
) -> ShardPlan:
    """Read and validate a plan document.

    Relative sidecar names in the plan (``dedicated_keys_file``, ``remap_file``) are relative to
    the directory holding ``path``.

    Args:
        path: ``plan.json`` or the plan directory holding it.
        expected_fingerprint: When given, refuse a plan with another ``inputs_fingerprint``.
        require_remaps: See :func:`validate_plan`.

    Returns:
        The plan.

    Raises:
        NotFoundError: No such file.
        InputError: Not a plan document, unsupported version, or a malformed field (named).
        PlanError: The plan breaks an invariant or its fingerprint does not match.
    """
    p = Path(path)
    if p.is_dir():
        p = p / PLAN_FILE_NAME
    doc = read_json_document(p, PLAN_KIND, (FORMAT_VERSION_PLAN,))
    plan = plan_from_json(doc, str(p))
    validate_plan(plan, source=str(p), require_remaps=require_remaps)
    if expected_fingerprint is not None:
        check_fingerprint(plan, expected_fingerprint, source=str(p))
    return plan


def write_precision_errors(
    errors: Mapping[str, Mapping[Precision, float]], path: str | os.PathLike[str]
) -> None:
    """Write measured relative errors per table or feature and precision (atomically).

    Args:
        errors: Name -> precision -> relative error (>= 0).
        path: Destination.
    """
    body = {
        "errors": {
            name: {
                p.value: float(e)
                for p, e in sorted(per.items(), key=lambda kv: kv[0].bits, reverse=True)
            }
            for name, per in sorted(errors.items())
        }
    }
    write_json_document(path, PRECISION_ERRORS_KIND, FORMAT_VERSION_PRECISION_ERRORS, body)


def read_precision_errors(path: str | os.PathLike[str]) -> dict[str, dict[Precision, float]]:
    """Read a measured-precision-errors file (a versioned document or a bare mapping).

    Args:
        path: The file.

    Returns:
        Name -> precision -> relative error.

    Raises:
        NotFoundError: No such file.
        InputError: Not JSON, wrong kind/version, an unknown precision or a negative/non-number
            error; all problems are reported together, each naming its ``name.precision`` field.
    """
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFoundError("file does not exist", source=str(p)) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read a precision-errors JSON file: {exc}", source=str(p)) from exc
    if isinstance(raw, dict) and "kind" in raw:
        doc = read_json_document(p, PRECISION_ERRORS_KIND, (FORMAT_VERSION_PRECISION_ERRORS,))
        raw = doc.get("errors")
    if not isinstance(raw, dict):
        raise InputError(
            "expected an object {table_or_feature: {precision: relative_error}}",
            source=str(p),
            hint='e.g. {"ad_id": {"fp16": 0.0004, "int8": 0.006, "int4": 0.09}}',
        )
    problems: list[InputError] = []
    out: dict[str, dict[Precision, float]] = {}
    valid = ", ".join(x.value for x in Precision)
    for name, per in raw.items():
        if not isinstance(per, dict):
            problems.append(
                InputError(
                    f"expected an object of precision -> error, found {per!r}", source=f"{p}:{name}"
                )
            )
            continue
        row: dict[Precision, float] = {}
        for key, err in per.items():
            try:
                prec = Precision(key)
            except ValueError:
                problems.append(
                    InputError(
                        f"unknown precision {key!r}; expected one of {valid}",
                        source=f"{p}:{name}.{key}",
                    )
                )
                continue
            if isinstance(err, bool) or not isinstance(err, int | float) or not err >= 0:
                problems.append(
                    InputError(
                        f"relative error must be a number >= 0, found {err!r}",
                        source=f"{p}:{name}.{key}",
                    )
                )
                continue
            row[prec] = float(err)
        out[str(name)] = row
    if problems:
        raise InputError.from_problems(problems)
    return out
