"""``adrank serve-features``: serve a feature store over gRPC until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
from typing import Any

from adrank.cli._config import FEATURE_SERVER_FLAGS, add_config_argument, resolve_config
from adrank.cli._serve import (
    add_listen_arguments,
    check_port_file,
    listen_config,
    serve_until_signal,
)

__all__ = ["register", "run"]

# feature_service.server's defaults, repeated so `adrank --help` does not import grpc.
_DEFAULT_PORT = 50061
_DEFAULT_WORKERS = 8


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
    add_listen_arguments(p, default_port=_DEFAULT_PORT, default_workers=_DEFAULT_WORKERS)
    p.add_argument(
        "--no-server-clock-ttl",
        dest="ttl_at_server_clock",
        action="store_false",
        help="do not apply TTL to newest-version reads unless the request gives now_us "
        "(default: apply it at the server's clock)",
    )
    add_config_argument(p, "feature_server", FEATURE_SERVER_FLAGS)
    return p


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; return the exit code."""
    from adrank.config import FeatureServerConfig
    from feature_service.server import ServerConfig, build_server

    section = resolve_config(args)  # defaults < --config file < flags given
    assert isinstance(section, FeatureServerConfig)
    check_port_file(args)
    listen = listen_config(args)
    config = ServerConfig(
        store_path=args.store,
        host=listen.host,
        port=listen.port,
        tls_cert_path=listen.tls_cert_path,
        tls_key_path=listen.tls_key_path,
        token_path=listen.token_path,
        max_receive_bytes=listen.max_receive_bytes,
        max_send_bytes=listen.max_send_bytes,
        max_workers=listen.max_workers,
        grace_s=listen.grace_s,
        ttl_at_server_clock=args.ttl_at_server_clock,
        block_cache_bytes=section.block_cache_bytes,
    )
    server = build_server(config)

    groups = ", ".join(g.name for g in server.store.groups()) or "(none)"
    banner = (
        f"serving feature store {args.store} (groups: {groups}) on {server.address} "
        f"({'TLS' if server.tls else 'plaintext'}"
        f"{', token required' if args.token_file else ''}); SIGTERM or Ctrl-C stops"
    )
    how = serve_until_signal(server, port_file=args.port_file, banner=banner)
    print(f"stopped on {how}", flush=True)
    return 0
