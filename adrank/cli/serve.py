"""``adrank serve``: serve a trained ranker over gRPC (Rank) until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adrank.cli._args import positive_int
from adrank.cli._config import RANK_SERVER_FLAGS, add_config_argument, resolve_config
from adrank.cli._serve import (
    add_listen_arguments,
    check_port_file,
    listen_config,
    serve_until_signal,
)
from adrank.cli.serve_embeddings import _ignoring
from adrank.errors import InputError

__all__ = ["feature_client", "feature_client_problems", "register", "run"]

# ranker.server's and RuntimeConfig's defaults, repeated so `adrank --help` imports no torch.
_DEFAULT_PORT = 50063
_DEFAULT_WORKERS = 4
_DEFAULT_RANK_TIMEOUT_S = 30.0
_DEFAULT_FEATURES_TIMEOUT_S = 1.0
_FEATURES_READY_S = 30.0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``subparsers`` and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve a trained ranker over gRPC (Rank: user + context + candidates -> scores)",
        description=(
            "Serve a model trained by `adrank train` over gRPC: Rank reads the user's and the "
            "candidates' features (from `adrank serve-features` with --features, or from a store "
            "opened read-only in this process with --store), looks the embeddings up in the "
            "sharded runtime (--devices), lets the router choose the tier and scores every "
            "candidate; DescribeModel lists the context columns a request needs. With the "
            "standard health service and server reflection, and Prometheus metrics (requests, "
            "latency and candidates per tier, tier mix, feature misses, errors by code) on "
            "--metrics-port. Binds 127.0.0.1 unless told otherwise; any other address requires "
            "TLS. Stops gracefully on SIGTERM or SIGINT."
        ),
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (adrank train)")
    p.add_argument(
        "--plan", required=True, metavar="PLAN", help="the plan the model was trained under"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--features",
        metavar="HOST:PORT",
        help="read features from this feature server (adrank serve-features)",
    )
    source.add_argument(
        "--store", metavar="PATH", help="read features from this store, opened read-only here"
    )
    p.add_argument(
        "--features-timeout",
        type=float,
        default=_DEFAULT_FEATURES_TIMEOUT_S,
        metavar="SECONDS",
        help="deadline of each feature read with --features, retries included "
        f"(default {_DEFAULT_FEATURES_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--features-ca",
        metavar="FILE",
        help="PEM root certificates to verify the feature server with (makes the --features "
        "channel TLS; needed for a server off loopback)",
    )
    p.add_argument(
        "--features-tls",
        action="store_true",
        help="TLS to the feature server with the system's root certificates",
    )
    p.add_argument(
        "--features-server-name",
        metavar="NAME",
        help="host name to verify in the feature server's certificate (default: the host of "
        "--features)",
    )
    p.add_argument(
        "--features-token-file",
        metavar="FILE",
        help="file holding the feature server's shared token (adrank serve-features --token-file)",
    )
    p.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        metavar="N",
        help="1 (default): all embedding tables in this process; N > 1: N ranks on this host, as "
        "the plan shards them (N must be the plan's device count)",
    )
    p.add_argument(
        "--threads-per-rank",
        type=positive_int,
        default=1,
        metavar="N",
        help="cores each rank's lookup kernels use (default 1)",
    )
    p.add_argument(
        "--score-threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="cores one request's scoring uses (torch intra-op threads; default 1: concurrent "
        "requests run on the handler threads instead)",
    )
    p.add_argument(
        "--rank-timeout",
        type=float,
        default=_DEFAULT_RANK_TIMEOUT_S,
        metavar="SECONDS",
        help="longest wait for any rank with --devices N; a dead rank fails requests with "
        f"UNAVAILABLE within it (default {_DEFAULT_RANK_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve Prometheus metrics over HTTP on this port (0 picks a free one; the banner "
        "names it); default: no metrics endpoint",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address of the metrics endpoint (default 127.0.0.1)",
    )
    p.add_argument(
        "--router-log",
        metavar="FILE",
        help="append every routing decision (features, predicted uplifts, tier, reason) to this "
        "JSON-lines file",
    )
    add_listen_arguments(p, default_port=_DEFAULT_PORT, default_workers=_DEFAULT_WORKERS)
    add_config_argument(p, "rank_server", RANK_SERVER_FLAGS)
    return p


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; return the exit code."""
    import torch

    from adrank.planfile import read_plan
    from adrank.rpc import listen_problems
    from embed_store.checkpoint import open_checkpoint
    from ranker.serving import load_model

    resolve_config(args)  # defaults < --config file < flags given
    check_port_file(args)
    listen = listen_config(args)
    problems = listen_problems(listen)
    if args.features_timeout <= 0:
        problems.append(
            InputError(f"must be > 0, found {args.features_timeout}", source="--features-timeout")
        )
    problems.extend(feature_client_problems(args))
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        problems.append(
            InputError(f"must be in 0..65535, found {args.metrics_port}", source="--metrics-port")
        )
    if args.router_log and not Path(args.router_log).resolve().parent.is_dir():
        problems.append(
            InputError(
                "the directory of --router-log does not exist",
                source=args.router_log,
                hint="create the directory first, or pass another path",
            )
        )
    if problems:  # before anything is loaded
        raise InputError.from_problems(problems)
    model = load_model(args.model)
    plan = read_plan(args.plan)
    if plan.inputs_fingerprint != model.plan_fingerprint:
        raise InputError(
            f"the model {args.model} was trained under plan {model.plan_fingerprint}, but the "
            f"plan given has fingerprint {plan.inputs_fingerprint}",
            source=args.plan,
            hint="pass the plan the model was trained with (adrank train --plan)",
        )
    checkpoint = open_checkpoint(model.checkpoint_dir)
    checkpoint.check_plan(plan, source=args.plan)
    torch.set_num_threads(args.score_threads)

    closers: list[Callable[[], None]] = []
    started: Any = None
    if "RANK" in os.environ:  # started by torchrun: every rank runs this, rank 0 serves
        from embed_store.sharded_runtime import start_from_env

        rank = os.environ["RANK"]
        # torchrun passes SIGTERM/SIGINT to every rank; the other ranks leave it to rank 0, which
        # stops them in order (or they notice it gone within --rank-timeout).
        with _ignoring(*((signal.SIGINT, signal.SIGTERM) if rank != "0" else ())):
            started = start_from_env(_runtime_config(args, model))
        if started is None:
            print(f"rank {rank}: rank 0 stopped; exiting", flush=True)
            return 0
        closers.append(started.close)
    try:
        server, detail = _build(args, model, plan, checkpoint, closers, started)
    except BaseException:
        _close_all(closers)
        raise
    devices = started.world_size if started is not None else args.devices
    banner = (
        f"serving ranker {args.model} (tiers {', '.join(server.ranker.tier_names)}; plan "
        f"fingerprint {model.plan_fingerprint}) on {server.address} with {devices} "
        f"device{'s' if devices != 1 else ''}"
        f"{' (torchrun)' if started is not None else ''}, {detail} "
        f"({'TLS' if server.tls else 'plaintext'}"
        f"{', token required' if args.token_file else ''}); SIGTERM or Ctrl-C stops"
    )
    how = serve_until_signal(server, port_file=args.port_file, banner=banner)
    print(f"stopped on {how}", flush=True)
    return 0


