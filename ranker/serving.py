"""Scoring one ranking request end to end: features, sharded lookups, routed tier (no gRPC here).

:class:`Ranker.rank` takes a user id, the request's context (sparse ids such as device/hour/geo,
the behaviour sequences, dense values such as user_activity), the candidate ad ids and a latency
budget, and:

1. checks the request (every problem at once, before any work: no candidates, a missing context
   column or one of the wrong kind, sequence features of different lengths, an unknown tier);
2. reads the user's and the candidates' features from the feature service in one call
   (``get_request``: a :class:`feature_service.FeatureClient` over gRPC or a local
   :class:`feature_service.FeatureStore`, both have it);
3. hashes every id with the plan (:class:`ranker.embeddings.FeatureHasher`) and looks the
   request-level bags up once and the candidate bags once per candidate through the embedding
   runtime (:class:`embed_store.LocalLookup`, or the multi-process
   :class:`embed_store.ShardedLookup`);
4. lets the router choose the tier (cold start -> safe tier; a tier whose expected scoring time
   for this many candidates exceeds what is left of the budget -> the next smaller one), and
   scores with it, request-centrically (user side once, broadcast over candidates).

Column roles are the ones training used (``ranker.json``): candidate-level sparse ids other than
``ad_id`` and ``position`` and candidate dense values come from the ad group (``ad__x`` -> ad
feature ``x``, or the plain name), ``position`` is the candidate's 0-based place in the request
(as in the logs), ``user__x`` request dense values are the user group's feature ``x``, every
other request-level column comes with the request's context. A candidate the feature service
does not know keeps null features (counted in ``feature_misses``).

A :class:`Ranker` is safe to share between threads: feature reads and scoring of concurrent
requests overlap, lookups run one at a time (``LocalLookup``'s kernels are not thread-safe and a
``ShardedLookup`` batch uses every rank).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from adrank.errors import DeadlineExceededError, InputError, NotFoundError
from adrank.formats import read_json_document
from adrank.types import ShardPlan
from embed_store.batch import JaggedIds, LookupBatch, LookupResult
from feature_service.types import RequestFeatures
from ranker.base import RankerTier, TierDims, TierName
from ranker.data import FeatureRoles
from ranker.embeddings import FeatureHasher
from ranker.inputs import CandidateInputs, RequestInputs
from ranker.router import RouterDecision, RouterLog, TierRouter, router_features
from ranker.tiers import build_tier

__all__ = [
    "FORCED_REASON",
    "FeatureSource",
    "Lookup",
    "RankResult",
    "Ranker",
    "RankerModel",
    "load_model",
]

FORCED_REASON = "forced"
"""``RankResult.reason`` of a request scored with ``force_tier``."""

_USER_PREFIX = "user__"
_AD_PREFIX = "ad__"
_HISTORY = "history_len"
_ACTIVITY = "user_activity"


class FeatureSource(Protocol):
    """What reads a request's features: ``FeatureClient`` or ``FeatureStore``."""

    def get_request(
        self,
        *,
        user_group: str,
        user_id: int | str,
        candidate_group: str,
        candidate_ids: np.ndarray,
        user_features: Sequence[str] | None = ...,
        candidate_features: Sequence[str] | None = ...,
        as_of_us: int | None = None,
    ) -> RequestFeatures: ...


class Lookup(Protocol):
    """An embedding runtime: ``LocalLookup`` or ``ShardedLookup``."""

    def lookup(self, batch: LookupBatch) -> LookupResult: ...


@dataclasses.dataclass(frozen=True)
class RankerModel:
    """A trained bundle (from ``adrank train``).

    Attributes:
        roles: Column roles used in training.
        dims: Input widths and sizes of the first (smallest) tier; the tiers share the input
            widths and differ in layer sizes.
        tiers: Tier modules, smallest first, in eval mode.
        router: The router.
        plan_fingerprint: Plan the embeddings were trained under.
        max_sequence_len: Most recent behaviour items the tiers take.
        checkpoint_dir: The embedding checkpoint.
    """

    roles: FeatureRoles
    dims: TierDims
    tiers: tuple[RankerTier[Any], ...]
    router: TierRouter
    plan_fingerprint: str
    max_sequence_len: int
    checkpoint_dir: Path


