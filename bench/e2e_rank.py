"""``python -m bench e2e_rank``: ranking requests end to end through gRPC, 500 candidates each.

Workload (issue 6, "End to end through gRPC"): the whole pipeline is built here in a temporary
directory through the CLI (``adrank synth`` of ``rows`` impressions over ``days`` -> ``stats`` ->
``plan`` over ``devices`` devices with the behaviour sequences unpooled -> ``prune`` ->
``ingest`` of the user and ad snapshots -> ``train``), then ``adrank serve-features`` and
``adrank serve --devices N --features HOST:PORT`` run as subprocesses (their own interpreters, as
in production: the ranking server reads features over gRPC and looks embeddings up in the
N-rank sharded runtime) and this process replays held-out requests through
:class:`ranker.client.RankClient`, one at a time: the logged user, context and behaviour
sequences of each request of the last ``holdout_days``, its logged candidate ads first, padded to
``candidates`` with distinct ads drawn (seeded) from the ad vocabulary (every ad with a feature
snapshot). Each call carries ``latency_budget_ms``.

Measured: end-to-end latency in the client (building the request, the call, decoding the
scores) p50/p90/p99 (target p99 <= ``target_p99_ms``), the server's own stage timings from each
response (features, lookup, score, total) p50/p99, requests per second with one client thread and
with ``concurrency`` threads, the tier mix and the reasons; then the same requests with
``force_tier=large`` (always-large) for comparison. Warm-up calls come first (each request once
per tier, so the router's latency estimates are measured, then routed). The server's Prometheus
counters are read at the end (``server_requests_by_tier``: every call the server answered, the
warm-up and forced ones included) as a cross-check that the server saw what the client sent.

``--smoke`` builds a tiny pipeline and runs both servers in this process (threads, one device),
so its unit test needs no subprocess.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import BenchResult, concurrent_throughput, measure_peak_rss_bytes, percentiles_ms

__all__ = ["DEFAULT_CONFIG", "SMOKE", "ReplayRequest", "held_out_requests", "run"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]

DEFAULT_CONFIG: dict[str, Any] = {
    "rows": 200_000,
    "days": 14,
    "holdout_days": 1.0,
    "devices": 2,
    "device_memory": "256MiB",
    "memory_budget": "16MiB",
    "dim": 64,
    "max_sequence_len": 64,
    "candidates": 500,
    "requests": 500,
    "large_requests": 200,
    "warmup": 30,
    "concurrency": 4,
    "throughput_requests": 200,
    "latency_budget_ms": 50.0,
    "timeout_s": 5.0,
    "threads_per_rank": 1,
    "score_threads": 1,
    "workers": 4,
    "seed": 0,
    "target_p99_ms": 50.0,
}

SMOKE: dict[str, Any] = {
    "rows": 20_000,
    "days": 4,
    "devices": 1,
    "device_memory": "64MiB",
    "memory_budget": "2MiB",
    "dim": 16,
    "max_sequence_len": 16,
    "candidates": 64,
    "requests": 8,
    "large_requests": 4,
    "warmup": 2,
    "concurrency": 2,
    "throughput_requests": 4,
}

_CONTEXT_SPARSE = ("device", "geo", "hour", "user_clicked_ads", "user_clicked_categories")
_CONTEXT_DENSE = ("user_activity", "history_len")
_SEQUENCES = "user_clicked_ads,user_clicked_categories"


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """One held-out request to replay.

    Attributes:
        request_id: Its id in the logs.
        user_id: The logged user.
        ad_ids: int64 ``[candidates]``: the logged candidates, then sampled ads.
        context: The logged request-level columns.
    """

    request_id: int
    user_id: int
    ad_ids: np.ndarray
    context: dict[str, Any]


# ---------------------------------------------------------------------- the pipeline


def _build_pipeline(d: Path, config: dict[str, Any]) -> dict[str, Path]:
    """synth -> stats -> plan -> prune -> ingest -> train under ``d``, through the CLI."""
    from adrank.cli import main

    logs, plan, store, model = d / "logs", d / "plan", d / "store", d / "model"
    imps, reqs = str(logs / "impressions.parquet"), str(logs / "requests.parquet")
    steps = [
        ["synth", "-o", str(logs), "--rows", str(config["rows"]), "--days", str(config["days"])]
        + ["--seed", str(config.get("seed", 0))],
        ["stats", imps, reqs, "-o", str(d / "stats.json")],
        ["plan", "--stats", str(d / "stats.json"), "--devices", str(config["devices"])]
        + ["--device-memory", str(config["device_memory"])]
        + ["--memory-budget", str(config["memory_budget"]), "--dim", str(config["dim"])]
        + ["--sequence-features", _SEQUENCES, "-o", str(plan)],
        ["prune", "--plan", str(plan), "--holdout-days", str(config["holdout_days"]), imps, reqs],
    ]
    for g in ("user", "ad"):
        steps.append(
            ["ingest", "--store", str(store), "--group", g, "--entity-column", f"{g}_id"]
            + ["--timestamp-column", "event_ts", "--created-column", "created_ts"]
            + [str(logs / "snapshots" / f"{g}s.parquet")]
        )
    steps.append(
        ["train", "--logs", str(logs), "--store", str(store), "--plan", str(plan), "-o", str(model)]
        + ["--holdout-days", str(config["holdout_days"])]
        + ["--max-sequence-len", str(config["max_sequence_len"])]
    )
    # The commands print their summaries; keep them in a file beside the data instead.
    with open(d / "pipeline.log", "w", encoding="utf-8") as log:
        for argv in steps:
            t0 = time.perf_counter()
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                rc = main(["-q", *argv])
            log.write(f"$ adrank {' '.join(argv)}\n{out.getvalue()}\n")
            if rc != 0:
                raise RuntimeError(f"adrank {argv[0]} failed (exit {rc}); see {d}/pipeline.log")
            logger.info("adrank %s in %.1f s", argv[0], time.perf_counter() - t0)
    return {"logs": logs, "plan": plan, "store": store, "model": model}


def held_out_requests(
    logs: Path, holdout_days: float, candidates: int, count: int, seed: int
) -> list[ReplayRequest]:
    """The first ``count`` requests of the held-out days, candidates padded to ``candidates``.

    Args:
        logs: ``adrank synth`` output.
        holdout_days: The held-out tail (as in training).
        candidates: Candidates per request: the logged ones first, then distinct ads drawn from
            the ad snapshots (seeded), none repeated within a request.
        count: Requests (fewer when the tail has fewer; cycled to ``count`` otherwise).
        seed: Seed of the draw.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ranker.data import time_split

    start = time_split(logs / "requests.parquet", holdout_days)
    reqs = pq.read_table(logs / "requests.parquet")
    secs = pc.cast(reqs.column("ts"), pa.timestamp("s", tz="UTC")).cast(pa.int64())
    reqs = reqs.filter(pc.greater_equal(secs, start))
    imps = pq.read_table(logs / "impressions.parquet", columns=["request_id", "ad_id"])
    vocab = np.unique(
        pq.read_table(logs / "snapshots" / "ads.parquet", columns=["ad_id"])
        .column("ad_id")
        .to_numpy()
    )
    rng = np.random.default_rng(seed)
    rows = reqs.slice(0, count).to_pylist()
    ids = [r["request_id"] for r in rows]
    logged = imps.filter(pc.is_in(imps.column("request_id"), pa.array(ids)))
    by_request: dict[int, list[int]] = {}
    for rid, ad in zip(
        logged.column("request_id").to_pylist(), logged.column("ad_id").to_pylist(), strict=True
    ):
        by_request.setdefault(rid, []).append(ad)
    out = []
    for k in range(count):
        row = rows[k % len(rows)]
        own = np.array(by_request.get(row["request_id"], [])[:candidates], dtype=np.int64)
        pool = vocab[~np.isin(vocab, own)]
        extra = rng.choice(pool, size=min(candidates - len(own), len(pool)), replace=False)
        out.append(
            ReplayRequest(
                request_id=int(row["request_id"]),
                user_id=int(row["user_id"]),
                ad_ids=np.concatenate([own, extra.astype(np.int64)]),
                context={c: row[c] for c in (*_CONTEXT_SPARSE, *_CONTEXT_DENSE)},
            )
        )
    return out


