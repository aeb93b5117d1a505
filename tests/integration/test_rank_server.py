"""The gRPC Rank service over a model trained here (synth -> stats -> plan -> prune -> ingest ->
train through ``adrank.cli.main``): Rank over gRPC equals Ranker.rank in process, exactly; the
router's cold-start and latency-budget rules through the wire; health, reflection, metrics, bad
requests, deadlines; and ``adrank serve --devices 2 --features`` in a subprocess (the real
2-rank sharded runtime, features over gRPC) equal to one device."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families

from adrank.cli import main
from adrank.errors import DeadlineExceededError, InputError
from adrank.planfile import read_plan
from adrank.rpc import ListenConfig
from adrank.types import ShardPlan
from embed_store.checkpoint import open_checkpoint
from embed_store.local_lookup import LocalLookup
from embed_store.sharded_runtime import load_remaps
from feature_service import FeatureStore
from feature_service import build_server as build_feature_server
from feature_service.server import ServerConfig
from ranker import server as server_module
from ranker.client import RankClient
from ranker.data import iter_request_batches, time_split
from ranker.embeddings import PlanEmbeddings
from ranker.metrics_export import RankMetrics, serve_metrics
from ranker.pb.v1 import ranker_pb2 as pb
from ranker.pb.v1 import ranker_pb2_grpc as pb_grpc
from ranker.serving import FORCED_REASON, Ranker, RankerModel, RankResult, load_model
from ranker.train import to_inputs
from tests.serve_cli import ServeCli

pytestmark = pytest.mark.integration

CONTEXT_COLUMNS = (
    "device",
    "geo",
    "hour",
    "user_clicked_ads",
    "user_clicked_categories",
    "user_activity",
    "history_len",
)


@dataclass(frozen=True)
class Pipeline:
    logs: Path
    plan_dir: Path
    store: Path
    model_dir: Path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The smallest pipeline that trains: 20k impressions over 4 days (2 train, 1 router, 1 held
    out), 16-wide embeddings on a 2-device plan, pruned, features ingested."""
    d = tmp_path_factory.mktemp("rank_pipeline")
    logs, plan, store, model = d / "logs", d / "plan", d / "store", d / "model"
    steps = [
        ["synth", "-o", str(logs), "--rows", "20000", "--days", "4"],
        ["stats", str(logs / "impressions.parquet"), str(logs / "requests.parquet")]
        + ["-o", str(d / "stats.json")],
        ["plan", "--stats", str(d / "stats.json"), "--devices", "2", "--device-memory", "64MiB"]
        + ["--memory-budget", "2MiB", "--dim", "16", "-o", str(plan)]
        + ["--sequence-features", "user_clicked_ads,user_clicked_categories"],
        ["prune", "--plan", str(plan), "--holdout-days", "1"]
        + [str(logs / "impressions.parquet"), str(logs / "requests.parquet")],
    ]
    for g in ("user", "ad"):
        steps.append(
            ["ingest", "--store", str(store), "--group", g, "--entity-column", f"{g}_id"]
            + ["--timestamp-column", "event_ts", "--created-column", "created_ts"]
            + [str(logs / "snapshots" / f"{g}s.parquet")]
        )
    steps.append(
        ["train", "--logs", str(logs), "--store", str(store), "--plan", str(plan)]
        + ["-o", str(model), "--max-sequence-len", "16"]
    )
    for argv in steps:
        assert main(["-q", *argv]) == 0, argv
    return Pipeline(logs, plan, store, model)


@pytest.fixture(scope="module")
def model(pipeline: Pipeline) -> RankerModel:
    return load_model(pipeline.model_dir)


@pytest.fixture(scope="module")
def plan(pipeline: Pipeline) -> ShardPlan:
    return read_plan(pipeline.plan_dir)


@pytest.fixture(scope="module")
def store(pipeline: Pipeline) -> Iterator[FeatureStore]:
    with FeatureStore.open(pipeline.store, read_only=True) as s:
        yield s


