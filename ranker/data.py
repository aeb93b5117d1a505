"""Request-structured training data: logs joined point-in-time with the feature store, on the fly.

A training step sees whole requests: one row per request (the user, context, behaviour sequences,
and the user's feature-store features as of the request time) and one row per candidate ad (its ids,
dense values, the ad's feature-store features as of the request time, and the click label). Nothing
is copied: ``requests.parquet`` and ``impressions.parquet`` (from ``adrank synth`` or logs of the
same shape) are streamed through :func:`feature_service.iter_joined_batches` (point-in-time
correct, TTL honoured) and zipped by ``request_id`` (both files are in request order).

Which columns play which part (:class:`FeatureRoles`) follows from the plan and the two schemas:

* request sparse: plan features in ``requests.parquet`` with pooled tables (user_id, device, ...);
* sequences: plan features in ``requests.parquet`` with unpooled tables (``adrank plan
  --sequence-features``), one embedding per item (user_clicked_ads, user_clicked_categories);
* candidate sparse: plan features found only in ``impressions.parquet`` (ad_id, category, ...);
* dense: numeric non-key columns of each file plus the joined groups' numeric features
  (``user__activity_7d``, ``ad__ctr_estimate``, ...), squashed by ``sign(x) * log1p(|x|)`` so
  counts and bids are on one scale (nulls: 0).

Ids leave here as raw int64 id keys; :mod:`ranker.embeddings` hashes them with the plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from adrank.errors import InputError
from adrank.types import PoolingType, ShardPlan
from feature_service import FeatureStore, JoinSpec, iter_joined_batches

__all__ = [
    "AD_GROUP",
    "LABEL",
    "REQUEST_KEY",
    "TIME_COLUMN",
    "USER_GROUP",
    "FeatureRoles",
    "Jagged",
    "RequestBatch",
    "iter_request_batches",
    "time_split",
]

REQUEST_KEY = "request_id"
TIME_COLUMN = "ts"
LABEL = "label"
USER_GROUP = JoinSpec("user", "user_id")
AD_GROUP = JoinSpec("ad", "ad_id")
_NOT_DENSE = {REQUEST_KEY, TIME_COLUMN, LABEL, "user_id", "ad_id"}


@dataclasses.dataclass(frozen=True, slots=True)
class Jagged:
    """Bags of int64 id keys: ``values`` concatenated, ``lengths`` per bag."""

    values: np.ndarray
    lengths: np.ndarray


@dataclasses.dataclass(frozen=True, slots=True)
class FeatureRoles:
    """Which columns feed which input of the tiers.

    Attributes:
        request_sparse: Pooled plan features, one bag per request.
        sequences: Unpooled plan features, one embedding per item of the request's sequence
            (aligned item by item across these features).
        candidate_sparse: Pooled plan features, one bag per candidate.
        request_dense: Numeric request columns (``requests.parquet`` and the user group).
        candidate_dense: Numeric candidate columns (``impressions.parquet`` and the ad group).
        candidate_from_store: Candidate sparse features read from the ad group (as of the
            request time) rather than from the impression log, because serving reads them there:
            training and serving then see the same values (an ad unknown to the store at that
            time has an empty bag in both).
    """

    request_sparse: tuple[str, ...]
    sequences: tuple[str, ...]
    candidate_sparse: tuple[str, ...]
    request_dense: tuple[str, ...]
    candidate_dense: tuple[str, ...]
    candidate_from_store: tuple[str, ...] = ()

    @classmethod
    def infer(
        cls,
        plan: ShardPlan,
        requests_schema: pa.Schema,
        impressions_schema: pa.Schema,
        user_features: Sequence[str] = (),
        ad_features: Sequence[str] = (),
        ad_id_features: Sequence[str] = (),
    ) -> FeatureRoles:
        """Roles from the plan and the two files' schemas (see the module docstring).

        Args:
            plan: The plan (its features get embeddings).
            requests_schema: Schema of ``requests.parquet``.
            impressions_schema: Schema of ``impressions.parquet``.
            user_features: Numeric features of the user group, joined as ``user__<name>``.
            ad_features: Numeric features of the ad group, joined as ``ad__<name>``; an
                impression column of the same name is left out (serving reads the store's).
            ad_id_features: Integer id features of the ad group (advertiser_id, category...):
                candidate sparse features of those names are read from the store.

        Raises:
            InputError: A plan feature found in neither file, or no candidate features.
        """
        pooling = {f.name: t.pooling for t in plan.tables for f in t.features}
        req_cols, imp_cols = set(requests_schema.names), set(impressions_schema.names)
        missing = sorted(f for f in pooling if f not in req_cols and f not in imp_cols)
        if missing:
            raise InputError(
                f"plan features {missing} are in neither requests.parquet nor impressions.parquet",
                source="plan",
                hint="plan from stats over the same logs",
            )
        request_sparse = tuple(
            f for f in sorted(pooling) if f in req_cols and pooling[f] is not PoolingType.NONE
        )
        sequences = tuple(
            f for f in sorted(pooling) if f in req_cols and pooling[f] is PoolingType.NONE
        )
        candidate_sparse = tuple(
            f for f in sorted(pooling) if f not in req_cols and pooling[f] is not PoolingType.NONE
        )
        if not candidate_sparse:
            raise InputError(
                "the plan has no candidate-level (impression-only) features",
                source="plan",
                hint="plan from stats over impressions.parquet and requests.parquet",
            )
        request_dense = tuple(
            n
            for n in requests_schema.names
            if n not in _NOT_DENSE and n not in pooling and _numeric(requests_schema.field(n).type)
        ) + tuple(f"user__{n}" for n in user_features)
        candidate_dense = tuple(
            n
            for n in impressions_schema.names
            if n not in _NOT_DENSE
            and n not in pooling
            and n not in req_cols
            and n not in ad_features
            and _numeric(impressions_schema.field(n).type)
        ) + tuple(f"ad__{n}" for n in ad_features)
        from_store = tuple(f for f in candidate_sparse if f in ad_id_features)
        return cls(
            request_sparse, sequences, candidate_sparse, request_dense, candidate_dense, from_store
        )


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


@dataclasses.dataclass(frozen=True, slots=True)
class RequestBatch:
    """Whole requests for one training or evaluation step (raw id keys, not yet hashed).

    Attributes:
        request_ids: int64 ``[R]``.
        ts_s: int64 ``[R]`` request time, epoch seconds.
        request_sparse: Feature -> one bag per request.
        sequences: Feature -> one bag (the sequence, most recent first) per request.
        request_dense: float32 ``[R, len(roles.request_dense)]``.
        candidate_sparse: Feature -> one bag per candidate.
        candidate_dense: float32 ``[C, len(roles.candidate_dense)]``.
        candidate_request: int64 ``[C]``: row of the candidate's request.
        labels: float32 ``[C]`` clicks.
        history_len: int64 ``[R]`` items in the user's whole history (0 = cold start), when the
            logs have it (else zeros).
    """

    request_ids: np.ndarray
    ts_s: np.ndarray
    request_sparse: dict[str, Jagged]
    sequences: dict[str, Jagged]
    request_dense: np.ndarray
    candidate_sparse: dict[str, Jagged]
    candidate_dense: np.ndarray
    candidate_request: np.ndarray
    labels: np.ndarray
    history_len: np.ndarray

    @property
    def num_requests(self) -> int:
        return len(self.request_ids)

    @property
    def num_candidates(self) -> int:
        return len(self.labels)


def time_split(requests_path: str | Path, holdout_days: float = 1.0) -> int:
    """The epoch second that starts the held-out tail: the last ``holdout_days`` of requests.

    Raises:
        InputError: No requests, or the logs span less than twice the held-out time.
    """
    ts = pq.read_table(requests_path, columns=[TIME_COLUMN]).column(TIME_COLUMN)
    if len(ts) == 0:
        raise InputError("no requests", source=str(requests_path))
    secs = pc.cast(ts, pa.timestamp("s", tz="UTC")).cast(pa.int64())
    lo, hi = pc.min(secs).as_py(), pc.max(secs).as_py()
    cutoff = int(hi - holdout_days * 86_400)
    if cutoff - lo < holdout_days * 86_400:
        raise InputError(
            f"the logs span {(hi - lo) / 86_400:.1f} days; holding out the last {holdout_days:g} "
            "leaves too little to train on",
            source=str(requests_path),
            hint="synthesize more days or hold out less",
        )
    return cutoff


def iter_request_batches(
    logs_dir: str | Path,
    store: FeatureStore,
    roles: FeatureRoles,
    *,
    requests_per_batch: int = 64,
    start_s: int | None = None,
    stop_s: int | None = None,
) -> Iterator[RequestBatch]:
    """Stream whole requests joined with the user and ad groups point-in-time.

    Args:
        logs_dir: Directory with ``requests.parquet`` and ``impressions.parquet``.
        store: Feature store holding the ``user`` and ``ad`` groups.
        roles: Column roles.
        requests_per_batch: Requests per batch (the last one may be shorter).
        start_s: Keep requests at or after this epoch second (None: from the start).
        stop_s: Keep requests before this epoch second (None: to the end).

    Yields:
        Batches in request order. Memory stays bounded by a few batches.
    """
    logs = Path(logs_dir)
    user_spec = _spec(USER_GROUP, roles.request_dense, "user__")
    ad_spec = _spec(
        AD_GROUP,
        roles.candidate_dense + tuple(f"ad__{f}" for f in roles.candidate_from_store),
        "ad__",
    )
    req_iter = iter(
        iter_joined_batches(
            store,
            str(logs / "requests.parquet"),
            [user_spec] if user_spec.features else [],
            timestamp_column=TIME_COLUMN,
            separator="__",
            batch_rows=max(requests_per_batch, 256),
        )
    )
    imp_iter = iter(
        iter_joined_batches(
            store,
            str(logs / "impressions.parquet"),
            [ad_spec] if ad_spec.features else [],
            timestamp_column=TIME_COLUMN,
            separator="__",
            batch_rows=8192,
        )
    )
    pending_imp: list[pa.RecordBatch] = []
    pending_req: list[pa.RecordBatch] = []
    imp_done = False
    for rb in req_iter:
        secs = pc.cast(rb.column(TIME_COLUMN), pa.timestamp("s", tz="UTC")).cast(pa.int64())
        keep = np.ones(rb.num_rows, dtype=bool)
        if start_s is not None:
            keep &= secs.to_numpy(zero_copy_only=False) >= start_s
        if stop_s is not None:
            keep &= secs.to_numpy(zero_copy_only=False) < stop_s
        if not keep.any():
            continue
        pending_req.append(rb.filter(pa.array(keep)))
        reqs = pa.Table.from_batches(pending_req).combine_chunks()
        while reqs.num_rows >= requests_per_batch:
            chunk, reqs = reqs.slice(0, requests_per_batch), reqs.slice(requests_per_batch)
            imps, pending_imp, imp_done = _impressions_for(chunk, imp_iter, pending_imp, imp_done)
            yield _make_batch(chunk, imps, roles)
        pending_req = reqs.to_batches() if reqs.num_rows else []
    if pending_req:
        reqs = pa.Table.from_batches(pending_req)
        imps, pending_imp, imp_done = _impressions_for(reqs, imp_iter, pending_imp, imp_done)
        yield _make_batch(reqs, imps, roles)


def _spec(base: JoinSpec, dense: tuple[str, ...], prefix: str) -> JoinSpec:
    feats = tuple(n[len(prefix) :] for n in dense if n.startswith(prefix))
    return JoinSpec(base.group, base.entity_column, features=feats)


def _impressions_for(
    reqs: pa.Table,
    imp_iter: Iterator[pa.RecordBatch],
    pending: list[pa.RecordBatch],
    done: bool,
) -> tuple[pa.Table, list[pa.RecordBatch], bool]:
    """Impression rows of the requests in ``reqs`` (both streams are in request_id order)."""
    ids = reqs.column(REQUEST_KEY).to_numpy()
    lo, hi = int(ids.min()), int(ids.max())

    def last_id() -> int:
        return int(pending[-1].column(REQUEST_KEY)[-1].as_py()) if pending else -(2**62)

    while not done and last_id() <= hi:
        try:
            pending.append(next(imp_iter))
        except StopIteration:
            done = True
    table = pa.Table.from_batches(pending) if pending else None
    if table is None or table.num_rows == 0:
        return _empty_like(reqs), [], done
    rid = table.column(REQUEST_KEY).to_numpy()
    # Rows before lo belong to requests filtered out (time range): drop them.
    start = int(np.searchsorted(rid, lo, side="left"))
    stop = int(np.searchsorted(rid, hi, side="right"))
    sel = table.slice(start, stop - start)
    mask = np.isin(sel.column(REQUEST_KEY).to_numpy(), ids)
    rest = table.slice(stop)
    return sel.filter(pa.array(mask)), rest.to_batches(), done


def _empty_like(reqs: pa.Table) -> pa.Table:
    raise InputError(
        f"no impressions for requests {reqs.column(REQUEST_KEY)[0]}..",
        source="impressions.parquet",
        hint="requests.parquet and impressions.parquet must come from the same logs",
    )


def _jagged(col: pa.ChunkedArray | pa.Array) -> Jagged:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy().astype(np.int64)
        values = pc.fill_null(pc.list_flatten(arr), 0).to_numpy(zero_copy_only=False)
        return Jagged(values.astype(np.int64), lengths)
    valid = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    values = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return Jagged(values[valid], valid.astype(np.int64))


def _dense(table: pa.Table, names: tuple[str, ...]) -> np.ndarray:
    out = np.zeros((table.num_rows, len(names)), dtype=np.float32)
    for j, n in enumerate(names):
        if n not in table.column_names:
            continue
        x = pc.fill_null(pc.cast(table.column(n), pa.float64()), 0.0).to_numpy()
        out[:, j] = np.sign(x) * np.log1p(np.abs(x))
    return out


def _make_batch(reqs: pa.Table, imps: pa.Table, roles: FeatureRoles) -> RequestBatch:
    req_ids = reqs.column(REQUEST_KEY).to_numpy()
    row_of = {int(r): i for i, r in enumerate(req_ids)}
    cand_req = np.fromiter(
        (row_of[int(r)] for r in imps.column(REQUEST_KEY).to_numpy()),
        dtype=np.int64,
        count=imps.num_rows,
    )
    ts = pc.cast(reqs.column(TIME_COLUMN), pa.timestamp("s", tz="UTC")).cast(pa.int64())
    history = (
        pc.fill_null(reqs.column("history_len"), 0).to_numpy().astype(np.int64)
        if "history_len" in reqs.column_names
        else np.zeros(reqs.num_rows, dtype=np.int64)
    )
    return RequestBatch(
        request_ids=req_ids.astype(np.int64),
        ts_s=ts.to_numpy(),
        request_sparse={f: _jagged(reqs.column(f)) for f in roles.request_sparse},
        sequences={f: _jagged(reqs.column(f)) for f in roles.sequences},
        request_dense=_dense(reqs, roles.request_dense),
        candidate_sparse={
            f: _jagged(imps.column(f"ad__{f}" if f in roles.candidate_from_store else f))
            for f in roles.candidate_sparse
        },
        candidate_dense=_dense(imps, roles.candidate_dense),
        candidate_request=cand_req,
        labels=np.array(pc.cast(imps.column(LABEL), pa.float32()).to_numpy(), dtype=np.float32),
        history_len=history,
    )
