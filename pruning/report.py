"""Render a pruning report (and optional later-window quality) as Markdown for people."""

from __future__ import annotations

from collections.abc import Sequence

from pruning.types import PruningQuality, PruningReport

__all__ = ["render_pruning_report"]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render_pruning_report(report: PruningReport, quality: Sequence[PruningQuality] = ()) -> str:
    """Markdown: totals, one row per pruned table, and the later-window quality when given.

    Args:
        report: From :func:`pruning.prune_plan`.
        quality: From :func:`pruning.evaluate_pruning`, one per table (any order).

    Returns:
        The Markdown text (ends with a newline).
    """
    lines = [
        "## Pruning",
        "",
        f"Pruned {len(report.tables)} tables: kept {report.rows_kept:,} of "
        f"{report.rows_before:,} hashed rows "
        f"({_pct(report.rows_kept / report.rows_before) if report.rows_before else 'n/a'}); "
        f"{_pct(report.pruned_traffic_share)} of their {report.lookups:,} counted lookups hit "
        "a pruned row.",
    ]
    if report.skipped_tables:
        lines.append(f"Not pruned (keep_all): {', '.join(report.skipped_tables)}.")
    lines += [
        "",
        "| table | hashed rows | rows | kept | pruned (unseen / rare / over capacity) | spare "
        "| dedicated | pruned traffic | expected pruned rows | expected pruned traffic |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in report.tables:
        lines.append(
            f"| {t.table} | {t.hashed_rows:,} | {t.num_rows:,} | {t.kept_rows:,} | "
            f"{t.pruned_rows:,} ({t.dead_unseen_rows:,} / {t.dead_rare_rows:,} / "
            f"{t.over_capacity_rows:,}) | {t.spare_rows:,} | {t.protected_rows:,} | "
            f"{_pct(t.pruned_traffic_share)} | {t.expected_pruned_rows:,} | "
            f"{_pct(t.expected_pruned_traffic_share)} |"
        )
    if quality:
        lines += [
            "",
            "### Quality on a later window",
            "",
            "| table | lookups | read fallback | untrained before | untrained after "
            "| lost trained | kept rows unused |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for q in sorted(quality, key=lambda q: q.table):
            lines.append(
                f"| {q.table} | {q.lookups:,} | {_pct(q.pruned_share)} | "
                f"{_pct(q.untrained_share_before)} | {_pct(q.untrained_share_after)} | "
                f"{_pct(q.lost_trained_share)} | {q.kept_unused_rows:,} |"
            )
    return "\n".join(lines) + "\n"
