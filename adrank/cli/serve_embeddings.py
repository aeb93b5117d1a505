"""``adrank serve-embeddings``: serve pooled embedding lookups over gRPC until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from adrank.cli._args import positive_int
from adrank.cli._config import EMBEDDING_SERVER_FLAGS, add_config_argument, resolve_config
from adrank.cli._serve import (
    add_listen_arguments,
    check_port_file,
    listen_config,
    serve_until_signal,
)

__all__ = ["register", "run"]

# embed_store.server's and RuntimeConfig's defaults, repeated so `adrank --help` imports no torch.
_DEFAULT_PORT = 50062
_DEFAULT_WORKERS = 4
_DEFAULT_RANK_TIMEOUT_S = 30.0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve-embeddings`` subcommand to ``subparsers`` and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve-embeddings",
        help="serve pooled embedding lookups over gRPC (Lookup, DescribeModel)",
        description=(
            "Serve a plan's embedding tables from a checkpoint over gRPC: Lookup (candidate "
            "bags, plus request-level bags looked up once per request, as hashed ids or raw id "
            "keys) and DescribeModel, with the standard health service and server reflection. "
            "--devices 1 computes every table in this process; --devices N starts N ranks on "
            "this host (the plan's device count); under torchrun every rank runs this command and "
            "rank 0 serves. Binds 127.0.0.1 unless told otherwise; any other address requires "
            "TLS. Stops gracefully on SIGTERM or SIGINT."
        ),
    )
    p.add_argument("--plan", required=True, metavar="PLAN", help="plan directory or plan.json")
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="embedding checkpoint written for the plan",
    )
    p.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        metavar="N",
        help="1 (default): all tables whole in this process; N > 1: N ranks on this host, as "
        "the plan shards them (N must be the plan's device count); ignored under torchrun",
    )
    p.add_argument(
        "--threads-per-rank",
        type=positive_int,
        default=1,
        metavar="N",
        help="cores each rank's kernels use (default 1)",
    )
    p.add_argument(
        "--rank-timeout",
        type=float,
        default=_DEFAULT_RANK_TIMEOUT_S,
        metavar="SECONDS",
        help="longest wait for any rank; a dead rank fails lookups with UNAVAILABLE within it "
        f"(default {_DEFAULT_RANK_TIMEOUT_S:g})",
    )
    add_listen_arguments(p, default_port=_DEFAULT_PORT, default_workers=_DEFAULT_WORKERS)
    add_config_argument(p, "embedding_server", EMBEDDING_SERVER_FLAGS)
    return p


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; return the exit code."""
    from adrank.errors import InputError
    from adrank.planfile import read_plan
    from adrank.rpc import listen_problems
    from embed_store.checkpoint import open_checkpoint
    from embed_store.convert import IdKeyHasher
    from embed_store.local_lookup import LocalLookup
    from embed_store.server import LookupRuntime, build_server
    from embed_store.sharded_runtime import (
        RuntimeConfig,
        launch_local,
        load_remaps,
        start_from_env,
    )

    resolve_config(args)  # defaults < --config file < flags given
    check_port_file(args)
    listen = listen_config(args)
    problems = listen_problems(listen)
    if problems:  # before any table is loaded
        raise InputError.from_problems(problems)
    config = RuntimeConfig(
        plan_path=args.plan,
        checkpoint_path=args.checkpoint,
        threads_per_rank=args.threads_per_rank,
        timeout_s=args.rank_timeout,
    )
    plan = read_plan(args.plan)
    checkpoint = open_checkpoint(args.checkpoint)
    checkpoint.check_plan(plan, source=args.plan)
    hasher = IdKeyHasher.from_plan_dir(plan, args.plan)

    runtime: LookupRuntime
    if "RANK" in os.environ:  # started by torchrun: every rank runs this, rank 0 serves
        rank = os.environ["RANK"]
        # torchrun passes SIGTERM/SIGINT to every rank; the other ranks leave it to rank 0, which
        # stops them in order (or they notice it gone within --rank-timeout).
        with _ignoring(*((signal.SIGINT, signal.SIGTERM) if rank != "0" else ())):
            started = start_from_env(config)
        if started is None:
            print(f"rank {rank}: rank 0 stopped; exiting", flush=True)
            return 0
        runtime = started
    elif args.devices == 1:
        runtime = LocalLookup.single_device(
            plan,
            checkpoint.read_block,
            load_remaps(plan, args.plan),
            threads=args.threads_per_rank,
        )
    else:
        # The ranks inherit an ignored SIGINT, so Ctrl-C in a terminal (sent to the whole process
        # group) reaches only this process, which then stops the ranks in order.
        with _ignoring(signal.SIGINT):
            runtime = launch_local(config, args.devices)
    server = build_server(runtime, listen, hasher=hasher)  # closes the runtime if binding fails
    d = server.description
    banner = (
        f"serving {len(d.features)} embedding features of plan {args.plan} "
        f"(fingerprint {d.plan_fingerprint}) on {server.address} with {d.world_size} "
        f"device{'s' if d.world_size != 1 else ''} ({'TLS' if server.tls else 'plaintext'}"
        f"{', token required' if args.token_file else ''}); SIGTERM or Ctrl-C stops"
    )
    how = serve_until_signal(server, port_file=args.port_file, banner=banner)
    print(f"stopped on {how}", flush=True)
    return 0


@contextlib.contextmanager
def _ignoring(*signals: signal.Signals) -> Iterator[None]:
    """Ignore ``signals`` inside (processes started inside inherit the ignored disposition)."""
    if not signals or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
