"""The hidden ground-truth click model of the synthetic logs.

For an impression of ad ``a`` shown to user ``u`` at ``position`` (0 = top) of a request::

    logit = bias
          + quality_weight * ln(ad_quality) / quality_sigma           # z-score of the ad's quality
          + device_effects[device]
          + hour_amplitude * cos(2 pi (hour - hour_peak) / 24)       # context
          + affinity_weight * <U[u], A[a]> / sqrt(latent_dim)        # hashed N(0, 1) latents
          + intent_weight * [category(a) == category of u's most recent item]
          + history_weight * share of u's last history_window items in category(a)
          - position_weight * ln(1 + position)
    click ~ Bernoulli(sigmoid(logit))

``U`` and ``A`` are ``latent_dim`` standard normals hashed from ``(seed, user_id)`` and
``(seed, ad_id)``: a two-tower model can learn them from the ids. The intent and history terms
exist only when the request's behaviour sequence is non-empty (they read its first
``min(history_window, seq_len)`` entries, exactly what ``requests.parquet`` holds), so a model that
reads the sequence beats one that does not for users with histories, and cold-start users get only
the other terms. Everything the formula reads is in the written files except the latents, which
:func:`ground_truth_logit` recomputes from the seed: tests and evaluations can score the logged
labels against the truth with :func:`logits_for_tables`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from adrank.data.synth_random import HashStream
from adrank.data.synth_world import QUALITY_SIGMA, recent_matrix
from adrank.errors import InputError

__all__ = [
    "CLICK_MODEL",
    "ClickModel",
    "ground_truth_logit",
    "history_terms",
    "logits_for_tables",
    "sigmoid",
]


@dataclass(frozen=True, slots=True)
class ClickModel:
    """Parameters of the ground-truth click model (see the module docstring for the formula)."""

    bias: float = -3.75
    quality_weight: float = 0.35
    quality_sigma: float = QUALITY_SIGMA
    device_effects: tuple[float, ...] = (0.0, -0.15, 0.1, -0.3, 0.2)
    hour_amplitude: float = 0.2
    hour_peak: int = 21
    affinity_weight: float = 0.6
    latent_dim: int = 8
    intent_weight: float = 1.0
    history_weight: float = 1.6
    history_window_items: int = 20
    position_weight: float = 0.25

    def to_json(self) -> dict[str, Any]:
        """The parameters and the formula, for ``manifest.json``."""
        body = asdict(self)
        body["device_effects"] = list(self.device_effects)
        body["formula"] = (
            "logit = bias + quality_weight*ln(ad_quality)/quality_sigma + device_effects[device]"
            " + hour_amplitude*cos(2*pi*(hour-hour_peak)/24)"
            " + affinity_weight*dot(U[user_id], A[ad_id])/sqrt(latent_dim)"
            " + intent_weight*[ad category == category of the most recent history item]"
            " + history_weight*(share of the first min(history_window_items, len) history items"
            " in the ad's category) - position_weight*ln(1+position); click ~ Bernoulli(sigmoid)"
        )
        body["latents"] = (
            "U, A: latent_dim standard normals hashed from (seed, user_id) and (seed, ad_id); "
            "recompute with adrank.data.synth_click.ground_truth_logit"
        )
        return body


CLICK_MODEL = ClickModel()
"""The click model ``adrank synth`` uses."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function (float64)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def history_terms(recent: np.ndarray, ad_category: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The intent and history-share inputs of the click model.

    Args:
        recent: ``(n, window)`` int64 categories of each impression's most recent history items,
            most recent first, ``-1``-padded (all ``-1`` for a cold-start user).
        ad_category: ``(n,)`` category of each impression's ad.

    Returns:
        ``(intent, share)``: bool ``recent[:, 0] == ad_category`` and the float64 share of the
        non-padding entries equal to ``ad_category`` (0 for an empty history).
    """
    ad_category = np.asarray(ad_category, dtype=np.int64)
    intent = (recent[:, 0] >= 0) & (recent[:, 0] == ad_category)
    known = (recent >= 0).sum(axis=1)
    hits = (recent == ad_category[:, None]).sum(axis=1)
    share = hits / np.maximum(known, 1)
    return intent, share


def ground_truth_logit(
    seed: int,
    *,
    user_id: np.ndarray,
    ad_id: np.ndarray,
    ad_quality: np.ndarray,
    device: np.ndarray,
    hour: np.ndarray,
    position: np.ndarray,
    intent: np.ndarray,
    history_share: np.ndarray,
    model: ClickModel = CLICK_MODEL,
) -> np.ndarray:
    """The click logit of each impression under the hidden model.

    Args:
        seed: The generation seed (the latents depend on it).
        user_id: int64 user ids, one per impression.
        ad_id: int64 ad ids.
        ad_quality: The logged (float32) ad quality.
        device: Device codes (codes outside ``device_effects`` add 0).
        hour: UTC hour of the request, 0..23.
        position: 0-based rank of the ad in its request.
        intent: Whether the ad's category is that of the user's most recent item.
        history_share: Share of the user's recent items in the ad's category.
        model: The parameters.

    Returns:
        float64 logits.
    """
    d = model.latent_dim
    u_lat = HashStream(seed, "user_latent").normals(np.asarray(user_id, dtype=np.int64), d)
    a_lat = HashStream(seed, "ad_latent").normals(np.asarray(ad_id, dtype=np.int64), d)
    affinity = np.einsum("ij,ij->i", u_lat, a_lat) / math.sqrt(d)
    return _logit(model, affinity, ad_quality, device, hour, position, intent, history_share)


def _logit(
    model: ClickModel,
    affinity: np.ndarray,
    ad_quality: np.ndarray,
    device: np.ndarray,
    hour: np.ndarray,
    position: np.ndarray,
    intent: np.ndarray,
    history_share: np.ndarray,
) -> np.ndarray:
    effects = np.asarray(model.device_effects + (0.0,), dtype=np.float64)
    dev = np.asarray(device, dtype=np.int64)
    dev = np.where((dev >= 0) & (dev < len(model.device_effects)), dev, len(model.device_effects))
    quality = np.asarray(ad_quality, dtype=np.float32).astype(np.float64)
    z_quality = np.log(quality) / model.quality_sigma
    hour_f = np.asarray(hour, dtype=np.float64)
    return (
        model.bias
        + model.quality_weight * z_quality
        + effects[dev]
        + model.hour_amplitude * np.cos(2.0 * math.pi * (hour_f - model.hour_peak) / 24.0)
        + model.affinity_weight * affinity
        + model.intent_weight * np.asarray(intent, dtype=np.float64)
        + model.history_weight * np.asarray(history_share, dtype=np.float64)
        - model.position_weight * np.log1p(np.asarray(position, dtype=np.float64))
    )


def logits_for_tables(
    impressions: pa.Table, requests: pa.Table, seed: int, model: ClickModel = CLICK_MODEL
) -> np.ndarray:
    """Recompute the ground-truth logit of every impression from the written tables.

    Args:
        impressions: ``impressions.parquet`` (request_id, user_id, ad_id, ad_quality, device,
            hour, position, category).
        requests: ``requests.parquet`` (request_id, user_clicked_categories), covering every
            request the impressions name.
        seed: The seed the files were generated with.
        model: The parameters (the default is what ``adrank synth`` used).

    Returns:
        float64 logits aligned with ``impressions``' rows.

    Raises:
        InputError: A column is missing, or an impression names a request absent from
            ``requests``.
    """
    need_imp = ("request_id", "user_id", "ad_id", "ad_quality", "device", "hour", "position",
                "category")
    problems = [
        InputError(f"missing column {c!r}", source=f"impressions:{c}")
        for c in need_imp if c not in impressions.column_names
    ] + [
        InputError(f"missing column {c!r}", source=f"requests:{c}")
        for c in ("request_id", "user_clicked_categories") if c not in requests.column_names
    ]
    if problems:
        raise InputError.from_problems(problems)

    def col(table: pa.Table, name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    req_ids = col(requests, "request_id")
    order = np.argsort(req_ids, kind="stable")
    imp_req = col(impressions, "request_id")
    pos = np.searchsorted(req_ids[order], imp_req)
    pos = np.minimum(pos, len(order) - 1)
    found = len(order) > 0 and bool(np.all(req_ids[order][pos] == imp_req))
    if not found:
        raise InputError(
            "some impressions name a request_id that requests.parquet lacks",
            source="impressions:request_id",
            hint="pass the requests table written with these impressions",
        )
    lists = requests.column("user_clicked_categories").combine_chunks()
    recent = recent_matrix(
        lists.offsets.to_numpy().astype(np.int64),
        lists.values.to_numpy().astype(np.int64),
        model.history_window_items,
    )[order[pos]]
    intent, share = history_terms(recent, col(impressions, "category"))
    return ground_truth_logit(
        seed,
        user_id=col(impressions, "user_id"),
        ad_id=col(impressions, "ad_id"),
        ad_quality=col(impressions, "ad_quality"),
        device=col(impressions, "device"),
        hour=col(impressions, "hour"),
        position=col(impressions, "position"),
        intent=intent,
        history_share=share,
        model=model,
    )