@pytest.fixture(scope="module")
def lookup(pipeline: Pipeline, plan: ShardPlan, model: RankerModel) -> Iterator[LocalLookup]:
    ckpt = open_checkpoint(model.checkpoint_dir)
    with LocalLookup.single_device(
        plan, ckpt.read_block, load_remaps(plan, pipeline.plan_dir)
    ) as runtime:
        yield runtime


def _ranker(
    pipeline: Pipeline, model: RankerModel, plan: ShardPlan, lookup: Any, store: Any
) -> Ranker:
    return Ranker(model, plan, pipeline.plan_dir, lookup, store)


@pytest.fixture(scope="module")
def reference(
    pipeline: Pipeline, model: RankerModel, plan: ShardPlan, lookup: LocalLookup, store: Any
) -> Ranker:
    """The ranker in this process, to compare the server's answers with."""
    return _ranker(pipeline, model, plan, lookup, store)


@pytest.fixture(scope="module")
def server(
    pipeline: Pipeline, model: RankerModel, plan: ShardPlan, lookup: LocalLookup, store: Any
) -> Iterator[server_module.RankServer]:
    s = server_module.build_server(
        _ranker(pipeline, model, plan, lookup, store), ListenConfig(port=0)
    )
    s.start()
    yield s
    s.stop(0)


@pytest.fixture(scope="module")
def client(server: server_module.RankServer) -> Iterator[RankClient]:
    with RankClient(server.address, timeout_s=30) as c:
        yield c


@dataclass(frozen=True)
class Request:
    request_id: int
    user_id: int
    ad_ids: list[int]
    context: dict[str, Any]


@pytest.fixture(scope="module")
def held_out(pipeline: Pipeline) -> list[Request]:
    """The last 6 logged requests with their logged candidates and context."""
    reqs = pq.read_table(pipeline.logs / "requests.parquet")
    reqs = reqs.slice(reqs.num_rows - 6)
    imps = pq.read_table(pipeline.logs / "impressions.parquet", columns=["request_id", "ad_id"])
    out = []
    for row in reqs.to_pylist():
        mask = pc.equal(imps.column("request_id"), row["request_id"])
        ads = imps.filter(mask).column("ad_id").to_pylist()
        out.append(
            Request(
                row["request_id"],
                row["user_id"],
                ads,
                {c: row[c] for c in CONTEXT_COLUMNS},
            )
        )
    return out


def _assert_same(got: RankResult, want: RankResult) -> None:
    assert got.scores.dtype == np.float32 and np.array_equal(got.scores, want.scores)
    assert (got.tier, got.reason) == (want.tier, want.reason)
    assert got.feature_misses == want.feature_misses
    assert got.plan_fingerprint == want.plan_fingerprint != ""


# ---------------------------------------------------------------------- scores


def test_rank_over_grpc_equals_the_ranker_in_process(
    client: RankClient, reference: Ranker, held_out: list[Request]
) -> None:
    for r in held_out:
        for tier in (None, *reference.tier_names):
            got = client.rank(r.user_id, r.ad_ids, r.context, force_tier=tier, request_id=7)
            want = reference.rank(r.user_id, r.ad_ids, r.context, force_tier=tier)
            _assert_same(got, want)
            assert len(got.scores) == len(r.ad_ids)
            assert ((got.scores > 0) & (got.scores < 1)).all()
            assert got.reason == FORCED_REASON if tier else got.reason != FORCED_REASON
            assert set(got.timings_ms) == {"features", "lookup", "score", "total"}
            assert got.timings_ms["total"] >= got.timings_ms["score"] > 0


