"""``adrank bench request-centric``: the large tier scored request-centric vs per candidate.

Workload (issue 6): one request per call with ``candidates`` (10, 100, 500, 2,000) candidate ads;
``user_features`` (10) x ``embedding_dim`` (64) pooled user embeddings plus ``user_dense`` (8) dense
features, ``ad_features`` (6) x 64 pooled ad embeddings plus ``ad_dense`` (8), and a behaviour
sequence of ``sequence_len`` (512) items x ``sequence_dim`` (64), all present (a heavy user: the
worst case for attention). The large tier (:class:`ranker.large.DcnAttentionTier`, default layer
sizes of :class:`ranker.base.TierDims`) in eval mode under ``torch.no_grad``, ``cores`` (2) torch
threads, random inputs (seeded, ``distinct_requests`` of them in turn), random weights.

Both sides run the whole model per call, embeddings already looked up:

* request-centric: ``tier(req, cand)``: the request's work (user tower, keys and values of the
  sequence, the user halves of the first layers) once, then the candidates;
* per candidate: ``tier.score_per_candidate(req, cand)``: the request's inputs copied once per
  candidate and the whole model run on ``C`` one-candidate requests (how a ranker without
  request-level sharing scores).

Measured per candidate count: latency p50/p90/p99 and throughput (candidates per second, from the
p50) of both, ``speedup`` (per-candidate p50 / request-centric p50; target >= 10 at 500), the
model's matrix-product FLOPs of both, and the largest difference of their logits (checked
``allclose`` in the run). ``exponent``: the slope of log p50 latency vs log candidates (least
squares over the candidate counts) for request-centric (target clearly below 1) and per
candidate. The two sides' calls are interleaved, so both see the same machine; per-candidate
points stop after ``max_seconds_per_point`` once ``min_iterations`` ran.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.harness import BenchResult, measure_peak_rss_bytes, percentiles_ms

__all__ = ["DEFAULT_CONFIG", "SMOKE", "run", "fit_exponent"]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "candidates": [10, 100, 500, 2000],
    "user_features": 10,
    "ad_features": 6,
    "embedding_dim": 64,
    "user_dense": 8,
    "ad_dense": 8,
    "sequence_len": 512,
    "sequence_dim": 64,
    "cores": 2,
    "iterations": 60,
    "per_candidate_iterations": 20,
    "min_iterations": 5,
    "max_seconds_per_point": 20.0,
    "warmup": 5,
    "distinct_requests": 4,
    "seed": 0,
    "rtol": 1e-4,
    "atol": 1e-5,
    "target_speedup_at": 500,
    "target_speedup": 10.0,
    "target_exponent": 0.8,
}

SMOKE: dict[str, Any] = {
    "candidates": [4, 16, 64],
    "user_features": 2,
    "ad_features": 2,
    "embedding_dim": 8,
    "sequence_len": 16,
    "sequence_dim": 8,
    "iterations": 4,
    "per_candidate_iterations": 3,
    "min_iterations": 2,
    "warmup": 1,
    "distinct_requests": 2,
    "target_speedup_at": 64,
}


def fit_exponent(candidates: list[int], latency_s: list[float]) -> float:
    """Least-squares slope of ``log latency`` against ``log candidates``.

    1 means cost proportional to the candidates; below 1, a fixed per-request part dominates.
    """
    slope, _ = np.polyfit(np.log(np.asarray(candidates, float)), np.log(latency_s), 1)
    return float(slope)


def _time_both(
    fast: Callable[[Any, Any], Any],
    slow: Callable[[Any, Any], Any],
    inputs: list[tuple[Any, Any]],
    config: dict[str, Any],
) -> tuple[list[float], list[float]]:
    """Latency samples (s) of ``fast`` and ``slow``, interleaved call by call so both see the
    same machine (other processes, frequency); ``slow`` stops at its iteration count, or at the
    time budget once it has ``min_iterations``, and ``fast`` goes on alone to its count."""
    warmup, lo = int(config["warmup"]), int(config["min_iterations"])
    n_fast, n_slow = int(config["iterations"]), int(config["per_candidate_iterations"])
    budget = float(config["max_seconds_per_point"])
    for k in range(warmup):
        fast(*inputs[k % len(inputs)])
        slow(*inputs[k % len(inputs)])
    s_fast: list[float] = []
    s_slow: list[float] = []
    start = time.perf_counter()
    for k in range(max(n_fast, n_slow)):
        args = inputs[k % len(inputs)]
        if k < n_fast:
            t0 = time.perf_counter()
            fast(*args)
            s_fast.append(time.perf_counter() - t0)
        over = len(s_slow) >= lo and time.perf_counter() - start > budget
        if k < n_slow and not over:
            t0 = time.perf_counter()
            slow(*args)
            s_slow.append(time.perf_counter() - t0)
    return s_fast, s_slow


def run(config: dict[str, Any], smoke: bool = False) -> BenchResult:
    import torch

    from ranker.base import TierDims, TierName
    from ranker.inputs import CandidateInputs, RequestInputs
    from ranker.tiers import build_tier

    if smoke:
        config = {**config, **SMOKE}
    counts = [int(c) for c in config["candidates"]]
    if len(counts) < 2 or min(counts) < 1:
        raise SystemExit(f"candidates needs >= 2 positive counts, got {counts}")
    cores = int(config["cores"])
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cores)
    gen = torch.Generator().manual_seed(int(config["seed"]))
    torch.manual_seed(int(config["seed"]))
    emb, length = int(config["embedding_dim"]), int(config["sequence_len"])
    user_dim, ad_dim = int(config["user_features"]) * emb, int(config["ad_features"]) * emb
    seq_dim, nu, na = (
        int(config["sequence_dim"]),
        int(config["user_dense"]),
        int(config["ad_dense"]),
    )
    dims = TierDims(
        user_pooled_dim=user_dim,
        user_dense_dim=nu,
        sequence_dim=seq_dim,
        ad_pooled_dim=ad_dim,
        ad_dense_dim=na,
        max_sequence_len=length,
    )
    tier = build_tier(TierName.LARGE, dims).eval()
    requests = [
        RequestInputs(
            pooled=torch.randn(1, user_dim, generator=gen),
            dense=torch.randn(1, nu, generator=gen),
            sequence=torch.randn(1, length, seq_dim, generator=gen),
            sequence_mask=torch.ones(1, length, dtype=torch.bool),
        )
        for _ in range(int(config["distinct_requests"]))
    ]
    per_count: dict[str, Any] = {}
    p50_rc: list[float] = []
    p50_pc: list[float] = []
    all_match = True
    try:
        with torch.no_grad():
            for c in counts:
                inputs = [
                    (
                        req,
                        CandidateInputs(
                            pooled=torch.randn(c, ad_dim, generator=gen),
                            dense=torch.randn(c, na, generator=gen),
                        ),
                    )
                    for req in requests
                ]
                diffs = []
                for req, cand in inputs:
                    a, b = tier(req, cand), tier.score_per_candidate(req, cand)
                    diffs.append(float((a - b).abs().max()))
                    all_match &= bool(
                        torch.allclose(a, b, rtol=float(config["rtol"]), atol=float(config["atol"]))
                    )
                s_rc, s_pc = _time_both(tier, tier.score_per_candidate, inputs, config)
                m_rc, m_pc = float(np.median(s_rc)), float(np.median(s_pc))
                p50_rc.append(m_rc)
                p50_pc.append(m_pc)
                per_count[str(c)] = {
                    "request_centric": {
                        **percentiles_ms(s_rc),
                        "candidates_per_s": c / m_rc,
                        "iterations": len(s_rc),
                        "gflops": tier.flops(c, length) / 1e9,
                    },
                    "per_candidate": {
                        **percentiles_ms(s_pc),
                        "candidates_per_s": c / m_pc,
                        "iterations": len(s_pc),
                        "gflops": tier.flops(c, length, per_candidate=True) / 1e9,
                    },
                    "speedup": m_pc / m_rc,
                    "flops_ratio": tier.flops(c, length, per_candidate=True)
                    / tier.flops(c, length),
                    "max_abs_diff": max(diffs),
                }
                logger.info(
                    "%d candidates: request-centric p50 %.2f ms, per-candidate p50 %.2f ms, "
                    "speedup %.1fx",
                    c,
                    m_rc * 1e3,
                    m_pc * 1e3,
                    m_pc / m_rc,
                )
    finally:
        torch.set_num_threads(threads_before)

    speedup = {str(c): per_count[str(c)]["speedup"] for c in counts}
    exponent = fit_exponent(counts, p50_rc)
    exponent_pc = fit_exponent(counts, p50_pc)
    at = str(config["target_speedup_at"])
    metrics: dict[str, Any] = {
        "candidates": counts,
        "sequence_len": length,
        "cores": cores,
        "tier": TierName.LARGE.value,
        "parameters": sum(p.numel() for p in tier.parameters()),
        "speedup": speedup,
        "exponent": exponent,
        "exponent_per_candidate": exponent_pc,
        "outputs_match": all_match,
        "per_count": per_count,
        "peak_rss_bytes": measure_peak_rss_bytes(),
    }
    targets: dict[str, Any] = {
        "outputs_match": {"equals": True, "measured": all_match, "met": all_match},
        "exponent": {
            "max": config["target_exponent"],
            "measured": exponent,
            "met": exponent <= float(config["target_exponent"]),
        },
    }
    if at in speedup:
        targets[f"speedup_at_{at}"] = {
            "min": config["target_speedup"],
            "measured": speedup[at],
            "met": speedup[at] >= float(config["target_speedup"]),
        }
    notes = (
        "One request per call, embeddings already looked up (inputs are random tensors), large "
        "tier in eval mode under no_grad. Latency = one whole forward (request part + "
        "candidates). Per candidate = the request's inputs copied per candidate and the whole "
        "model run on C one-candidate requests; its keys/values projection of the sequence "
        "then runs C times instead of once. exponent = least-squares slope of log p50 vs log "
        "candidates. FLOPs count matrix products only (ranker tier.flops)."
    )
    return BenchResult(
        name="request_centric", config=config, metrics=metrics, targets=targets, notes=notes
    )
