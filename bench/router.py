"""``adrank bench router``: the router's quality and compute against always-small/-large.

Builds the pipeline (synth -> stats -> plan -> prune -> ingest -> train, the same builder as
:mod:`bench.e2e_rank`) in a temporary directory and reports what ``adrank train`` measured on the
held-out last day: AUC and log loss of each tier and of routed traffic, and routed compute relative
to always-large (tier FLOPs per request at the logs' typical candidate count, weighted by each
request's candidates). Targets (issue 6): cost at least 3x below always-large with AUC within
0.002 of it. ``seeds`` runs the whole thing for several synthetic seeds (variation is large at
this data size).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.e2e_rank import _build_pipeline
from bench.harness import BenchResult

__all__ = ["DEFAULT_CONFIG", "run"]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "rows": 300_000,
    "days": 14,
    "holdout_days": 1.0,
    "devices": 2,
    "device_memory": "256MiB",
    "memory_budget": "32MiB",
    "dim": 64,
    "max_sequence_len": 64,
    "seeds": [0, 1, 2],
    "target_cost_ratio": 3.0,
    "target_auc_gap": 0.002,
}

SMOKE: dict[str, Any] = {
    "rows": 20_000,
    "days": 4,
    "memory_budget": "2MiB",
    "dim": 16,
    "max_sequence_len": 16,
    "seeds": [0],
}


def run(config: dict[str, Any], smoke: bool = False) -> BenchResult:
    import json

    if smoke:
        config = {**config, **SMOKE}
    runs = []
    for seed in config["seeds"]:
        work = Path(tempfile.mkdtemp(prefix="adrank-bench-router-"))
        try:
            paths = _build_pipeline(work, {**config, "seed": seed})
            doc = json.loads((paths["model"] / "metrics.json").read_text())
            runs.append({"seed": seed, **{k: doc[k] for k in ("tiers", "routed", "requests")}})
        finally:
            shutil.rmtree(work, ignore_errors=True)
    ratio = [1.0 / max(r["routed"]["relative_cost"], 1e-9) for r in runs]
    gap = [r["tiers"]["large"]["auc"] - r["routed"]["auc"] for r in runs]
    metrics = {
        "runs": runs,
        "cost_ratio_vs_large": float(np.median(ratio)),
        "auc_gap_vs_large": float(np.median(gap)),
        "auc": {
            t: float(np.median([r["tiers"][t]["auc"] for r in runs]))
            for t in ("small", "medium", "large")
        }
        | {"routed": float(np.median([r["routed"]["auc"] for r in runs]))},
    }
    targets = {
        "cost_ratio_vs_large": {
            "min": config["target_cost_ratio"],
            "measured": metrics["cost_ratio_vs_large"],
            "met": metrics["cost_ratio_vs_large"] >= config["target_cost_ratio"],
        },
        "auc_gap_vs_large": {
            "max": config["target_auc_gap"],
            "measured": metrics["auc_gap_vs_large"],
            "met": metrics["auc_gap_vs_large"] <= config["target_auc_gap"],
        },
    }
    notes = (
        "Held-out = the last day of the synthetic logs; the router fits on the day before it and "
        "is calibrated there (cheapest cost weight within 0.002 AUC of the best single tier on "
        "that day). A negative AUC gap means routed traffic scored better than always-large."
    )
    return BenchResult(name="router", config=config, metrics=metrics, targets=targets, notes=notes)
