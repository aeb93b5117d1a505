"""Human-readable views of a plan: report.md, report.png, ``--explain FEATURE``, and the plan dir.

``report.md`` has the load per device (memory, cost, imbalance), the tables per device, the
allocation per feature, the merges and the pruning summary. ``report.png`` draws memory and
estimated cost per device (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from adrank.formats import atomic_dir, atomic_write_text
from adrank.planfile import PLAN_FILE_NAME, write_plan
from adrank.types import PruningAction, ShardPlan
from sharding_planner.types import MergeKind, PlanReport, PlanResult

__all__ = ["explain_feature", "imbalance", "render_markdown", "render_png", "write_plan_dir"]

REPORT_MD = "report.md"
REPORT_PNG = "report.png"


def _b(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def imbalance(values: list[float]) -> float:
    """max / mean of per-device values (1.0 = perfectly even; 1.0 when all are 0)."""
    mean = sum(values) / len(values) if values else 0.0
    return max(values) / mean if mean > 0 else 1.0


def render_markdown(result: PlanResult) -> str:
    """The report as Markdown."""
    plan, rep = result.plan, result.report
    lines = [
        "# Shard plan",
        "",
        f"- inputs: `{rep.inputs.source}` ({len(rep.inputs.features)} features)",
        f"- mode: {plan.mode.value}, optimizer state: {plan.optimizer.value}, batch size "
        f"{plan.batch_size} per device, row alignment {plan.row_alignment_bytes} B",
        f"- devices: {len(plan.devices)} on {len(rep.topology.hosts)} host(s)",
        f"- fingerprint: `{plan.inputs_fingerprint}`",
        f"- planning time: {rep.stage_s.get('total', 0.0):.3f} s ("
        + ", ".join(f"{k} {v:.3f} s" for k, v in rep.stage_s.items() if k != "total")
        + ")",
        "",
    ]
    lines += _devices_section(plan)
    lines += _allocation_section(rep)
    lines += _merge_section(rep)
    lines += _pruning_section(plan, rep)
    lines += _tables_section(plan, rep)
    return "\n".join(lines) + "\n"


def _devices_section(plan: ShardPlan) -> list[str]:
    used = [float(d.used_bytes) for d in plan.devices]
    cost = [d.est_cost_ms for d in plan.devices]
    lines = [
        "## Devices",
        "",
        f"Memory imbalance (max/mean): **{imbalance(used):.3f}**; estimated cost imbalance "
        f"(max/mean): **{imbalance(cost):.3f}**.",
        "",
        "| rank | host | used | capacity | used % | est. cost (ms/step) | tables |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    on_rank: dict[int, list[str]] = {d.rank: [] for d in plan.devices}
    for t in plan.tables:
        for s in t.shards:
            label = (
                t.name
                if t.sharding_type.value == "table_wise"
                else (
                    f"{t.name}[rows {s.row_offset}:{s.row_offset + s.num_rows}, "
                    f"cols {s.col_offset}:{s.col_offset + s.num_cols}]"
                )
            )
            on_rank[s.rank].append(label)
    for d in plan.devices:
        names = on_rank[d.rank]
        shown = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
        lines.append(
            f"| {d.rank} | {d.host} | {_b(d.used_bytes)} | {_b(d.memory_bytes)} | "
            f"{100 * d.used_bytes / d.memory_bytes:.1f}% | {d.est_cost_ms:.4g} | "
            f"{shown or '-'} |"
        )
    return lines + [""]


def _allocation_section(rep: PlanReport) -> list[str]:
    a = rep.allocation
    specs = {f.name: f for f in rep.inputs.features}
    lines = [
        "## Hash-size allocation",
        "",
        f"Budget {_b(a.budget_bytes)}, used {_b(a.used_bytes)} "
        f"({100 * a.used_bytes / max(1, a.budget_bytes):.1f}%); expected traffic-weighted "
        f"collision rate **{100 * a.expected_collision_rate:.2f}%**.",
        "",
        "| feature | distinct | live | hashed | dedicated | stored (exp.) | exp. collision | "
        "traffic share | bytes | capped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in a.decisions:
        s = specs[d.feature]
        lines.append(
            f"| {d.feature} | {s.num_ids:,} | {s.live_ids:,} | {d.hash_size:,} "
            f"| {len(d.dedicated_keys):,} | {d.expected_stored_rows:,.0f} | "
            f"{100 * d.expected_collision_rate:.2f}% | {100 * d.traffic_share:.2f}% | "
            f"{_b(d.memory_bytes)} | {'yes' if d.capped else 'no'} |"
        )
    return lines + [""]


def _merge_section(rep: PlanReport) -> list[str]:
    merged = [t for t in rep.merges if t.kind is not MergeKind.SINGLE]
    lines = ["## Unified tables", ""]
    if not merged:
        return lines + ["No features were merged.", ""]
    for t in merged:
        lines.append(
            f"- **{t.name}** ({t.kind.value}, {t.hashed_rows:,} rows): "
            f"{', '.join(f.name for f in t.features)}. {t.reason}."
        )
    return lines + [""]


def _pruning_section(plan: ShardPlan, rep: PlanReport) -> list[str]:
    lines = ["## Dead-row pruning", ""]
    pruned = [p for p in rep.pruned if p.pruning.action is PruningAction.DROP_DEAD]
    if not pruned:
        reasons = sorted({p.reason for p in rep.pruned})
        return lines + ["No table is pruned: " + "; ".join(reasons[:3]) + ".", ""]
    total = sum(p.table.hashed_rows for p in rep.pruned)
    removed = sum(p.pruning.expected_pruned_rows for p in pruned)
    lines += [
        f"{removed:,} of {total:,} hashed rows ({100 * removed / max(1, total):.1f}%) are planned "
        "to be pruned. The pruning package builds the remaps from access counts; pruned ids read "
        "the fallback row.",
        "",
        "| table | hashed rows | rows kept | pruned | fallback row | pruned traffic (est.) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in pruned:
        lines.append(
            f"| {p.table.name} | {p.table.hashed_rows:,} | {p.num_rows:,} | "
            f"{p.pruning.expected_pruned_rows:,} | {p.fallback_row} | "
            f"{100 * p.pruning.expected_pruned_traffic_share:.2f}% |"
        )
    return lines + [""]


def _tables_section(plan: ShardPlan, rep: PlanReport) -> list[str]:
    prec = {p.table: p for p in rep.precisions}
    lines = [
        "## Tables",
        "",
        "| table | features | rows | dim | precision | sharding | shards (rank: rows x cols) "
        "| why |",
        "|---|---|---:|---:|---|---|---|---|",
    ]
    for t in plan.tables:
        shards = "; ".join(f"{s.rank}: {s.num_rows:,}x{s.num_cols}" for s in t.shards[:8])
        if len(t.shards) > 8:
            shards += f"; (+{len(t.shards) - 8})"
        feats = ", ".join(f.name for f in t.features[:6]) + (
            f" (+{len(t.features) - 6})" if len(t.features) > 6 else ""
        )
        lines.append(
            f"| {t.name} | {feats} | {t.num_rows:,} | {t.dim} | {t.precision.value} | "
            f"{t.sharding_type.value} | {shards} | {rep.placement.reasons.get(t.name, '')}"
            f"; {prec[t.name].reason} |"
        )
    return lines + [""]


def render_png(result: PlanResult, path: str | os.PathLike[str]) -> None:
    """Draw memory (used vs capacity) and estimated cost per device into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = result.plan
    ranks = np.arange(len(plan.devices))
    used = np.array([d.used_bytes for d in plan.devices], dtype=float) / (1 << 20)
    cap = np.array([d.memory_bytes for d in plan.devices], dtype=float) / (1 << 20)
    cost = np.array([d.est_cost_ms for d in plan.devices], dtype=float)
    width = max(6.0, min(24.0, 0.25 * len(ranks) + 4))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(width, 6.5), sharex=True)
    ax1.bar(ranks, cap, color="#dddddd", label="capacity")
    ax1.bar(ranks, used, color="#3b75af", label="used")
    ax1.set_ylabel("MiB")
    ax1.set_title(f"Memory per device (imbalance max/mean {imbalance(list(used)):.3f})")
    ax1.legend(loc="upper right")
    ax2.bar(ranks, cost, color="#d1603d")
    ax2.set_ylabel("ms / step (est.)")
    ax2.set_xlabel("rank")
    ax2.set_title(f"Estimated lookup cost per device (imbalance {imbalance(list(cost)):.3f})")
    if len(ranks) <= 32:
        ax2.set_xticks(ranks)
    fig.tight_layout()
    with open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def explain_feature(result: PlanResult, feature: str) -> str:
    """Why ``feature`` got its rows, table, precision and shards.

    Raises:
        KeyError: No such feature in the plan.
    """
    plan, rep = result.plan, result.report
    table, slot = plan.table_of_feature(feature)
    spec = next(f for f in rep.inputs.features if f.name == feature)
    d = rep.allocation.decision(feature)
    merged = next(t for t in rep.merges if t.name == table.name)
    pruned = next(p for p in rep.pruned if p.table.name == table.name)
    prec = next(p for p in rep.precisions if p.table == table.name)
    lines = [
        f"feature {feature!r}",
        f"  stats: {spec.num_ids:,} distinct ids, {spec.live_ids:,} live"
        + (" (seen in the recent window)" if spec.from_stats else " (tables file: all live)")
        + f", {spec.pooling_factor:.3g} lookups per example ({100 * d.traffic_share:.2f}% of all "
        f"lookups), {len(spec.heavy_hitters)} live heavy hitters known, importance "
        f"{spec.importance:g}",
        f"  rows: {d.num_rows:,} = {d.hash_size:,} hashed + {len(d.dedicated_keys):,} dedicated "
        f"heavy-hitter rows; about {d.expected_stored_rows:,.0f} stored "
        + ("(only rows its live ids hit are kept after pruning; " if d.pruned else "(")
        + f"{d.row_bytes} B per row, {_b(d.memory_bytes)} charged); expected collision rate "
        f"{100 * d.expected_collision_rate:.2f}% of its lookups. "
        + (
            (
                "It is at its cap ("
                + ("the hashed range limit" if d.pruned else "rows never exceed its live ids")
                + ")."
            )
            if d.capped
            else "The budget was spent where it removed more collisions per byte."
        ),
        f"  table: {table.name!r} ({merged.kind.value}): {merged.reason}; hashed ids "
        f"[{slot.row_offset:,}, {slot.row_offset + slot.hash_size:,}) with seed {slot.seed}"
        + (
            f", dedicated rows from {slot.dedicated_row_offset:,}"
            if slot.num_dedicated_rows
            else ""
        ),
        f"  pruning: {pruned.reason}",
        f"  precision: {prec.reason}",
        f"  shards: {table.sharding_type.value} ({rep.placement.reasons.get(table.name, '')}): "
        + "; ".join(
            f"rank {s.rank} rows [{s.row_offset:,}, {s.row_offset + s.num_rows:,}) cols "
            f"[{s.col_offset}, {s.col_offset + s.num_cols})"
            for s in table.shards
        ),
    ]
    return "\n".join(lines)


def write_plan_dir(
    result: PlanResult, out_dir: str | os.PathLike[str], *, png: bool = True
) -> Path:
    """Write plan.json, the dedicated-key sidecars, report.md and report.png into ``out_dir``.

    Everything is written into a temporary directory beside ``out_dir`` and renamed into place,
    so a failed run leaves no partial plan (an existing ``out_dir`` is replaced as a whole).

    Args:
        result: The planner's output.
        out_dir: Destination directory.
        png: Also draw report.png.

    Returns:
        The path of plan.json.
    """
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        write_plan(result.plan, tmp / PLAN_FILE_NAME)
        for rel, arr in result.sidecars.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            np.save(p, np.asarray(arr, dtype=np.int64), allow_pickle=False)
        atomic_write_text(tmp / REPORT_MD, render_markdown(result))
        if png:
            render_png(result, tmp / REPORT_PNG)
    return out / PLAN_FILE_NAME
