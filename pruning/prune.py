"""Prune a plan's tables: access counts + each table's policy -> remaps and a report; write them.

Order: :func:`~pruning.policy.select_live_rows` (which rows live) ->
:func:`~pruning.remapping.build_remap` (which row each keeps) -> :class:`TablePruningReport`.
Only tables whose policy is ``DROP_DEAD`` are pruned; the plan fixed their ``num_rows`` (the
shards are already sized), so the remap keeps at most ``num_rows`` rows, the fallback included.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from adrank.errors import InputError
from adrank.planfile import PLAN_FILE_NAME, validate_plan, write_plan
from adrank.remap import REMAPS_DIR, RowRemap, remap_digest, remap_file_name, write_remaps
from adrank.types import PruningAction, PruningPolicy, ShardPlan, TablePlan
from pruning.policy import select_live_rows
from pruning.remapping import build_remap
from pruning.types import (
    AccessCounts,
    PruneConfig,
    PruningReport,
    PruningResult,
    TablePruningReport,
)

__all__ = ["protected_rows", "prune_plan", "prune_table", "write_pruned_plan"]

logger = logging.getLogger(__name__)


def protected_rows(table: TablePlan) -> np.ndarray:
    """bool per hashed id of ``table``: True on its features' dedicated heavy-hitter rows."""
    mask = np.zeros(table.hashed_rows, dtype=bool)
    for f in table.features:
        if f.num_dedicated_rows:
            mask[f.dedicated_row_offset : f.dedicated_row_offset + f.num_dedicated_rows] = True
    return mask


def _effective_policy(policy: PruningPolicy, config: PruneConfig) -> PruningPolicy:
    return dataclasses.replace(
        policy,
        unseen_window_s=(
            config.unseen_window_s if config.unseen_window_s is not None else policy.unseen_window_s
        ),
        min_count=config.min_count if config.min_count is not None else policy.min_count,
    )


def prune_table(
    table: TablePlan,
    counts: AccessCounts,
    config: PruneConfig | None = None,
    *,
    inputs_fingerprint: str = "",
) -> tuple[RowRemap, TablePruningReport] | None:
    """Build one table's remap from its access counts and pruning policy.

    Args:
        table: The table (its ``pruning`` policy, ``num_rows``, ``fallback_row``, dedicated rows).
        counts: Lookups per hashed row of this table.
        config: Overrides and the reference time.
        inputs_fingerprint: The plan's fingerprint, recorded in the remap.

    Returns:
        ``(remap, report)``, or None when the table's policy is ``KEEP_ALL`` (``row ==
        hashed_id``; no remap).

    Raises:
        InputError: Counts of another table or size, or a policy the counts cannot serve.
        PlanError: The dedicated rows alone exceed the table's rows.
    """
    config = config or PruneConfig()
    if table.pruning.action is PruningAction.KEEP_ALL:
        return None
    if counts.table != table.name or counts.hashed_rows != table.hashed_rows:
        raise InputError(
            f"access counts are for table {counts.table!r} with {counts.hashed_rows} hashed rows; "
            f"table {table.name!r} has {table.hashed_rows}",
            source=table.name,
            hint="count accesses with the same plan",
        )
    policy = _effective_policy(table.pruning, config)
    capacity = table.num_rows - (1 if table.fallback_row is not None else 0)
    live = select_live_rows(
        counts,
        policy,
        capacity=capacity,
        protected=protected_rows(table),
        reference_time_s=config.reference_time_s,
    )
    remap = build_remap(
        live.keep,
        table=table.name,
        num_rows=table.num_rows,
        fallback_row=table.fallback_row,
        inputs_fingerprint=inputs_fingerprint,
    )
    lookups = counts.total_lookups
    pruned_lookups = int(counts.counts[~live.keep].sum())
    used = remap.num_kept + (1 if remap.fallback_row is not None else 0)
    report = TablePruningReport(
        table=table.name,
        hashed_rows=table.hashed_rows,
        num_rows=table.num_rows,
        kept_rows=remap.num_kept,
        pruned_rows=remap.num_pruned,
        spare_rows=table.num_rows - used,
        dead_unseen_rows=live.num_dead_unseen,
        dead_rare_rows=live.num_dead_rare,
        over_capacity_rows=live.num_over_capacity,
        protected_rows=live.num_protected,
        lookups=lookups,
        pruned_lookups=pruned_lookups,
        pruned_traffic_share=pruned_lookups / lookups if lookups else 0.0,
        expected_pruned_rows=table.pruning.expected_pruned_rows,
        expected_pruned_traffic_share=table.pruning.expected_pruned_traffic_share,
        fallback_row=table.fallback_row,
    )
    return remap, report


