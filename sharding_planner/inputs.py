"""Planner inputs: features from a stats file or a tables file, dims, importance weights.

Two input forms:

* a stats file from ``adrank stats`` (:func:`sharding_planner.stats.read_stats`): measured
  distinct ids, live ids (seen in the recent window), heavy hitters and pooling factors;
* a tables file: JSON list of ``{"name", "num_embeddings", "dim", "pooling_factor"}`` objects
  (optionally ``"pooling"``: ``"sum"``, ``"mean"`` or ``"none"``), the form public model configs
  come in (e.g. the published Criteo cardinalities). ``{"tables": [...]}`` is accepted too. Every
  id counts as live and no heavy hitters are known.

Importance weights are a JSON object ``{feature: weight > 0}``. Every problem in any input is
reported at once, naming the file and field.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adrank.errors import InputError, NotFoundError
from adrank.formats import fingerprint
from adrank.types import PoolingType
from sharding_planner.stats import read_stats
from sharding_planner.types import FeatureSpec, FeatureStats, PlanInputs, StatsReport

__all__ = [
    "TABLES_FILE_KEYS",
    "features_from_stats",
    "features_from_tables",
    "load_plan_inputs",
    "read_importance",
    "read_tables_file",
]

logger = logging.getLogger(__name__)

TABLES_FILE_KEYS = ("name", "num_embeddings", "dim", "pooling_factor", "pooling")
"""Keys a tables-file entry may have (``dim`` and ``pooling`` are optional)."""

_REQUIRED_TABLE_KEYS = ("name", "num_embeddings", "pooling_factor")


def _live_heavy_hitters(fs: FeatureStats, window_s: int | None) -> tuple[tuple[int, float], ...]:
    if fs.total_ids <= 0:
        return ()
    cutoff = None if window_s is None or fs.log_end_s is None else fs.log_end_s - window_s
    out = []
    for h in fs.heavy_hitters:
        if cutoff is not None and h.last_seen_s is not None and h.last_seen_s < cutoff:
            continue  # dead heavy hitter: no dedicated row for an id unseen in the window
        out.append((h.id_key, h.count / fs.total_ids))
    return tuple(out)


def features_from_stats(
    report: StatsReport,
    *,
    default_dim: int,
    dim_overrides: Mapping[str, int] | None = None,
    importance: Mapping[str, float] | None = None,
    sequence_features: Sequence[str] = (),
    source: str = "stats",
) -> PlanInputs:
    """Build planner features from a stats report.

    Args:
        report: Stats of the logs.
        default_dim: Embedding dim of features without an override.
        dim_overrides: Feature -> dim.
        importance: Feature -> collision weight.
        sequence_features: Features looked up unpooled (one embedding per id, e.g. a user's
            behaviour sequence for attention): their tables get ``PoolingType.NONE``.
        source: Path of the stats file, for messages.

    Returns:
        The validated inputs.

    Raises:
        InputError: No features, or an override/importance names an unknown feature.
    """
    names = list(report.features)
    _check_named(names, dim_overrides, "--dim-override", source)
    _check_named(names, importance, "--importance", source)
    _check_named(names, dict.fromkeys(sequence_features, 0), "--sequence-features", source)
    if not names:
        raise InputError(
            "the stats file has no sparse features",
            source=source,
            hint="run `adrank stats` on logs with sparse (id) columns",
        )
    window = report.config.recent_window_s
    # Request-structured logs put features in tables of different row counts (impressions vs
    # requests): express every pooling factor per row of the largest table, so that pooling
    # factors (and the traffic shares derived from them) are proportional to total lookups.
    reference_rows = max((fs.rows for fs in report.features.values()), default=0)
    feats = []
    for name in sorted(names):
        fs = report.features[name]
        distinct = max(1, fs.distinct)
        unseen = fs.unseen_recent_share
        live = distinct if unseen is None else max(1, round(distinct * (1.0 - unseen)))
        heavy = _live_heavy_hitters(fs, None if unseen is None else window)
        dead_traffic = 0.0
        if unseen and fs.total_ids > 0:
            # Dead ids are tail ids: about the median count each.
            dead_traffic = min(
                1.0 - sum(s for _, s in heavy),
                unseen * distinct * max(1, fs.count_quantiles.p50) / fs.total_ids,
            )
        feats.append(
            FeatureSpec(
                name=name,
                dim=(dim_overrides or {}).get(name, default_dim),
                pooling=PoolingType.NONE if name in sequence_features else PoolingType.SUM,
                pooling_factor=fs.total_ids / reference_rows if reference_rows else 0.0,
                num_ids=distinct,
                live_ids=live,
                heavy_hitters=heavy,
                importance=(importance or {}).get(name, 1.0),
                dead_traffic_share=max(0.0, dead_traffic),
                from_stats=True,
            )
        )
    return PlanInputs(
        features=tuple(feats),
        source_fingerprint=report.inputs_fingerprint,
        recent_window_s=window
        if any(f.unseen_recent_share is not None for f in report.features.values())
        else None,
        source=source,
    )


def read_tables_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read and validate a tables file (see the module docstring).

    Args:
        path: The JSON file.

    Returns:
        The entries, each with ``name``, ``num_embeddings``, ``pooling_factor`` and, when given,
        ``dim`` and ``pooling`` (upper-cased).

    Raises:
        NotFoundError: No such file.
        InputError: Not JSON or malformed; every problem is listed with ``path:tables[i].field``.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFoundError("tables file does not exist", source=str(p)) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"cannot read the tables file as JSON: {exc}",
            source=str(p),
            hint='expected [{"name": ..., "num_embeddings": ..., "dim": ..., '
            '"pooling_factor": ...}, ...]',
        ) from exc
    if isinstance(doc, dict) and isinstance(doc.get("tables"), list):
        doc = doc["tables"]
    if not isinstance(doc, list) or not doc:
        raise InputError(
            f"expected a non-empty JSON list of tables, found {type(doc).__name__}",
            source=str(p),
            hint='e.g. [{"name": "C1", "num_embeddings": 1460, "dim": 64, "pooling_factor": 1}]',
        )
    problems: list[InputError] = []
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, entry in enumerate(doc):
        where = f"{p}:tables[{i}]"
        if not isinstance(entry, dict):
            problems.append(InputError(f"expected an object, found {entry!r}", source=where))
            continue
        unknown = sorted(set(entry) - set(TABLES_FILE_KEYS))
        if unknown:
            problems.append(
                InputError(f"unknown keys {unknown}; known: {list(TABLES_FILE_KEYS)}", source=where)
            )
        missing = [k for k in _REQUIRED_TABLE_KEYS if k not in entry]
        if missing:
            problems.append(InputError(f"missing keys {missing}", source=where))
            continue
        name = entry["name"]
        if not isinstance(name, str) or not name:
            problems.append(
                InputError(
                    f"name must be a non-empty string, found {name!r}", source=f"{where}.name"
                )
            )
        elif name in seen:
            problems.append(InputError(f"duplicate table name {name!r}", source=f"{where}.name"))
        seen.add(str(name))
        n = entry["num_embeddings"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            problems.append(
                InputError(
                    f"num_embeddings must be an integer >= 1, found {n!r}",
                    source=f"{where}.num_embeddings",
                )
            )
        pf = entry["pooling_factor"]
        if (
            isinstance(pf, bool)
            or not isinstance(pf, int | float)
            or not (math.isfinite(pf) and pf > 0)
        ):
            problems.append(
                InputError(
                    f"pooling_factor must be a number > 0, found {pf!r}",
                    source=f"{where}.pooling_factor",
                )
            )
        clean = {"name": name, "num_embeddings": n, "pooling_factor": pf}
        if "dim" in entry:
            dim = entry["dim"]
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                problems.append(
                    InputError(f"dim must be an integer >= 1, found {dim!r}", source=f"{where}.dim")
                )
            clean["dim"] = dim
        if "pooling" in entry:
            pooling = entry["pooling"]
            valid = [x.value.lower() for x in PoolingType]
            if not isinstance(pooling, str) or pooling.lower() not in valid:
                problems.append(
                    InputError(
                        f"pooling must be one of {valid}, found {pooling!r}",
                        source=f"{where}.pooling",
                    )
                )
            else:
                clean["pooling"] = pooling.upper()
        out.append(clean)
    if problems:
        raise InputError.from_problems(problems)
    return out


def features_from_tables(
    entries: list[dict[str, Any]],
    *,
    default_dim: int,
    dim_overrides: Mapping[str, int] | None = None,
    importance: Mapping[str, float] | None = None,
    source: str = "tables",
) -> PlanInputs:
    """Build planner features from validated tables-file entries (:func:`read_tables_file`).

    Args:
        entries: The entries.
        default_dim: Dim of entries without ``dim`` and without an override.
        dim_overrides: Feature -> dim (wins over the file's ``dim``).
        importance: Feature -> collision weight.
        source: Path of the tables file, for messages.

    Returns:
        The inputs; every id is live and no heavy hitters are known.

    Raises:
        InputError: An override or importance weight names an unknown table.
    """
    names = [e["name"] for e in entries]
    _check_named(names, dim_overrides, "--dim-override", source)
    _check_named(names, importance, "--importance", source)
    feats = []
    for e in sorted(entries, key=lambda e: e["name"]):
        name = e["name"]
        dim = (dim_overrides or {}).get(name, e.get("dim", default_dim))
        feats.append(
            FeatureSpec(
                name=name,
                dim=dim,
                pooling=PoolingType(e.get("pooling", "SUM")),
                pooling_factor=float(e["pooling_factor"]),
                num_ids=int(e["num_embeddings"]),
                live_ids=int(e["num_embeddings"]),
                importance=(importance or {}).get(name, 1.0),
            )
        )
    return PlanInputs(
        features=tuple(feats),
        source_fingerprint=fingerprint(entries),
        recent_window_s=None,
        source=source,
    )


def read_importance(path: str | os.PathLike[str]) -> dict[str, float]:
    """Read an importance-weights file: a JSON object ``{feature: weight > 0}``.

    Raises:
        NotFoundError: No such file.
        InputError: Not such an object; every bad entry is named.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFoundError("importance file does not exist", source=str(p)) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the importance file as JSON: {exc}", source=str(p)) from exc
    if not isinstance(doc, dict):
        raise InputError(
            f"expected a JSON object {{feature: weight}}, found {type(doc).__name__}",
            source=str(p),
            hint='e.g. {"ad_id": 2.0, "geo": 0.5}',
        )
    problems = [
        InputError(f"weight must be a number > 0, found {w!r}", source=f"{p}:{k}")
        for k, w in doc.items()
        if isinstance(w, bool) or not isinstance(w, int | float) or not (math.isfinite(w) and w > 0)
    ]
    if problems:
        raise InputError.from_problems(problems)
    return {str(k): float(w) for k, w in doc.items()}


def load_plan_inputs(
    *,
    stats_path: str | os.PathLike[str] | None = None,
    tables_path: str | os.PathLike[str] | None = None,
    default_dim: int,
    dim_overrides: Mapping[str, int] | None = None,
    importance_path: str | os.PathLike[str] | None = None,
    sequence_features: Sequence[str] = (),
) -> PlanInputs:
    """Read the planner's feature inputs from exactly one of a stats file or a tables file.

    Args:
        stats_path: A stats file from ``adrank stats``.
        tables_path: A tables file.
        default_dim: Dim of features without one.
        dim_overrides: Feature -> dim.
        importance_path: Optional importance-weights file.
        sequence_features: Stats features to look up unpooled (see :func:`features_from_stats`);
            a tables file says ``"pooling": "none"`` per entry instead.

    Returns:
        The inputs.

    Raises:
        InputError: Neither or both files given, or any input is malformed (all problems at once).
        NotFoundError: A file does not exist.
    """
    if (stats_path is None) == (tables_path is None):
        raise InputError("give exactly one of --stats or --tables", source="--stats/--tables")
    importance = read_importance(importance_path) if importance_path is not None else None
    if stats_path is not None:
        report = read_stats(stats_path)
        return features_from_stats(
            report,
            default_dim=default_dim,
            dim_overrides=dim_overrides,
            importance=importance,
            sequence_features=sequence_features,
            source=str(stats_path),
        )
    if sequence_features:
        raise InputError(
            "--sequence-features applies to a stats file",
            source="--sequence-features",
            hint='in a tables file set "pooling": "none" on those entries',
        )
    assert tables_path is not None
    entries = read_tables_file(tables_path)
    return features_from_tables(
        entries,
        default_dim=default_dim,
        dim_overrides=dim_overrides,
        importance=importance,
        source=str(tables_path),
    )


def _check_named(
    names: list[str], mapping: Mapping[str, Any] | None, flag: str, source: str
) -> None:
    if not mapping:
        return
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise InputError(
            f"{flag} names features that {source} does not have: {unknown}",
            source=flag,
            hint=f"known features: {', '.join(sorted(names)[:20])}"
            + (" ..." if len(names) > 20 else ""),
        )
