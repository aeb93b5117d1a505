"""The stats file: versioned JSON written by ``adrank stats`` and read by the planner.

Layout (``kind: "adrank.stats"``, ``format_version: 1``)::

    {
     "kind": "adrank.stats", "format_version": 1,
     "inputs_fingerprint": "sha256:...",       # sorted input fingerprints + config
     "inputs": [{"path": ..., "fingerprint": "sha256:...", "rows": 1000}],
     "config": {"features": null, "timestamp_column": null, "recent_window_s": 86400,
                "exact_distinct_limit": 524288, "hll_precision": 14, "heavy_hitters": 100,
                "heavy_hitter_capacity": 400},
     "features": {
      "ad_id": {
       "id_kind": "int", "multi_hot": false,
       "rows": 1000, "rows_present": 990, "coverage": 0.99, "total_ids": 990,
       "distinct": 312, "distinct_exact": true, "distinct_rse": 0.0,
       "distinct_sample_estimate": 312, "sample_rate": 1.0,
       "heavy_hitters": [[42, 120], [7, 88]],          # [id key, count], most frequent first
       "heavy_hitter_raw": null,                      # raw strings (string features), else null
       "heavy_hitter_undercount": [0, 0],             # per heavy hitter: count may be low by
       "heavy_hitter_first_seen_s": [..], "heavy_hitter_last_seen_s": [..],
       "heavy_hitter_max_undercount": 0,
       "pooling": {"mean": 1.0, "p99": 1, "max": 1},
       "count_quantiles": {"p50": 1, "p90": 6, "p99": 40, "max": 120},
       "zipf_exponent": 1.07, "top1pct_traffic_share": 0.31, "top10pct_traffic_share": 0.72,
       "unseen_recent_share": 0.2,
       "first_seen_s": 1700000000, "last_seen_s": 1700086399, "log_end_s": 1700086399,
       "sketch": {...}                                # mergeable state, see FeatureSketch.to_dict
      }
     }
    }

Times are epoch seconds (UTC); null where the logs have no timestamp.
"""

from __future__ import annotations

import os
from typing import Any

from adrank.constants import FORMAT_VERSION_STATS
from adrank.errors import InputError
from adrank.formats import read_json_document, write_json_document
from sharding_planner.stats.sketches import FeatureSketch
from sharding_planner.types import (
    CountQuantiles,
    FeatureStats,
    HeavyHitter,
    IdKind,
    InputFileInfo,
    PoolingStats,
    StatsConfig,
    StatsReport,
)

__all__ = [
    "STATS_KIND",
    "config_from_json",
    "feature_from_json",
    "feature_to_json",
    "read_stats",
    "stats_document",
    "write_stats",
]

STATS_KIND = "adrank.stats"
"""The ``kind`` of stats documents."""


def feature_to_json(fs: FeatureStats) -> dict[str, Any]:
    """The reported fields of one feature (without its sketch)."""
    hh = fs.heavy_hitters
    return {
        "id_kind": fs.id_kind.value,
        "multi_hot": fs.multi_hot,
        "rows": fs.rows,
        "rows_present": fs.rows_present,
        "coverage": fs.coverage,
        "total_ids": fs.total_ids,
        "distinct": fs.distinct,
        "distinct_exact": fs.distinct_exact,
        "distinct_rse": fs.distinct_rse,
        "distinct_sample_estimate": fs.distinct_sample_estimate,
        "sample_rate": fs.sample_rate,
        "heavy_hitters": [[h.id_key, h.count] for h in hh],
        "heavy_hitter_raw": [h.raw_id for h in hh] if fs.id_kind is IdKind.STRING else None,
        "heavy_hitter_undercount": [h.max_undercount for h in hh],
        "heavy_hitter_first_seen_s": [h.first_seen_s for h in hh],
        "heavy_hitter_last_seen_s": [h.last_seen_s for h in hh],
        "heavy_hitter_max_undercount": fs.heavy_hitter_max_undercount,
        "pooling": {"mean": fs.pooling.mean, "p99": fs.pooling.p99, "max": fs.pooling.max},
        "count_quantiles": {
            "p50": fs.count_quantiles.p50,
            "p90": fs.count_quantiles.p90,
            "p99": fs.count_quantiles.p99,
            "max": fs.count_quantiles.max,
        },
        "zipf_exponent": fs.zipf_exponent,
        "top1pct_traffic_share": fs.top1pct_traffic_share,
        "top10pct_traffic_share": fs.top10pct_traffic_share,
        "unseen_recent_share": fs.unseen_recent_share,
        "first_seen_s": fs.first_seen_s,
        "last_seen_s": fs.last_seen_s,
        "log_end_s": fs.log_end_s,
    }


