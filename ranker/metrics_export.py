"""Prometheus metrics of the ranking server, and the HTTP endpoint that serves them.

Every server gets its own :class:`prometheus_client.CollectorRegistry` (:class:`RankMetrics`), so
several servers (tests, benchmarks) live in one process without sharing counters. Exposed, with
prometheus_client's conventions (counters end in ``_total``, times are seconds):

==========================================  ===============  ======================================
metric                                      labels           what
==========================================  ===============  ======================================
``adrank_rank_requests_total``              tier, reason     answered requests: the tier mix, and
                                                             why each tier was chosen
``adrank_rank_latency_seconds``             tier             server time per answered request
                                                             (histogram)
``adrank_rank_stage_seconds``               stage            features / lookup / score (histogram)
``adrank_rank_candidates_total``            tier             candidates scored
``adrank_rank_feature_misses_total``                         candidates (and users) without stored
                                                             features
``adrank_rank_errors_total``                code             failed requests by gRPC status code
==========================================  ===============  ======================================

Calls refused before they reach the servicer (a deadline already past on arrival, a missing
token) are not counted as errors here: no handler ran.

Example::

    metrics = RankMetrics(tiers=("small", "medium", "large"))
    endpoint = serve_metrics(metrics.registry, port=0)   # http://127.0.0.1:<endpoint.port>/metrics
    ...
    endpoint.stop()
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from adrank.errors import AdrankError, InputError
from adrank.rpc import DEFAULT_HOST, is_loopback_host
from ranker.serving import RankResult

__all__ = [
    "LATENCY_BUCKETS_S",
    "MetricsEndpoint",
    "RankMetrics",
    "serve_metrics",
]

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Histogram bucket bounds in seconds: fine around the 50 ms target, coarse beyond."""

_STAGES = ("features", "lookup", "score")


class RankMetrics:
    """The ranking server's counters and histograms, in their own registry.

    Args:
        tiers: Tier names, created at zero so the tier mix shows every tier from the start.
        registry: Registry to register in (default: a new one).
    """

    def __init__(
        self, tiers: Sequence[str] = (), registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "adrank_rank_requests",
            "Answered Rank requests by the tier that scored them and why it was chosen",
            ["tier", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "adrank_rank_latency_seconds",
            "Server time of answered Rank requests (features, lookups, scoring), by tier",
            ["tier"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stages = Histogram(
            "adrank_rank_stage_seconds",
            "Time of each stage of answered Rank requests",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.candidates = Counter(
            "adrank_rank_candidates", "Candidates scored, by tier", ["tier"], registry=r
        )
        self.feature_misses = Counter(
            "adrank_rank_feature_misses",
            "Candidates without stored ad features, plus users without stored user features",
            registry=r,
        )
        self.errors = Counter(
            "adrank_rank_errors", "Failed Rank requests by gRPC status code", ["code"], registry=r
        )
        for tier in tiers:
            self.latency.labels(tier)
            self.candidates.labels(tier)
        for stage in _STAGES:
            self.stages.labels(stage)

    def observe(self, result: RankResult, num_candidates: int) -> None:
        """Count one answered request.

        Args:
            result: What the ranker answered.
            num_candidates: Candidates in the request.
        """
        t = result.timings_ms
        self.requests.labels(result.tier, result.reason).inc()
        self.latency.labels(result.tier).observe(t["total"] / 1e3)
        for stage in _STAGES:
            self.stages.labels(stage).observe(t[stage] / 1e3)
        self.candidates.labels(result.tier).inc(num_candidates)
        self.feature_misses.inc(result.feature_misses)

    @contextlib.contextmanager
    def track_errors(self) -> Iterator[None]:
        """Count an exception leaving the block by the status code it maps to, and re-raise it.

        An :class:`~adrank.errors.AdrankError` counts under its ``grpc_code_name``; anything
        else is a bug and counts as ``INTERNAL``.
        """
        try:
            yield
        except AdrankError as exc:
            self.errors.labels(exc.grpc_code_name).inc()
            raise
        except Exception:
            self.errors.labels("INTERNAL").inc()
            raise


class MetricsEndpoint:
    """A running HTTP endpoint serving a registry in the Prometheus text format (any path).

    Use :func:`serve_metrics`.

    Args:
        httpd: The started WSGI server.
        thread: The thread serving it.
        host: Bound address.
    """

    def __init__(self, httpd: WSGIServer, thread: threading.Thread, host: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self._host = host
        self._stopped = False

    @property
    def port(self) -> int:
        """The bound TCP port (the one picked for port 0)."""
        return int(self._httpd.server_port)

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    registry: CollectorRegistry, *, host: str = DEFAULT_HOST, port: int = 0
) -> MetricsEndpoint:
    """Serve ``registry`` over HTTP on a daemon thread.

    Args:
        registry: What to serve.
        host: Address to bind (127.0.0.1 by default; the metrics hold counts and times, no request
            data, so another address is allowed, with a warning: it is plain HTTP).
        port: TCP port; 0 picks a free one (see :attr:`MetricsEndpoint.port`).

    Returns:
        The running endpoint (stop it).

    Raises:
        InputError: A port out of range or one that cannot be bound.
    """
    if not 0 <= port <= 65535:
        raise InputError(f"port must be in 0..65535, found {port}", source="metrics_port")
    if not is_loopback_host(host):
        logger.warning("serving metrics on %s, a non-loopback address, over plain HTTP", host)
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise InputError(
            f"cannot bind the metrics endpoint {host}:{port}: {exc}",
            source="metrics_port",
            hint="the port may be in use: pass another --metrics-port (0 picks a free one)",
        ) from exc
    return MetricsEndpoint(httpd, thread, host)
