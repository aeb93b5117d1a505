"""Merge stats reports computed over disjoint shards of the logs: :func:`merge_stats`.

Merging sketches is exact for every exact part (rows, pooling histogram, timestamps, HLL registers,
the sampled exact table and so every statistic derived from it in exact mode): the merge of stats
over two halves of the logs equals the stats of the whole. Only the Misra-Gries summary of a
sampling feature depends on how the logs were split (its guarantees hold either way).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from adrank.errors import InputError
from sharding_planner.stats.collector import report_from_sketches
from sharding_planner.stats.sketches import FeatureSketch
from sharding_planner.types import StatsReport

__all__ = ["merge_stats"]

logger = logging.getLogger(__name__)


def merge_stats(
    reports: Sequence[StatsReport], sources: Sequence[str] | None = None
) -> StatsReport:
    """Merge reports over disjoint inputs into the report of all of them.

    Args:
        reports: At least one report, all computed with the same result settings.
        sources: Names of the reports for error messages (e.g. their stats file paths).

    Returns:
        A new report; its ``inputs_fingerprint`` equals that of one run over all the inputs.

    Raises:
        InputError: No reports, settings differ, the same input file appears in two reports (its
            rows would count twice), or a feature's id kind differs between reports.
    """
    if not reports:
        raise InputError("nothing to merge", hint="pass at least one stats file")
    names = (
        list(sources) if sources is not None else [f"report {i + 1}" for i in range(len(reports))]
    )
    base = reports[0].config.result_config()
    problems: list[InputError] = []
    for name, r in zip(names[1:], reports[1:], strict=True):
        cfg = r.config.result_config()
        if cfg != base:
            diff = ", ".join(f"{k}: {base[k]!r} vs {cfg[k]!r}" for k in base if base[k] != cfg[k])
            problems.append(
                InputError(
                    f"computed with different settings than {names[0]} ({diff})",
                    source=name,
                    hint="recompute the stats files with the same adrank stats options",
                )
            )
    seen: dict[str, tuple[str, str]] = {}
    for name, r in zip(names, reports, strict=True):
        for inp in r.inputs:
            if inp.fingerprint in seen:
                other_name, other_path = seen[inp.fingerprint]
                problems.append(
                    InputError(
                        f"input {inp.path} is also an input of {other_name} ({other_path}); "
                        "merging would count its rows twice",
                        source=name,
                        hint="merge only stats of disjoint shards of the logs",
                    )
                )
            else:
                seen[inp.fingerprint] = (name, inp.path)
    kinds: dict[str, tuple[str, str]] = {}
    for name, r in zip(names, reports, strict=True):
        for fname, fs in r.features.items():
            label = f"list<{fs.id_kind.value}>" if fs.multi_hot else fs.id_kind.value
            if fname not in kinds:
                kinds[fname] = (label, name)
            elif kinds[fname][0] != label:
                problems.append(
                    InputError(
                        f"feature {fname!r} has {label} ids here but {kinds[fname][0]} ids in "
                        f"{kinds[fname][1]}",
                        source=f"{name}:features.{fname}",
                        hint="merge only stats of logs with one schema",
                    )
                )
    if problems:
        raise InputError.from_problems(problems)

    merged: dict[str, FeatureSketch] = {}
    for r in reports:
        for fname, sketch in r.sketches.items():
            merged[fname] = (
                merged[fname].merge(sketch)
                if fname in merged
                else sketch.merge(sketch.empty_like())
            )
    inputs = tuple(i for r in reports for i in r.inputs)
    logger.info(
        "merged %d stats reports: %d inputs, %d features", len(reports), len(inputs), len(merged)
    )
    return report_from_sketches(merged, reports[0].config, inputs)