# ---------------------------------------------------------------------- servers


class _Subprocess:
    """``python -m adrank ARGS --port 0 --port-file F`` until its port file appears."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        port_file = workdir / f"{name}.port"
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "w+", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adrank", *args, "--port", "0", "--port-file", str(port_file)],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 300
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def _subprocess_servers(
    paths: dict[str, Path], config: dict[str, Any], workdir: Path
) -> Iterator[tuple[str, str | None]]:
    """The feature server and the ranking server as subprocesses: (rank address, metrics URL)."""
    features = _Subprocess(
        "serve-features", ["serve-features", "--store", str(paths["store"])], workdir
    )
    ranking = None
    try:
        ranking = _Subprocess(
            "serve",
            ["serve", "--model", str(paths["model"]), "--plan", str(paths["plan"])]
            + ["--features", features.address, "--devices", str(config["devices"])]
            + ["--threads-per-rank", str(config["threads_per_rank"])]
            + ["--score-threads", str(config["score_threads"])]
            + ["--workers", str(config["workers"]), "--metrics-port", "0"],
            workdir,
        )
        found = re.search(r"metrics on (http://\S+/metrics)", ranking.output())
        yield ranking.address, found.group(1) if found else None
    finally:
        if ranking is not None:
            ranking.stop()
        features.stop()


@contextlib.contextmanager
def _in_process_servers(
    paths: dict[str, Path], config: dict[str, Any]
) -> Iterator[tuple[str, str | None]]:
    """Both servers in this process, one device (smoke): (rank address, metrics URL)."""
    from adrank.planfile import read_plan
    from adrank.rpc import ListenConfig
    from embed_store.checkpoint import open_checkpoint
    from embed_store.local_lookup import LocalLookup
    from embed_store.sharded_runtime import load_remaps
    from feature_service import FeatureClient, ServerConfig
    from feature_service import build_server as build_feature_server
    from ranker.metrics_export import RankMetrics, serve_metrics
    from ranker.server import build_server
    from ranker.serving import Ranker, load_model

    features = build_feature_server(ServerConfig(store_path=str(paths["store"]), port=0))
    features.start()
    try:
        model = load_model(paths["model"])
        plan = read_plan(paths["plan"])
        ckpt = open_checkpoint(model.checkpoint_dir)
        lookup = LocalLookup.single_device(plan, ckpt.read_block, load_remaps(plan, paths["plan"]))
        client = FeatureClient(features.address, timeout_s=float(config["timeout_s"]))
        ranker = Ranker(model, plan, paths["plan"], lookup, client)
        metrics = RankMetrics(ranker.tier_names)
        endpoint = serve_metrics(metrics.registry, port=0)

        def close() -> None:
            endpoint.stop()
            lookup.close()
            client.close()

        server = build_server(
            ranker,
            ListenConfig(port=0, max_workers=int(config["workers"])),
            metrics=metrics,
            on_stop=close,
        )
        server.start()
        try:
            yield server.address, endpoint.url
        finally:
            server.stop(0)
    finally:
        features.stop(0)


# ---------------------------------------------------------------------- replay


@dataclass
class _Replay:
    """What one pass over the requests measured."""

    e2e_s: list[float]
    stages_ms: dict[str, list[float]]
    tiers: Counter[str]
    reasons: Counter[str]
    feature_misses: int


def _replay(rank: Callable[[ReplayRequest], Any], requests: list[ReplayRequest]) -> _Replay:
    e2e: list[float] = []
    stages: dict[str, list[float]] = {k: [] for k in ("features", "lookup", "score", "total")}
    tiers: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    misses = 0
    for r in requests:
        t0 = time.perf_counter()
        result = rank(r)
        e2e.append(time.perf_counter() - t0)
        for k in stages:
            stages[k].append(result.timings_ms[k])
        tiers[result.tier] += 1
        reasons[result.reason] += 1
        misses += result.feature_misses
    return _Replay(e2e, stages, tiers, reasons, misses)


def _summary(replay: _Replay) -> dict[str, Any]:
    n = len(replay.e2e_s)
    out: dict[str, Any] = dict(percentiles_ms(replay.e2e_s))
    out["qps"] = n / sum(replay.e2e_s)
    for stage, values in replay.stages_ms.items():
        a = np.asarray(values)
        out[f"server_{stage}_p50_ms"] = float(np.percentile(a, 50))
        out[f"server_{stage}_p99_ms"] = float(np.percentile(a, 99))
    overhead = np.asarray(replay.e2e_s) * 1e3 - np.asarray(replay.stages_ms["total"])
    out["client_and_transport_p50_ms"] = float(np.percentile(overhead, 50))
    out["tier_mix"] = {t: c / n for t, c in sorted(replay.tiers.items())}
    out["reasons"] = {r: c / n for r, c in sorted(replay.reasons.items())}
    out["feature_misses_per_request"] = replay.feature_misses / n
    return out


def _server_counters(url: str | None) -> dict[str, float]:
    """``adrank_rank_requests_total`` by tier from the server's metrics endpoint."""
    if url is None:
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - our loopback endpoint
        text = reply.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "adrank_rank_requests_total":
                out[s.labels["tier"]] = out.get(s.labels["tier"], 0.0) + s.value
    return out