def _runtime_config(args: argparse.Namespace, model: Any) -> Any:
    from embed_store.sharded_runtime import RuntimeConfig

    return RuntimeConfig(
        plan_path=args.plan,
        checkpoint_path=str(model.checkpoint_dir),
        threads_per_rank=args.threads_per_rank,
        timeout_s=args.rank_timeout,
    )


def _build(
    args: argparse.Namespace,
    model: Any,
    plan: Any,
    checkpoint: Any,
    closers: list[Callable[[], None]],
    started: Any = None,
) -> tuple[Any, str]:
    """The runtime (``started``: one torchrun already joined), feature source, ranker, metrics
    endpoint and bound server; what each needs closed is appended to ``closers`` as it opens."""
    from embed_store.local_lookup import LocalLookup
    from embed_store.sharded_runtime import launch_local, load_remaps
    from feature_service import FeatureStore
    from ranker.metrics_export import RankMetrics, serve_metrics
    from ranker.router import RouterLog
    from ranker.server import build_server
    from ranker.serving import Ranker

    features: Any
    if args.features:
        client = feature_client(args)
        closers.append(client.close)
        client.wait_ready(_FEATURES_READY_S)
        features, source = client, f"features from {args.features}"
    else:
        store = FeatureStore.open(args.store, read_only=True)
        closers.append(store.close)
        features, source = store, f"features from store {args.store}"
    lookup: Any
    if started is not None:
        lookup = started  # already in closers
    elif args.devices == 1:
        lookup = LocalLookup.single_device(
            plan,
            checkpoint.read_block,
            load_remaps(plan, args.plan),
            threads=args.threads_per_rank,
        )
        closers.append(lookup.close)
    else:
        # The ranks inherit an ignored SIGINT, so Ctrl-C in a terminal (sent to the whole process
        # group) reaches only this process, which then stops the ranks in order.
        with _ignoring(signal.SIGINT):
            lookup = launch_local(_runtime_config(args, model), args.devices)
        closers.append(lookup.close)
    router_log = None
    if args.router_log:
        # RouterLog keeps only the most recent decisions in memory; the file has them all.
        router_log = RouterLog(Path(args.router_log))
    ranker = Ranker(model, plan, args.plan, lookup, features, router_log)
    metrics = RankMetrics(ranker.tier_names)
    detail = source
    if args.metrics_port is not None:
        endpoint = serve_metrics(metrics.registry, host=args.metrics_host, port=args.metrics_port)
        closers.append(endpoint.stop)
        detail += f", metrics on {endpoint.url}"
    if args.router_log:
        detail += f", router log {args.router_log}"
    # Closed in reverse order of opening: metrics endpoint, runtime, feature source.
    server = build_server(
        ranker,
        listen_config(args),
        metrics=metrics,
        world_size=lookup.world_size if started is not None else args.devices,
        on_stop=lambda: _close_all(closers),
    )
    return server, detail


