"""``adrank serve-features``: serve a feature store over gRPC until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["register", "run"]

# feature_service.server's defaults, repeated so `adrank --help` does not import grpc.
_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_PORT = 50061
_DEFAULT_MAX_RECEIVE_BYTES = 4 << 20
_DEFAULT_MAX_SEND_BYTES = 64 << 20
_DEFAULT_WORKERS = 8
_DEFAULT_GRACE_S = 5.0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve-features`` subcommand to ``subparsers`` and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve-features",
        help="serve a feature store over gRPC (GetFeatures, one user + N ads per call)",
        description=(
            "Serve a feature store read-only over gRPC: GetFeatures (one group, many entities, "
            "newest or as of a time) and GetRequestFeatures (a ranking request's user and "
            "candidate ads in one call), with the standard health service and server reflection. "
            "Binds 127.0.0.1 unless told otherwise; any other address requires TLS. Stops "
            "gracefully on SIGTERM or SIGINT."
        ),
    )
    p.add_argument("--store", required=True, metavar="PATH", help="feature store directory")
    p.add_argument(
        "--host",
        default=_DEFAULT_HOST,
        help=f"address to bind (default {_DEFAULT_HOST}; non-loopback needs --tls-cert/--tls-key)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=_DEFAULT_PORT,
        metavar="N",
        help=f"TCP port (default {_DEFAULT_PORT}; 0 picks a free one, see --port-file)",
    )
    p.add_argument(
        "--port-file",
        metavar="FILE",
        help="write the bound port to this file once serving (for --port 0)",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain of the server")
    p.add_argument("--tls-key", metavar="FILE", help="PEM private key of the server")
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="require clients to send 'authorization: Bearer <token>' with the token in FILE",
    )
    p.add_argument(
        "--max-receive-bytes",
        type=int,
        default=_DEFAULT_MAX_RECEIVE_BYTES,
        metavar="N",
        help=f"largest request accepted (default {_DEFAULT_MAX_RECEIVE_BYTES:,})",
    )
    p.add_argument(
        "--max-send-bytes",
        type=int,
        default=_DEFAULT_MAX_SEND_BYTES,
        metavar="N",
        help=f"largest response sent (default {_DEFAULT_MAX_SEND_BYTES:,})",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=_DEFAULT_WORKERS,
        metavar="N",
        help=f"handler threads (default {_DEFAULT_WORKERS})",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=_DEFAULT_GRACE_S,
        metavar="SECONDS",
        help=f"seconds in-flight calls get to finish on stop (default {_DEFAULT_GRACE_S:g})",
    )
    p.add_argument(
        "--no-server-clock-ttl",
        dest="ttl_at_server_clock",
        action="store_false",
        help="do not apply TTL to newest-version reads unless the request gives now_us "
        "(default: apply it at the server's clock)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; return the exit code."""
    from pathlib import Path

    from adrank.errors import InputError
    from adrank.formats import atomic_write_text
    from feature_service.server import ServerConfig, build_server

    if args.port_file and not Path(args.port_file).resolve().parent.is_dir():
        raise InputError(
            "the directory of --port-file does not exist",
            source=args.port_file,
            hint="create the directory first, or pass another path",
        )
    config = ServerConfig(
        store_path=args.store,
        host=args.host,
        port=args.port,
        tls_cert_path=args.tls_cert,
        tls_key_path=args.tls_key,
        token_path=args.token_file,
        max_receive_bytes=args.max_receive_bytes,
        max_send_bytes=args.max_send_bytes,
        max_workers=args.workers,
        grace_s=args.grace,
        ttl_at_server_clock=args.ttl_at_server_clock,
    )
    server = build_server(config)
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    # Signal handlers can only be installed from the main thread (tests may call main elsewhere).
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        server.start()
        if args.port_file:
            atomic_write_text(args.port_file, f"{server.port}\n")
        groups = ", ".join(g.name for g in server.store.groups()) or "(none)"
        print(
            f"serving feature store {args.store} (groups: {groups}) on {server.address} "
            f"({'TLS' if server.tls else 'plaintext'}"
            f"{', token required' if args.token_file else ''}); SIGTERM or Ctrl-C stops",
            flush=True,
        )
        # A timed wait keeps the main thread returning to the interpreter, so signals are handled.
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"stopped on {received[0] if received else 'request'}", flush=True)
    return 0
