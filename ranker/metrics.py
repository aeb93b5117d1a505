"""Offline quality metrics: ROC AUC and log loss (numpy, ties handled exactly)."""

from __future__ import annotations

import numpy as np

__all__ = ["auc", "bootstrap_auc", "logloss", "per_example_logloss"]

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


def bootstrap_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of one score vector under several weightings of the examples at once (a bootstrap
    resample is a weighting: how often each example was drawn).

    Args:
        labels: ``[N]`` 0/1.
        scores: ``[N]`` scores.
        weights: ``[B, N]`` non-negative weights, one row per resample.

    Returns:
        ``[B]`` AUCs (tied scores count half), 0.5 where a resample lacks a class.
    """
    y = np.asarray(labels, dtype=np.float64).ravel() > 0.5
    s = np.asarray(scores, dtype=np.float64).ravel()
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(sorted_s)) + 1])  # tie groups
    wy = w[:, order]
    pos_w = np.add.reduceat(np.where(y[order], wy, 0.0), starts, axis=1)  # [B, G]
    neg_w = np.add.reduceat(np.where(y[order], 0.0, wy), starts, axis=1)
    below = np.cumsum(neg_w, axis=1) - neg_w  # negatives strictly below each group
    num = (pos_w * (below + 0.5 * neg_w)).sum(axis=1)
    den = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, 0.5)


def per_example_logloss(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each example from logits (numerically stable), in nats."""
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))


def logloss(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy from logits, in nats."""
    return float(per_example_logloss(labels, logits).mean()) if len(labels) else 0.0