def _close_all(closers: list[Callable[[], None]]) -> None:
    """Call every closer once, newest first (idempotent: the list is emptied)."""
    while closers:
        closers.pop()()


_FEATURE_CLIENT_FLAGS = (
    ("features_ca", "--features-ca"),
    ("features_tls", "--features-tls"),
    ("features_server_name", "--features-server-name"),
    ("features_token_file", "--features-token-file"),
)


def feature_client_problems(args: argparse.Namespace) -> list[InputError]:
    """What is wrong with the feature-server client flags (checked before anything starts)."""
    problems = []
    if not args.features:
        for dest, flag in _FEATURE_CLIENT_FLAGS:
            if getattr(args, dest):
                problems.append(
                    InputError(
                        "only applies with --features (a remote feature server)",
                        source=flag,
                        hint="drop it, or read features with --features HOST:PORT",
                    )
                )
        return problems
    if args.features_ca and not Path(args.features_ca).is_file():
        problems.append(
            InputError(
                "the root certificate file does not exist",
                source=args.features_ca,
                hint="pass the PEM file of the CA (or the self-signed certificate) of the server",
            )
        )
    return problems


def feature_client(args: argparse.Namespace) -> Any:
    """The :class:`feature_service.FeatureClient` the ``--features*`` flags describe.

    Raises:
        InputError, NotFoundError: An unreadable certificate or token file.
    """
    from adrank.rpc import load_token
    from feature_service import FeatureClient

    roots = None
    if args.features_ca:
        try:
            roots = Path(args.features_ca).read_bytes()
        except OSError as exc:
            raise InputError(
                f"cannot read the root certificates: {exc}", source=args.features_ca
            ) from exc
    token = load_token(args.features_token_file) if args.features_token_file else None
    return FeatureClient(
        args.features,
        timeout_s=args.features_timeout,
        root_certificates=roots,
        tls=bool(args.features_tls),
        server_name_override=args.features_server_name,
        token=token,
    )