def prune_plan(
    plan: ShardPlan, counts: Mapping[str, AccessCounts], config: PruneConfig | None = None
) -> PruningResult:
    """Prune every ``DROP_DEAD`` table of ``plan``.

    Args:
        plan: The plan (not changed).
        counts: Table name -> access counts (from :func:`pruning.count_accesses`); needed for
            every table with a ``DROP_DEAD`` policy.
        config: Overrides and the reference time.

    Returns:
        Remaps and the report.

    Raises:
        InputError: Counts missing for pruned tables (all named), or of the wrong size.
        PlanError: A table's dedicated rows exceed its rows.
    """
    t0 = time.perf_counter()
    config = config or PruneConfig()
    pruned_tables = [t for t in plan.tables if t.pruning.action is PruningAction.DROP_DEAD]
    missing = [t.name for t in pruned_tables if t.name not in counts]
    if missing:
        raise InputError(
            f"no access counts for tables with a drop_dead policy: {', '.join(missing)}",
            source="counts",
            hint="count accesses over logs holding these tables' features",
        )
    remaps: dict[str, RowRemap] = {}
    reports: list[TablePruningReport] = []
    for t in pruned_tables:
        out = prune_table(t, counts[t.name], config, inputs_fingerprint=plan.inputs_fingerprint)
        assert out is not None  # DROP_DEAD tables always get a remap
        remaps[t.name], rep = out
        reports.append(rep)
    reports.sort(key=lambda r: r.table)
    report = PruningReport(
        tables=tuple(reports),
        skipped_tables=tuple(
            sorted(t.name for t in plan.tables if t.pruning.action is PruningAction.KEEP_ALL)
        ),
        rows_before=sum(r.hashed_rows for r in reports),
        rows_kept=sum(r.kept_rows for r in reports),
        lookups=sum(r.lookups for r in reports),
        pruned_lookups=sum(r.pruned_lookups for r in reports),
    )
    logger.info(
        "pruned %d tables: kept %d of %d hashed rows; %.2f%% of their lookups hit pruned rows "
        "(%.2f s)",
        len(reports),
        report.rows_kept,
        report.rows_before,
        100 * report.pruned_traffic_share,
        time.perf_counter() - t0,
    )
    return PruningResult(remaps=remaps, report=report)


def write_pruned_plan(
    plan_dir: str | os.PathLike[str], plan: ShardPlan, result: PruningResult
) -> ShardPlan:
    """Write the remaps beside the plan and rewrite ``plan.json`` with their ``remap_file``.

    The remap files and their manifest are written (each atomically) before ``plan.json``, so a
    failure leaves the previous plan in place and valid.

    Args:
        plan_dir: Directory holding (or to hold) ``plan.json``.
        plan: The plan the remaps were made for.
        result: Output of :func:`prune_plan` on that plan.

    Returns:
        The plan with ``remap_file`` set on the pruned tables.

    Raises:
        InputError: A remap is invalid or was made for another plan's tables.
        PlanError: The updated plan fails validation (nothing is rewritten then).
    """
    names = {t.name for t in plan.tables}
    strangers = sorted(set(result.remaps) - names)
    if strangers:
        raise InputError(
            f"remaps for tables the plan lacks: {', '.join(strangers)}",
            source=str(plan_dir),
            hint="prune with the same plan",
        )
    by_name = {t.name: t for t in plan.tables}
    problems = [
        InputError(
            f"remap has {r.hashed_rows} hashed ids -> {r.num_rows} rows (fallback {r.fallback_row})"
            f"; the table has {t.hashed_rows} -> {t.num_rows} (fallback {t.fallback_row})",
            source=name,
            hint="prune with the same plan",
        )
        for name, r in result.remaps.items()
        if (t := by_name[name]) is not None
        and (r.hashed_rows, r.num_rows, r.fallback_row)
        != (t.hashed_rows, t.num_rows, t.fallback_row)
    ]
    if problems:
        raise InputError.from_problems(problems)
    files = {
        name: f"{REMAPS_DIR}/{remap_file_name(name, remap_digest(r))}"
        for name, r in result.remaps.items()
    }
    tables = tuple(
        dataclasses.replace(t, remap_file=files[t.name]) if t.name in files else t
        for t in plan.tables
    )
    new_plan = dataclasses.replace(plan, tables=tables)
    plan_path = Path(plan_dir) / PLAN_FILE_NAME
    validate_plan(new_plan, source=str(plan_path), require_remaps=True)
    written = write_remaps(result.remaps, plan_dir, plan.inputs_fingerprint)
    assert written == files
    write_plan(new_plan, plan_path)
    logger.info("wrote %d remaps and the updated plan to %s", len(files), plan_dir)
    return new_plan
