"""What the ``serve-*`` subcommands share: listen flags, the port file, and serving until a signal.

The defaults are repeated from :mod:`adrank.rpc` so that ``adrank --help`` does not import grpc.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from adrank.cli._args import positive_int, size_bytes
from adrank.errors import InputError

if TYPE_CHECKING:
    from adrank.rpc import ListenConfig, RpcServer

__all__ = ["add_listen_arguments", "check_port_file", "listen_config", "serve_until_signal"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_RECEIVE_BYTES = 4 << 20
DEFAULT_MAX_SEND_BYTES = 64 << 20
DEFAULT_GRACE_S = 5.0


def add_listen_arguments(
    p: argparse.ArgumentParser, *, default_port: int, default_workers: int
) -> None:
    """Add ``--host --port --port-file --tls-cert --tls-key --token-file --max-receive-bytes
    --max-send-bytes --workers --grace`` to a serving subcommand."""
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}; non-loopback needs --tls-cert/--tls-key)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=default_port,
        metavar="N",
        help=f"TCP port (default {default_port}; 0 picks a free one, see --port-file)",
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
        type=size_bytes,
        default=DEFAULT_MAX_RECEIVE_BYTES,
        metavar="SIZE",
        help="largest request accepted, e.g. 16MiB "
        f"(default {DEFAULT_MAX_RECEIVE_BYTES:,} bytes; larger ones get RESOURCE_EXHAUSTED)",
    )
    p.add_argument(
        "--max-send-bytes",
        type=size_bytes,
        default=DEFAULT_MAX_SEND_BYTES,
        metavar="SIZE",
        help=f"largest response sent (default {DEFAULT_MAX_SEND_BYTES:,} bytes)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=default_workers,
        metavar="N",
        help=f"handler threads (default {default_workers})",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_S,
        metavar="SECONDS",
        help=f"seconds in-flight calls get to finish on stop (default {DEFAULT_GRACE_S:g})",
    )


def check_port_file(args: argparse.Namespace) -> None:
    """Refuse a ``--port-file`` whose directory is missing, before anything is started.

    Raises:
        InputError: The directory does not exist.
    """
    if args.port_file and not Path(args.port_file).resolve().parent.is_dir():
        raise InputError(
            "the directory of --port-file does not exist",
            source=args.port_file,
            hint="create the directory first, or pass another path",
        )


def listen_config(args: argparse.Namespace) -> ListenConfig:
    """The :class:`~adrank.rpc.ListenConfig` of the flags added by :func:`add_listen_arguments`."""
    from adrank.rpc import ListenConfig

    return ListenConfig(
        host=args.host,
        port=args.port,
        tls_cert_path=args.tls_cert,
        tls_key_path=args.tls_key,
        token_path=args.token_file,
        max_receive_bytes=args.max_receive_bytes,
        max_send_bytes=args.max_send_bytes,
        max_workers=args.workers,
        grace_s=args.grace,
    )


def serve_until_signal(
    server: RpcServer,
    *,
    port_file: str | None,
    banner: str,
) -> str:
    """Start ``server``, write the port file, print the banner, and serve until SIGTERM/SIGINT.

    The server is stopped (gracefully, releasing what it serves) however this returns.

    Args:
        server: A bound, not yet started server.
        port_file: File to write the bound port to once serving (None: none).
        banner: The line printed once serving.

    Returns:
        The name of the signal that stopped it (``"request"`` when none was received).
    """
    from adrank.formats import atomic_write_text

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
        if port_file:
            atomic_write_text(port_file, f"{server.port}\n")
        print(banner, flush=True)
        # A timed wait keeps the main thread returning to the interpreter, so signals are handled.
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return received[0] if received else "request"