def load_model(model_dir: str | Path) -> RankerModel:
    """Read ``ranker.json``, ``tiers.pt`` and ``router.json`` from ``model_dir``.

    Raises:
        NotFoundError: A missing file (named).
        InputError: A malformed file (named), or tier weights that do not fit the model.
    """
    d = Path(model_dir)
    doc = read_json_document(d / "ranker.json", "adrank.ranker", (1,))
    try:
        roles = FeatureRoles(**{k: tuple(v) for k, v in doc["roles"].items()})
        names = [TierName(name) for name in doc["tiers"]]
        # One dims object per tier (tiers differ in size), or one shared by all.
        raw = doc["dims"]
        per_tier = raw if all(n.value in raw for n in names) else {n.value: raw for n in names}
        tier_dims = {n: _tier_dims(per_tier[n.value]) for n in names}
        dims = tier_dims[names[0]]
        fingerprint = str(doc["plan_fingerprint"])
        max_len = int(doc["max_sequence_len"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"ranker.json lacks or mistypes a field: {exc!r}",
            source=str(d / "ranker.json"),
            hint="retrain the model with this version (adrank train)",
        ) from exc
    weights = d / "tiers.pt"
    if not weights.is_file():
        raise NotFoundError("file does not exist", source=str(weights), hint="run adrank train")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        tiers = []
        for name in names:
            tier = build_tier(name, tier_dims[name])
            tier.load_state_dict(state[name.value])
            tier.eval()
            tiers.append(tier)
    except (KeyError, RuntimeError, OSError, EOFError) as exc:
        raise InputError(
            f"cannot load the tier weights: {str(exc).splitlines()[0] if str(exc) else exc!r}",
            source=str(weights),
            hint="retrain the model (adrank train); tiers.pt must match ranker.json",
        ) from exc
    return RankerModel(
        roles=roles,
        dims=dims,
        tiers=tuple(tiers),
        router=TierRouter.load(d / "router.json"),
        plan_fingerprint=fingerprint,
        max_sequence_len=max_len,
        checkpoint_dir=d / "checkpoint",
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RankResult:
    """Scores of one request.

    Attributes:
        scores: float32 ``[candidates]`` click probabilities, in request order.
        tier: Name of the tier that scored.
        reason: Why: a :class:`ranker.router.RouteReason` value (``predicted_uplift``,
            ``cold_start``, ``latency_budget``) or :data:`FORCED_REASON`.
        feature_misses: Candidates without ad features (plus 1 if the user had none).
        timings_ms: ``features``, ``lookup``, ``score``, ``total`` (milliseconds).
        plan_fingerprint: Fingerprint of the plan the embeddings follow.
    """

    scores: np.ndarray
    tier: str
    reason: str
    feature_misses: int
    timings_ms: dict[str, float]
    plan_fingerprint: str = ""


class _LatencyModel:
    """Expected scoring time of each tier: ``fixed + per_candidate * candidates`` milliseconds.

    An exponentially weighted least-squares fit of the measured times on the candidate counts
    (weight 1/k for the k-th measurement, then 0.1, so it follows drift). With one candidate count
    seen so far the time is taken as proportional to the count. A tier not yet measured is
    expected to take 0 ms (it fits any budget until measured).
    """

    def __init__(self, tiers: int) -> None:
        self._seen = [0] * tiers
        # Weighted means of n, ms, n*n and n*ms per tier.
        self._moments = np.zeros((tiers, 4), dtype=np.float64)

    def observe(self, tier: int, n: int, ms: float) -> None:
        self._seen[tier] += 1
        a = max(1.0 / self._seen[tier], 0.1)
        obs = np.array([n, ms, n * n, n * ms], dtype=np.float64)
        self._moments[tier] += a * (obs - self._moments[tier])

    def expected_ms(self, num_candidates: int) -> np.ndarray:
        out = np.zeros(len(self._seen), dtype=np.float64)
        for t, (mx, my, mxx, mxy) in enumerate(self._moments):
            if not self._seen[t]:
                continue
            var = mxx - mx * mx
            per, fixed = (my / mx if mx > 0 else 0.0), 0.0
            if var > 1e-6 * max(mxx, 1.0):
                slope = (mxy - mx * my) / var
                intercept = my - slope * mx
                if slope >= 0 and intercept >= 0:
                    per, fixed = slope, intercept
            out[t] = fixed + per * num_candidates
        return out


class Ranker:
    """Ranks requests with a trained model, a feature source and an embedding runtime.

    Args:
        model: The trained bundle.
        plan: The plan (its fingerprint must match the model's).
        plan_dir: The plan directory (hashing sidecars).
        lookup: The embedding runtime serving the model's checkpoint.
        features: Feature source.
        router_log: Where decisions are recorded (None: not recorded).

    Raises:
        InputError: The plan is not the one the model was trained under.
    """

    def __init__(
        self,
        model: RankerModel,
        plan: ShardPlan,
        plan_dir: str | Path,
        lookup: Lookup,
        features: FeatureSource,
        router_log: RouterLog | None = None,
    ) -> None:
        if plan.inputs_fingerprint != model.plan_fingerprint:
            raise InputError(
                f"the model was trained under plan {model.plan_fingerprint}, not "
                f"{plan.inputs_fingerprint}",
                source=str(plan_dir),
                hint="serve with the plan the model was trained with",
            )
        self.model = model
        self.roles = model.roles
        self.hasher = FeatureHasher(plan, plan_dir)
        self.lookup = lookup
        self.features = features
        self.router_log = router_log
        self._lock = threading.Lock()
        self._lookup_lock = threading.Lock()
        self._latency = _LatencyModel(len(model.tiers))
        roles = self.roles
        self._ad_sparse = [f for f in roles.candidate_sparse if f not in ("ad_id", "position")]
        self._ad_dense = [c.removeprefix(_AD_PREFIX) for c in roles.candidate_dense]
        self._user_dense = [
            c[len(_USER_PREFIX) :] for c in roles.request_dense if c.startswith(_USER_PREFIX)
        ]
        # Ad features read per request, each once (``ad__bid`` and ``bid`` are the same feature).
        self._ad_reads = list(dict.fromkeys([*self._ad_sparse, *self._ad_dense]))
        self._sparse_context = tuple(f for f in roles.request_sparse if f != "user_id")
        self._dense_context = tuple(
            c for c in roles.request_dense if not c.startswith(_USER_PREFIX)
        )

    @property
    def tier_names(self) -> tuple[str, ...]:
        """Tier names, smallest first."""
        return self.model.router.tier_names

    @property
    def plan_fingerprint(self) -> str:
        """Fingerprint of the plan the embeddings follow."""
        return self.model.plan_fingerprint

    @property
    def sparse_context(self) -> tuple[str, ...]:
        """Request-level sparse columns a request's context must hold (ids)."""
        return self._sparse_context

    @property
    def sequence_context(self) -> tuple[str, ...]:
        """Sequence columns a request's context must hold (lists of ids of equal length)."""
        return self.roles.sequences

    @property
    def dense_context(self) -> tuple[str, ...]:
        """Dense columns a request's context must hold (numbers)."""
        return self._dense_context

    def expected_latency_ms(self, num_candidates: int) -> np.ndarray:
        """Expected scoring latency of each tier for ``num_candidates`` (0 until measured)."""
        with self._lock:
            return self._latency.expected_ms(num_candidates)

    def rank(
        self,
        user_id: int,
        ad_ids: Sequence[int] | np.ndarray,
        context: Mapping[str, Sequence[int] | np.ndarray | int | float],
        *,
        latency_budget_ms: float | None = None,
        request_id: int = 0,
        force_tier: str | None = None,
        deadline_s: float | None = None,
        as_of_us: int | None = None,
    ) -> RankResult:
        """Score ``ad_ids`` for ``user_id`` (see the module docstring).

        Args:
            user_id: Raw user id.
            ad_ids: Raw candidate ad ids, in request order.
            context: Request-level values by column name (:attr:`sparse_context`,
                :attr:`sequence_context`, :attr:`dense_context`): sparse ids (an int or a list),
                sequences (lists, most recent first) and dense values (numbers). Other keys are
                ignored.
            latency_budget_ms: Budget of the whole call in milliseconds: a tier whose expected
                scoring time exceeds what is left after features and lookups is downgraded
                (None: no budget).
            request_id: For the router log.
            force_tier: Score with this tier instead of routing (benchmarks, always-X baselines).
            deadline_s: ``time.monotonic()`` by which the call must be done; checked before the
                lookups and before scoring (None: no deadline).
            as_of_us: Read the features as of this time, microseconds (None: newest versions);
                replaying logged requests passes each request's time.

        Raises:
            InputError: No candidates, a missing context column or one of the wrong kind,
                sequences of different lengths, an unknown tier, a bad budget (all at once).
            DeadlineExceededError: ``deadline_s`` passed before scoring.
        """
        t0 = time.perf_counter()
        ads, tier_index = self._validate(user_id, ad_ids, context, latency_budget_ms, force_tier)
        n = len(ads)
        feats = self.features.get_request(
            user_group="user",
            user_id=int(user_id),
            candidate_group="ad",
            candidate_ids=ads,
            user_features=self._user_dense or None,
            candidate_features=self._ad_reads or None,
            as_of_us=as_of_us,
        )
        t1 = time.perf_counter()
        _check_deadline(deadline_s, "after the feature read", t0)
        ad_table = feats.candidates.to_arrow()
        user_table = feats.user.to_arrow()
        misses = int((~np.asarray(feats.candidates.found)).sum()) + int(
            not bool(np.asarray(feats.user.found)[0])
        )
        # A request's few hundred ids hash on numba's serial kernel (adrank.hashing picks it
        # below 64k keys): a parallel launch has a millisecond tail on a busy machine.
        batch = self._lookup_batch(user_id, ads, context, ad_table)
        with self._lookup_lock:
            result = self.lookup.lookup(batch)
        t2 = time.perf_counter()
        _check_deadline(deadline_s, "after the embedding lookups", t0)
        req, cand = self._inputs(result, context, user_table, ad_table, n)
        x = router_features(
            np.array([self._history_len(context)]),
            np.array([_number(context.get(_ACTIVITY))]),
            np.array([n]),
        )
        decision: RouterDecision | None = None
        if tier_index is not None:
            chosen, reason = tier_index, FORCED_REASON
        else:
            left = None
            if latency_budget_ms is not None:  # what is left of the budget for scoring
                left = latency_budget_ms - (time.perf_counter() - t0) * 1e3
            decision = self.model.router.route(
                x,
                latency_budget_ms=left,
                expected_latency_ms=self.expected_latency_ms(n)[None, :],
            )[0]
            chosen, reason = decision.tier, decision.reason.value
        ts = time.perf_counter()
        with torch.inference_mode():
            scores = torch.sigmoid(self.model.tiers[chosen](req, cand)).numpy()
        t3 = time.perf_counter()
        with self._lock:
            self._latency.observe(chosen, n, (t3 - ts) * 1e3)
        if self.router_log is not None and decision is not None:
            self.router_log.record(request_id, x[0], decision)
        return RankResult(
            scores=scores.astype(np.float32, copy=False),
            tier=self.tier_names[chosen],
            reason=reason,
            feature_misses=misses,
            timings_ms={
                "features": (t1 - t0) * 1e3,
                "lookup": (t2 - t1) * 1e3,
                "score": (t3 - t2) * 1e3,
                "total": (t3 - t0) * 1e3,
            },
            plan_fingerprint=self.model.plan_fingerprint,
        )

    # --- checks -----------------------------------------------------------------------------------
    def _validate(
        self,
        user_id: Any,
        ad_ids: Sequence[int] | np.ndarray,
        context: Mapping[str, Any],
        latency_budget_ms: float | None,
        force_tier: str | None,
    ) -> tuple[np.ndarray, int | None]:
        """The candidates as int64 and the forced tier's index; every problem at once."""
        problems: list[InputError] = []
        if not _is_int(user_id):
            problems.append(
                InputError(f"expected an integer id, found {user_id!r}", source="user_id")
            )
        ads = _int_ids(ad_ids)
        if ads is None:
            problems.append(InputError("expected a list of integer ad ids", source="ad_ids"))
        elif ads.size == 0:
            problems.append(
                InputError(
                    "a request needs at least one candidate ad, found none",
                    source="ad_ids",
                    hint="send the candidate ad ids to score",
                )
            )
        missing = [
            c
            for c in (*self._sparse_context, *self.sequence_context, *self._dense_context)
            if c not in context
        ]
        if missing:
            problems.append(
                InputError(
                    f"context lacks the request columns {missing}",
                    source="context",
                    hint=f"send every request-level column the model was trained with: ids for "
                    f"{list(self._sparse_context)}, equal-length id lists for "
                    f"{list(self.sequence_context)}, numbers for {list(self._dense_context)}",
                )
            )
        for c in self._sparse_context:
            if c in context and _int_ids(context[c]) is None:
                problems.append(
                    InputError(
                        f"expected integer ids, found {_short(context[c])}",
                        source=f"context[{c}]",
                    )
                )
        lengths: dict[str, int] = {}
        for c in self.sequence_context:
            if c not in context:
                continue
            ids = _int_ids(context[c])
            if ids is None:
                problems.append(
                    InputError(
                        f"expected a list of integer ids, found {_short(context[c])}",
                        source=f"context[{c}]",
                    )
                )
            else:
                lengths[c] = ids.size
        if len(set(lengths.values())) > 1:
            problems.append(
                InputError(
                    f"the sequence columns describe the same items, so they need one length; "
                    f"found {lengths}",
                    source=f"context[{', '.join(lengths)}]",
                    hint="send one entry per behaviour item in every sequence column",
                )
            )
        for c in self._dense_context:
            if c in context and not _is_number(context[c]):
                problems.append(
                    InputError(
                        f"expected a finite number, found {_short(context[c])}",
                        source=f"context[{c}]",
                    )
                )
        tier_index = None
        if force_tier is not None:
            if force_tier in self.tier_names:
                tier_index = self.tier_names.index(force_tier)
            else:
                problems.append(
                    InputError(
                        f"unknown tier {force_tier!r}; the model has {list(self.tier_names)}",
                        source="force_tier",
                    )
                )
        if latency_budget_ms is not None and not (
            _is_number(latency_budget_ms) and latency_budget_ms >= 0
        ):
            problems.append(
                InputError(
                    f"expected a number of milliseconds >= 0, found {latency_budget_ms!r}",
                    source="latency_budget_ms",
                )
            )
        if problems:
            raise InputError.from_problems(problems)
        assert ads is not None
        return ads, tier_index

    def _history_len(self, context: Mapping[str, Any]) -> float:
        """Items in the user's history: ``history_len`` when sent, else the sequence's length."""
        if _HISTORY in context:
            return _number(context[_HISTORY])
        if self.sequence_context:
            return float(len(_as_ids(context[self.sequence_context[0]])))
        return 0.0

    # --- building the model inputs ----------------------------------------------------------------
    def _lookup_batch(
        self,
        user_id: int,
        ads: np.ndarray,
        context: Mapping[str, Any],
        ad_table: Any,
    ) -> LookupBatch:
        """Hashed ids: one bag per request-level feature, one per candidate and feature."""
        n = len(ads)
        req_names, req_values, req_lengths = [], [], []
        for f in (*self.roles.request_sparse, *self.roles.sequences):
            raw = np.array([user_id], dtype=np.int64) if f == "user_id" else _as_ids(context[f])
            if f in self.roles.sequences:
                raw = raw[: self.model.max_sequence_len]
            req_names.append(f)
            req_values.append(self.hasher.hashed(f, raw))
            req_lengths.append(len(raw))
        cand_values, cand_lengths = [], []
        ones = np.ones(n, dtype=np.int64)
        for f in self.roles.candidate_sparse:
            if f == "ad_id":
                keys, lengths = ads, ones
            elif f == "position":
                keys, lengths = np.arange(n, dtype=np.int64), ones
            else:
                col = ad_table.column(f)
                valid = np.asarray(col.is_valid(), dtype=bool)
                raw = col.fill_null(0).to_numpy(zero_copy_only=False)
                keys = np.asarray(raw, dtype=np.int64)[valid]
                lengths = valid.astype(np.int64)  # an ad without the feature: an empty bag
            cand_values.append(self.hasher.hashed(f, keys))
            cand_lengths.append(lengths)
        candidates = JaggedIds(
            features=tuple(self.roles.candidate_sparse),
            values=torch.from_numpy(np.concatenate(cand_values)),
            lengths=torch.from_numpy(np.concatenate(cand_lengths)),
            batch_size=n,
        )
        requests = JaggedIds(
            features=tuple(req_names),
            values=torch.from_numpy(np.concatenate(req_values)),
            lengths=torch.tensor(req_lengths, dtype=torch.int64),
            batch_size=1,
        )
        return LookupBatch(candidates, requests)

    def _inputs(
        self,
        result: LookupResult,
        context: Mapping[str, Any],
        user_table: Any,
        ad_table: Any,
        n: int,
    ) -> tuple[RequestInputs, CandidateInputs]:
        """Tier inputs, dense values squashed as in training (``sign(x) * log1p(|x|)``)."""
        assert result.requests is not None
        req_pooled = result.requests.to_dict()
        cand_pooled = result.candidates.to_dict()
        pooled_u = torch.cat([req_pooled[f] for f in self.roles.request_sparse], dim=1)
        pooled_a = torch.cat([cand_pooled[f] for f in self.roles.candidate_sparse], dim=1)
        dense_u = np.zeros((1, len(self.roles.request_dense)), dtype=np.float64)
        for j, c in enumerate(self.roles.request_dense):
            if c.startswith(_USER_PREFIX):
                v = _first(user_table, c[len(_USER_PREFIX) :])
            else:
                v = context.get(c)
            dense_u[0, j] = _number(v)
        dense_a = np.zeros((n, len(self.roles.candidate_dense)), dtype=np.float64)
        for j, name in enumerate(self._ad_dense):
            if name in ad_table.column_names:
                col = ad_table.column(name).fill_null(0).to_numpy(zero_copy_only=False)
                dense_a[:, j] = col
        if self.roles.sequences:
            seqs = [result.sequences[f].values() for f in self.roles.sequences]
            seq = torch.cat(seqs, dim=1).unsqueeze(0)
            mask = torch.ones((1, seq.shape[1]), dtype=torch.bool)
        else:
            seq, mask = torch.zeros((1, 0, 0)), torch.zeros((1, 0), dtype=torch.bool)
        req = RequestInputs(pooled_u, torch.from_numpy(_squash(dense_u)), seq, mask)
        cand = CandidateInputs(pooled_a, torch.from_numpy(_squash(dense_a)), None)
        return req, cand


def _check_deadline(deadline_s: float | None, when: str, t0: float) -> None:
    if deadline_s is not None and time.monotonic() >= deadline_s:
        raise DeadlineExceededError(
            f"the call's deadline passed {when} ({(time.perf_counter() - t0) * 1e3:.1f} ms into "
            "it); nothing was scored",
            source="deadline",
            hint="give the call a longer deadline, or send fewer candidates",
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _int_ids(v: Any) -> np.ndarray | None:
    """``v`` (an int or a sequence of ints) as a 1-D int64 array; None when it is not ids.

    uint64 ids of 2**63 and above keep their 64 bits, reinterpreted as int64 (as
    :func:`adrank.hashing.id_keys_from_arrow` does).
    """
    if _is_int(v):
        v = [v]
    elif isinstance(v, (str, bytes, Mapping)) or not isinstance(v, (Sequence, np.ndarray)):
        return None
    try:
        arr = np.asarray(v)
    except (ValueError, OverflowError):  # ragged nesting, or an int beyond 64 bits
        return None
    if arr.ndim != 1 or not (arr.dtype.kind in "iu" or arr.size == 0):
        return None
    return arr.astype(np.int64, copy=False)


def _as_ids(v: Any) -> np.ndarray:
    """Validated ids (see :func:`_int_ids`) as int64."""
    ids = _int_ids(v)
    assert ids is not None, "validated before"
    return ids


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _first(table: Any, name: str) -> Any:
    if name not in table.column_names or table.num_rows == 0:
        return None
    return table.column(name)[0].as_py()


def _number(v: Any) -> float:
    return 0.0 if v is None else float(v)


def _squash(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)`` in float64, then float32: what training does to dense values."""
    return (np.sign(x) * np.log1p(np.abs(x))).astype(np.float32)


def _tier_dims(doc: dict[str, Any]) -> TierDims:
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()}
    return TierDims(**values)