def test_scores_come_back_in_request_order(client: RankClient, held_out: list[Request]) -> None:
    """Each tier scores a candidate from its own ids and its place in the request (position), so
    the first score of [a, b] is a's score alone and the first of [b, a] is b's."""
    r = held_out[0]
    a, b = r.ad_ids[:2]
    for tier in client.describe().tiers:
        alone_a = client.rank(r.user_id, [a], r.context, force_tier=tier).scores
        alone_b = client.rank(r.user_id, [b], r.context, force_tier=tier).scores
        ab = client.rank(r.user_id, [a, b], r.context, force_tier=tier).scores
        ba = client.rank(r.user_id, [b, a], r.context, force_tier=tier).scores
        np.testing.assert_allclose(ab[0], alone_a[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(ba[0], alone_b[0], rtol=0, atol=1e-6)
        assert ab.shape == ba.shape == (2,) and alone_a[0] != alone_b[0]


def test_unknown_ads_and_users_are_feature_misses(
    client: RankClient, reference: Ranker, held_out: list[Request]
) -> None:
    r = held_out[0]
    unknown = [-1, -2]  # synth ids are positive: never in the store
    got = client.rank(-12345, [*r.ad_ids[:2], *unknown], r.context, force_tier="small")
    want = reference.rank(-12345, [*r.ad_ids[:2], *unknown], r.context, force_tier="small")
    _assert_same(got, want)
    known_ads = reference.rank(-12345, r.ad_ids[:2], r.context, force_tier="small")
    assert known_ads.feature_misses >= 1  # the unknown user
    assert got.feature_misses == known_ads.feature_misses + 2


class _AsOf:
    """The store read as of one time: what training's point-in-time join saw."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.as_of_us = 0

    def get_request(self, **kwargs: Any) -> Any:
        return self.store.get_request(**{**kwargs, "as_of_us": self.as_of_us})


def test_serving_scores_equal_training_scores_on_the_same_features(
    pipeline: Pipeline,
    model: RankerModel,
    plan: ShardPlan,
    lookup: LocalLookup,
    store: FeatureStore,
) -> None:
    """The oracle: training's own path (TorchRec modules over the checkpoint's weights, rounded
    to the plan's fp16, and the logs joined point-in-time) scores held-out requests as the
    serving path does when it reads the store as of each request's time. Training reads the ad
    attributes (sparse and dense) from the ad group as of the request too, so every candidate
    compares, those the store does not know yet included (empty bags and zeros in both)."""
    roles = model.roles
    emb = PlanEmbeddings(plan, pipeline.plan_dir, roles, max_sequence_len=model.max_sequence_len)
    ckpt = open_checkpoint(model.checkpoint_dir)
    state = emb.state_dict()
    for key in state:
        table = key.split(".")[-2]
        rounded = ckpt.read_table(table).astype(np.float16).astype(np.float32)
        state[key] = torch.from_numpy(rounded)
    emb.load_state_dict(state)
    source = _AsOf(store)
    ranker = Ranker(model, plan, pipeline.plan_dir, lookup, source)
    requests = pq.read_table(pipeline.logs / "requests.parquet")
    compared = 0
    start = time_split(pipeline.logs / "requests.parquet", 1.0)
    batches = iter_request_batches(pipeline.logs, store, roles, requests_per_batch=1, start_s=start)
    for batch in itertools.islice(batches, 8):
        rid = int(batch.request_ids[0])
        row = requests.filter(pc.equal(requests.column("request_id"), rid)).to_pylist()[0]
        source.as_of_us = int(row["ts"].timestamp() * 1_000_000)
        with torch.no_grad():
            req, cand = to_inputs(emb(batch), batch)
            want = [torch.sigmoid(t(req, cand)).numpy() for t in model.tiers]
        ads = pq.read_table(pipeline.logs / "impressions.parquet", columns=["request_id", "ad_id"])
        ad_ids = ads.filter(pc.equal(ads.column("request_id"), rid)).column("ad_id").to_numpy()
        context = {c: row[c] for c in CONTEXT_COLUMNS}
        for k, tier in enumerate(ranker.tier_names):
            got = ranker.rank(row["user_id"], ad_ids, context, force_tier=tier)
            np.testing.assert_allclose(got.scores, want[k], rtol=0, atol=2e-6)
        compared += len(ad_ids)
    assert compared >= 20


# ---------------------------------------------------------------------- routing


def test_cold_start_user_gets_the_safe_tier(
    client: RankClient, reference: Ranker, held_out: list[Request]
) -> None:
    r = held_out[0]
    cold = dict(r.context, user_clicked_ads=[], user_clicked_categories=[], history_len=0)
    got = client.rank(r.user_id, r.ad_ids, cold)
    assert got.reason == "cold_start"
    assert (
        got.tier
        == client.describe().safe_tier
        == reference.tier_names[reference.model.router.safe_tier]
    )
    _assert_same(got, reference.rank(r.user_id, r.ad_ids, cold))


def test_a_zero_budget_downgrades_to_the_smallest_tier(
    client: RankClient, held_out: list[Request]
) -> None:
    r = held_out[1]
    for tier in client.describe().tiers:  # measure every tier's latency first
        client.rank(r.user_id, r.ad_ids, r.context, force_tier=tier)
    got = client.rank(r.user_id, r.ad_ids, r.context, latency_budget_ms=0.0)
    assert (got.tier, got.reason) == ("small", "latency_budget")
    roomy = client.rank(r.user_id, r.ad_ids, r.context, latency_budget_ms=60_000.0)
    assert roomy.reason in ("predicted_uplift", "cold_start")


def test_describe_model(client: RankClient, reference: Ranker, plan: ShardPlan) -> None:
    d = client.describe()
    assert d.plan_fingerprint == plan.inputs_fingerprint
    assert d.tiers == ("small", "medium", "large")
    assert d.sparse_context == ("device", "geo", "hour")
    assert d.sequence_context == ("user_clicked_ads", "user_clicked_categories")
    assert d.dense_context == ("user_activity", "history_len")
    assert d.max_sequence_len == 16 and d.world_size == 1


# ---------------------------------------------------------------------- service


def test_health_and_reflection(server: server_module.RankServer, client: RankClient) -> None:
    assert client.health() == "SERVING"
    assert client.health(server_module.SERVICE_NAME) == "SERVING"
    with grpc.insecure_channel(server.address) as channel:
        reflected = ProtoReflectionDescriptorDatabase(channel)
        assert {server_module.SERVICE_NAME, "grpc.health.v1.Health"} <= set(
            reflected.get_services()
        )
        service = DescriptorPool(reflected).FindServiceByName(server_module.SERVICE_NAME)
        assert {m.name for m in service.methods} == {"Rank", "DescribeModel"}


def _request(r: Request, **changes: Any) -> pb.RankRequest:
    """A raw request carrying ``r`` (context typed as the model wants), with ``changes``:
    ``drop`` (sparse columns removed), ``sparse``/``dense`` (columns set), ``as_ids`` (dense
    columns sent as ids instead), or any RankRequest field."""
    req = pb.RankRequest(user_id=r.user_id, ad_ids=r.ad_ids, request_id=r.request_id)
    for name, v in r.context.items():
        if name in ("user_activity", "history_len"):
            req.context.dense[name] = float(v)
        else:
            req.context.sparse[name].ids.extend(v if isinstance(v, list) else [v])
    for field, value in changes.items():
        if field == "drop":
            for name in value:
                del req.context.sparse[name]
        elif field == "sparse":
            for name, v in value.items():
                req.context.sparse[name].ids[:] = v
        elif field == "dense":
            for name, v in value.items():
                req.context.dense[name] = v
        elif field == "as_ids":
            for name in value:
                req.context.sparse[name].ids.append(int(req.context.dense.pop(name)))
        elif field == "ad_ids":
            del req.ad_ids[:]
        else:
            setattr(req, field, value)
    return req


@pytest.mark.parametrize(
    ("changes", "culprit", "says"),
    [
        ({"ad_ids": []}, "ad_ids", "at least one candidate"),
        ({"drop": ["geo"]}, "context", "'geo'"),
        ({"force_tier": "huge"}, "force_tier", "unknown tier 'huge'"),
        (
            {"sparse": {"user_clicked_ads": [1, 2, 3], "user_clicked_categories": [1]}},
            "context[user_clicked_ads, user_clicked_categories]",
            "one length",
        ),
        ({"dense": {"device": 2.0}}, "context[device]", "both in context.sparse and"),
        ({"as_ids": ["user_activity"]}, "context[user_activity]", "finite number"),
        ({"latency_budget_ms": -1.0}, "latency_budget_ms", ">= 0"),
    ],
    ids=["no_ads", "missing", "tier", "sequences", "both", "dense_as_ids", "budget"],
)
def test_bad_requests_are_invalid_argument_naming_the_field(
    server: server_module.RankServer,
    client: RankClient,
    held_out: list[Request],
    changes: dict[str, Any],
    culprit: str,
    says: str,
) -> None:
    request_ = _request(held_out[0], **changes)
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.RankServiceStub(channel).Rank(request_, timeout=30)
    err: Any = info.value
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert culprit in err.details() and says in err.details()
    # The client rebuilds the server's InputError with the place in ``source``.
    with pytest.raises(InputError) as raised:
        client.call("Rank", client._stub.Rank, request_, None)
    assert raised.value.source == culprit and says in raised.value.message


def test_every_problem_is_reported_at_once(client: RankClient, held_out: list[Request]) -> None:
    r = held_out[0]
    context = {k: v for k, v in r.context.items() if k != "hour"}
    with pytest.raises(InputError) as info:
        client.rank(r.user_id, [], context, force_tier="huge")
    text = str(info.value)
    assert "3 problems" in text and "ad_ids" in text and "'hour'" in text and "huge" in text


def test_the_client_checks_context_values_before_sending(
    client: RankClient, held_out: list[Request]
) -> None:
    r = held_out[0]
    with pytest.raises(InputError) as info:
        client.rank(r.user_id, r.ad_ids, dict(r.context, geo="paris", user_activity=[1.5]))
    text = str(info.value)
    assert "context[geo]" in text and "context[user_activity]" in text


def test_ranker_refuses_a_passed_deadline_before_scoring(
    reference: Ranker, held_out: list[Request]
) -> None:
    r = held_out[0]
    before = reference.expected_latency_ms(len(r.ad_ids)).copy()
    with pytest.raises(DeadlineExceededError) as info:
        reference.rank(r.user_id, r.ad_ids, r.context, deadline_s=time.monotonic() - 1)
    assert info.value.source == "deadline" and "nothing was scored" in info.value.message
    assert np.array_equal(reference.expected_latency_ms(len(r.ad_ids)), before)


class _BlockingFeatures:
    """A feature source whose reads wait until released (the call's deadline passes meanwhile)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def get_request(self, **kwargs: Any) -> Any:
        self.entered.set()
        self.release.wait(30)
        return self.inner.get_request(**kwargs)


def _sample(metrics: RankMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_deadline_that_passes_before_scoring_is_deadline_exceeded(
    pipeline: Pipeline,
    model: RankerModel,
    plan: ShardPlan,
    lookup: LocalLookup,
    store: Any,
    held_out: list[Request],
) -> None:
    source = _BlockingFeatures(store)
    ranker = Ranker(model, plan, pipeline.plan_dir, lookup, source)
    s = server_module.build_server(ranker, ListenConfig(port=0))
    s.start()
    try:
        r = held_out[0]
        with RankClient(s.address, timeout_s=30) as c:
            c.describe()
            with pytest.raises(DeadlineExceededError):
                c.rank(r.user_id, r.ad_ids, r.context, timeout_s=0.3)
        assert source.entered.is_set()  # the server got the call and waits for its features
        source.release.set()
        for _ in range(600):  # the handler finishes once released
            if _sample(s.metrics, "adrank_rank_errors_total", code="DEADLINE_EXCEEDED"):
                break
            time.sleep(0.05)
        assert _sample(s.metrics, "adrank_rank_errors_total", code="DEADLINE_EXCEEDED") == 1
        answered = [
            sample
            for family in s.metrics.registry.collect()
            if family.name == "adrank_rank_requests"
            for sample in family.samples
            if sample.name.endswith("_total")
        ]
        assert answered == []
        assert (ranker.expected_latency_ms(5) == 0).all()  # nothing was scored
    finally:
        source.release.set()
        s.stop(0)


def test_metrics_endpoint_serves_the_counters(
    pipeline: Pipeline,
    model: RankerModel,
    plan: ShardPlan,
    lookup: LocalLookup,
    store: Any,
    held_out: list[Request],
) -> None:
    ranker = _ranker(pipeline, model, plan, lookup, store)
    metrics = RankMetrics(ranker.tier_names)
    s = server_module.build_server(ranker, ListenConfig(port=0), metrics=metrics)
    endpoint = serve_metrics(metrics.registry, port=0)
    s.start()
    try:
        with RankClient(s.address, timeout_s=30) as c:
            answered = []
            for r in held_out[:3]:
                answered.append(c.rank(r.user_id, r.ad_ids, r.context, force_tier="medium"))
            r = held_out[0]
            answered.append(c.rank(r.user_id, r.ad_ids, r.context))
            with pytest.raises(InputError):
                c.rank(r.user_id, [], r.context)
        with urllib.request.urlopen(endpoint.url, timeout=30) as reply:  # noqa: S310 - loopback
            text = reply.read().decode()
    finally:
        s.stop(0)
        endpoint.stop()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    requests = {
        labels: v for (name, labels), v in samples.items() if name == "adrank_rank_requests_total"
    }
    assert sum(requests.values()) == 4
    assert requests[(("reason", "forced"), ("tier", "medium"))] == 3
    routed = answered[-1]
    assert requests[(("reason", routed.reason), ("tier", routed.tier))] >= 1
    per_tier = {
        t: samples[("adrank_rank_latency_seconds_count", (("tier", t),))] for t in ranker.tier_names
    }
    assert sum(per_tier.values()) == 4 and per_tier["medium"] >= 3
    candidates = sum(len(r.ad_ids) for r in held_out[:3]) + len(held_out[0].ad_ids)
    assert (
        sum(samples[("adrank_rank_candidates_total", (("tier", t),))] for t in ranker.tier_names)
        == candidates
    )
    assert samples[("adrank_rank_feature_misses_total", ())] == sum(
        a.feature_misses for a in answered
    )
    assert samples[("adrank_rank_errors_total", (("code", "INVALID_ARGUMENT"),))] == 1
    assert samples[("adrank_rank_stage_seconds_count", (("stage", "lookup"),))] == 4


def test_servicer_methods_are_thin() -> None:
    """No try/except in the servicer: errors belong to the interceptor."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(server_module.RankServicer))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Try)]


# ---------------------------------------------------------------------- the CLI


def test_cli_refuses_a_plan_other_than_the_models(
    pipeline: Pipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str], model: RankerModel
) -> None:
    other = tmp_path / "other_plan"
    stats = pipeline.plan_dir.parent / "stats.json"
    argv = ["-q", "plan", "--stats", str(stats), "--devices", "2", "--device-memory", "64MiB"]
    assert main([*argv, "--memory-budget", "1MiB", "--dim", "8", "-o", str(other)]) == 0
    capsys.readouterr()
    rc = main(
        ["serve", "--model", str(pipeline.model_dir), "--plan", str(other)]
        + ["--store", str(pipeline.store), "--port", "0"]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert model.plan_fingerprint in err and str(other) in err


def test_cli_refuses_a_public_address_without_tls_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        ["serve", "--model", str(tmp_path / "none"), "--plan", str(tmp_path / "none")]
        + ["--store", str(tmp_path / "none"), "--host", "0.0.0.0", "--port", "0"]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "'0.0.0.0'" in err and "requires TLS" in err


def _Cli(tmp: Path, *args: str) -> ServeCli:  # noqa: N802 - reads like the class it builds
    return ServeCli(tmp, "serve", *args)


@pytest.mark.multiprocess
@pytest.mark.timeout(240)
def test_cli_two_devices_with_a_feature_server_equals_one_device(
    pipeline: Pipeline,
    reference: Ranker,
    held_out: list[Request],
    tmp_path: Path,
) -> None:
    features = build_feature_server(ServerConfig(store_path=str(pipeline.store), port=0))
    features.start()
    router_log = tmp_path / "router.jsonl"
    cli = None
    try:
        cli = _Cli(
            tmp_path,
            "--model",
            str(pipeline.model_dir),
            "--plan",
            str(pipeline.plan_dir),
            "--features",
            features.address,
            "--devices",
            "2",
            "--rank-timeout",
            "60",
            "--metrics-port",
            "0",
            "--router-log",
            str(router_log),
        )
        with RankClient(f"127.0.0.1:{cli.port}", timeout_s=60) as c:
            assert c.describe().world_size == 2
            for r in held_out:
                for tier in (None, "large"):
                    got = c.rank(
                        r.user_id, r.ad_ids, r.context, force_tier=tier, request_id=r.request_id
                    )
                    want = reference.rank(r.user_id, r.ad_ids, r.context, force_tier=tier)
                    # Sharded partial sums may add in another order than one device.
                    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)
                    assert (got.tier, got.reason) == (want.tier, want.reason)
        out, err = cli.stop(signal.SIGTERM)
        assert cli.proc.returncode == 0, err
        assert f"on 127.0.0.1:{cli.port} with 2 devices" in out and "stopped on SIGTERM" in out
        assert f"features from {features.address}" in out and "/metrics" in out
        assert "Traceback" not in err and "abort" not in err.lower()
        logged = [json.loads(line) for line in router_log.read_text().splitlines()]
        assert [e["request_id"] for e in logged] == [r.request_id for r in held_out]
    finally:
        if cli is not None:
            cli.stop(signal.SIGKILL)
        features.stop(0)


def _torchrun_worker(agent_pid: int, rank: int) -> int:
    """The pid of the worker process torchrun (``agent_pid``) started as ``rank`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == agent_pid and f"RANK={rank}".encode() in env:
            return int(entry.name)
    raise AssertionError(f"no rank {rank} worker under torchrun pid {agent_pid}")


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_cli_under_torchrun_serves_from_rank_0_with_the_other_ranks_as_workers(
    pipeline: Pipeline, reference: Ranker, held_out: list[Request], tmp_path: Path
) -> None:
    """The multi-host launch: ``torchrun --nproc-per-node 2 -m adrank serve``; every rank runs
    the command, rank 0 serves gRPC and the others hold their shards; SIGTERM to torchrun stops
    them all cleanly."""
    import contextlib
    import subprocess
    import sys

    port_file = tmp_path / "port"
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.Popen(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "adrank", "serve"]
        + ["--model", str(pipeline.model_dir), "--plan", str(pipeline.plan_dir)]
        + ["--store", str(pipeline.store), "--rank-timeout", "60"]
        + ["--port", "0", "--port-file", str(port_file)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(2400):
            if port_file.exists() or proc.poll() is not None:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)
        assert port_file.exists(), proc.communicate(timeout=60)[1][-3000:]
        with RankClient(f"127.0.0.1:{int(port_file.read_text())}", timeout_s=60) as c:
            assert c.describe().world_size == 2
            for r in held_out[:5]:
                got = c.rank(r.user_id, r.ad_ids, r.context, force_tier="large")
                want = reference.rank(r.user_id, r.ad_ids, r.context, force_tier="large")
                np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)
        # Stop rank 0 as an orchestrator stopping the serving process would (a SIGTERM to the
        # torchrun agent itself makes torchrun exit 1 by its own design): rank 0 stops rank 1
        # in order, and torchrun sees both exit 0.
        os.kill(_torchrun_worker(proc.pid, rank=0), signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        assert "with 2 devices (torchrun)" in out and "stopped on SIGTERM" in out
        assert "rank 1: rank 0 stopped; exiting" in out
        assert "Traceback" not in err and "abort" not in err.lower()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_as_of_reads_features_at_the_requests_time(
    client: RankClient, reference: Ranker, held_out: list[Request]
) -> None:
    """Before any snapshot existed every entity is a miss; at the end of the logs none is; the
    gRPC call passes the time through to the feature read exactly as the ranker does."""
    r = held_out[-1]
    early = client.rank(r.user_id, r.ad_ids, r.context, force_tier="small", as_of_us=10**6)
    assert early.feature_misses == len(r.ad_ids) + 1
    want = reference.rank(r.user_id, r.ad_ids, r.context, force_tier="small", as_of_us=10**6)
    _assert_same(early, want)
    late_us = 4 * 10**15  # far after the logs: the newest versions
    late = client.rank(r.user_id, r.ad_ids, r.context, force_tier="small", as_of_us=late_us)
    assert late.feature_misses < early.feature_misses
    assert not np.array_equal(late.scores, early.scores)