# ---------------------------------------------------------------------- run


def run(config: dict[str, Any], smoke: bool = False) -> BenchResult:
    """Run the benchmark.

    Args:
        config: :data:`DEFAULT_CONFIG` overlaid with the YAML file.
        smoke: Tiny sizes (:data:`SMOKE`), both servers in this process.
    """
    from ranker.client import RankClient

    if smoke:
        config = {**config, **SMOKE}
    budget = config["latency_budget_ms"]
    with tempfile.TemporaryDirectory(prefix="bench-e2e-rank-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        paths = _build_pipeline(tmp, config)
        pipeline_s = time.perf_counter() - t0
        n_warm, n_req = int(config["warmup"]), int(config["requests"])
        requests = held_out_requests(
            paths["logs"],
            float(config["holdout_days"]),
            int(config["candidates"]),
            n_warm + n_req,
            int(config["seed"]),
        )
        warmup, measured = requests[:n_warm], requests[n_warm:]
        servers = (
            _in_process_servers(paths, config) if smoke else _subprocess_servers(paths, config, tmp)
        )
        with servers as (address, metrics_url):
            with RankClient(address, timeout_s=float(config["timeout_s"])) as client:
                client.wait_ready(60.0)
                description = client.describe()

                def routed(r: ReplayRequest) -> Any:
                    return client.rank(
                        r.user_id,
                        r.ad_ids,
                        r.context,
                        latency_budget_ms=budget,
                        request_id=r.request_id,
                    )

                def large(r: ReplayRequest) -> Any:
                    return client.rank(
                        r.user_id, r.ad_ids, r.context, force_tier="large", request_id=r.request_id
                    )

                for r in warmup:  # every tier warm, and the router's latency estimates measured
                    for tier in description.tiers:
                        client.rank(r.user_id, r.ad_ids, r.context, force_tier=tier)
                    routed(r)
                ours = _replay(routed, measured)
                always_large = _replay(large, measured[: int(config["large_requests"])])
                qps_concurrent = concurrent_throughput(
                    routed,
                    measured[: int(config["throughput_requests"])],
                    int(config["concurrency"]),
                )
            counters = _server_counters(metrics_url)

    routed_summary = _summary(ours)
    large_summary = _summary(always_large)
    p99 = routed_summary["p99_ms"]
    metrics: dict[str, Any] = {
        **{k: v for k, v in routed_summary.items()},
        "qps_concurrent": qps_concurrent,
        "always_large": large_summary,
        "p99_ratio_vs_always_large": p99 / large_summary["p99_ms"],
        "requests": len(ours.e2e_s),
        "candidates": int(config["candidates"]),
        "devices": int(config["devices"]) if not smoke else 1,
        "server_requests_by_tier": counters,
        "plan_fingerprint": description.plan_fingerprint,
        "pipeline_s": pipeline_s,
        "peak_rss_bytes": measure_peak_rss_bytes(),
    }
    targets = {
        "p99_ms": {
            "max": config["target_p99_ms"],
            "measured": p99,
            "met": p99 <= config["target_p99_ms"],
        }
    }
    where = (
        "both servers in this process, one device (smoke)"
        if smoke
        else f"adrank serve-features and adrank serve --devices {config['devices']} as subprocesses"
    )
    notes = (
        f"{len(ours.e2e_s)} held-out requests x {config['candidates']} candidates (logged "
        f"candidates padded with sampled ads), one client thread, {where}; latency measured in "
        f"the client around RankClient.rank; budget {budget} ms per call; always_large: the "
        f"first {len(always_large.e2e_s)} of the same requests with force_tier=large; "
        f"qps_concurrent with {config['concurrency']} client threads; pipeline built in "
        f"{pipeline_s:.0f} s."
    )
    return BenchResult(
        name="e2e_rank", config=dict(config), metrics=metrics, targets=targets, notes=notes
    )
