"""Offline quality metrics: ROC AUC and log loss (numpy, ties handled exactly)."""

from __future__ import annotations

import numpy as np

__all__ = ["auc", "logloss", "per_example_logloss"]

_EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    Args:
        labels: 0/1 per example.
        scores: Any monotone score (logits or probabilities) per example.

    Returns:
        AUC in [0, 1]; 0.5 when one class is absent.
    """
    y = np.asarray(labels, dtype=np.float64).ravel() > 0.5
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return 0.5
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def per_example_logloss(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each example from logits (numerically stable), in nats."""
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))


def logloss(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy from logits, in nats."""
    return float(per_example_logloss(labels, logits).mean()) if len(labels) else 0.0