def feature_from_json(name: str, d: dict[str, Any]) -> FeatureStats:
    """Inverse of :func:`feature_to_json`.

    Raises:
        KeyError, TypeError, ValueError: A field is missing or malformed (callers map them).
    """
    hh = d["heavy_hitters"]
    n = len(hh)
    raw = d["heavy_hitter_raw"] or [None] * n
    under = d["heavy_hitter_undercount"]
    first = d["heavy_hitter_first_seen_s"]
    last = d["heavy_hitter_last_seen_s"]
    if not len(raw) == len(under) == len(first) == len(last) == n:
        raise ValueError("heavy_hitter_* lists differ in length")
    heavy = tuple(
        HeavyHitter(
            id_key=int(k),
            count=int(c),
            max_undercount=int(u),
            raw_id=None if r is None else str(r),
            first_seen_s=_opt_int(f),
            last_seen_s=_opt_int(lt),
        )
        for (k, c), r, u, f, lt in zip(hh, raw, under, first, last, strict=True)
    )
    q = d["count_quantiles"]
    pool = d["pooling"]
    return FeatureStats(
        name=name,
        id_kind=IdKind(d["id_kind"]),
        multi_hot=bool(d["multi_hot"]),
        rows=int(d["rows"]),
        rows_present=int(d["rows_present"]),
        coverage=float(d["coverage"]),
        total_ids=int(d["total_ids"]),
        distinct=int(d["distinct"]),
        distinct_exact=bool(d["distinct_exact"]),
        distinct_rse=float(d["distinct_rse"]),
        distinct_sample_estimate=int(d["distinct_sample_estimate"]),
        sample_rate=float(d["sample_rate"]),
        heavy_hitters=heavy,
        heavy_hitter_max_undercount=int(d["heavy_hitter_max_undercount"]),
        pooling=PoolingStats(mean=float(pool["mean"]), p99=int(pool["p99"]), max=int(pool["max"])),
        count_quantiles=CountQuantiles(
            p50=int(q["p50"]), p90=int(q["p90"]), p99=int(q["p99"]), max=int(q["max"])
        ),
        zipf_exponent=_opt_float(d["zipf_exponent"]),
        top1pct_traffic_share=float(d["top1pct_traffic_share"]),
        top10pct_traffic_share=float(d["top10pct_traffic_share"]),
        unseen_recent_share=_opt_float(d["unseen_recent_share"]),
        first_seen_s=_opt_int(d["first_seen_s"]),
        last_seen_s=_opt_int(d["last_seen_s"]),
        log_end_s=_opt_int(d["log_end_s"]),
    )


def config_from_json(d: dict[str, Any]) -> StatsConfig:
    """A :class:`StatsConfig` from a stats file's ``config`` (execution settings defaulted).

    Raises:
        KeyError, TypeError, ValueError: Malformed (callers map them).
    """
    features = d["features"]
    config = StatsConfig(
        features=None if features is None else tuple(str(f) for f in features),
        timestamp_column=None if d["timestamp_column"] is None else str(d["timestamp_column"]),
        recent_window_s=int(d["recent_window_s"]),
        exact_distinct_limit=int(d["exact_distinct_limit"]),
        hll_precision=int(d["hll_precision"]),
        heavy_hitters=int(d["heavy_hitters"]),
    )
    if config.result_config() != d:
        raise ValueError(
            "config has unknown keys or a heavy_hitter_capacity this version does not use"
        )
    return config


def stats_document(report: StatsReport) -> dict[str, Any]:
    """The JSON body of a stats file (without ``kind``/``format_version``)."""
    features = {}
    for name, fs in report.features.items():
        entry = feature_to_json(fs)
        entry["sketch"] = report.sketches[name].to_dict()
        features[name] = entry
    return {
        "inputs_fingerprint": report.inputs_fingerprint,
        "inputs": [
            {"path": i.path, "fingerprint": i.fingerprint, "rows": i.rows} for i in report.inputs
        ],
        "config": report.config.result_config(),
        "features": features,
    }


def write_stats(report: StatsReport, path: str | os.PathLike[str]) -> None:
    """Write a stats file atomically (a failure leaves any existing file untouched).

    Args:
        report: What to write.
        path: Destination, e.g. ``stats.json``.
    """
    write_json_document(path, STATS_KIND, FORMAT_VERSION_STATS, stats_document(report))


def read_stats(path: str | os.PathLike[str]) -> StatsReport:
    """Read a stats file, sketches included.

    Args:
        path: A file written by :func:`write_stats`.

    Returns:
        The report (``timings`` is None).

    Raises:
        NotFoundError: No such file.
        InputError: Not a stats file, an unsupported ``format_version``, or malformed content.
    """
    doc = read_json_document(path, STATS_KIND, (FORMAT_VERSION_STATS,))
    source = str(path)
    try:
        config = config_from_json(doc["config"])
        inputs = tuple(
            InputFileInfo(
                path=str(i["path"]), fingerprint=str(i["fingerprint"]), rows=int(i["rows"])
            )
            for i in doc["inputs"]
        )
        fingerprint = str(doc["inputs_fingerprint"])
        features_doc = doc["features"]
        features = {
            name: feature_from_json(name, features_doc[name]) for name in sorted(features_doc)
        }
        sketch_docs = {name: features_doc[name]["sketch"] for name in features}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(
            f"malformed stats file: {type(exc).__name__}: {exc}",
            source=source,
            hint="regenerate it with `adrank stats`",
        ) from exc
    sketches = {
        name: FeatureSketch.from_dict(name, d, f"{source}:features.{name}.sketch")
        for name, d in sketch_docs.items()
    }
    return StatsReport(
        config=config,
        inputs=inputs,
        inputs_fingerprint=fingerprint,
        features=features,
        sketches=sketches,
    )


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)
