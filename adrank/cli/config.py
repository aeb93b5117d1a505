"""``adrank config show``: print the effective deployment configuration as YAML."""

from __future__ import annotations

import argparse
from typing import Any

from adrank.cli import _add_verbosity
from adrank.cli._config import SECTIONS

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``config`` subcommand (with its ``show`` action) to ``subparsers``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "config",
        help="show the effective deployment configuration (defaults merged with a YAML file)",
        description=(
            "A deployment keeps the settings of `adrank serve-features`, `serve-embeddings`, "
            "`serve` and `join` in one YAML file, one section per command, passed with --config. "
            "Precedence, lowest first: the code defaults, then the file, then the flags given "
            "on the command line. See examples/deployment.yaml."
        ),
    )
    # Same parser class as the top level, so a usage error in `show` also exits 2 via main().
    actions = p.add_subparsers(dest="config_action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    show = actions.add_parser(
        "show",
        help="print the effective configuration as YAML",
        description=(
            "Print the configuration the commands would use without flags: the code defaults "
            "merged with --config's file, as YAML that is itself a valid configuration file "
            "(sizes in bytes). Exits 2 naming the key path and file if the file is invalid."
        ),
    )
    _add_verbosity(show)  # main() adds -v/-q to `config` only; accept them after `show` too
    show.add_argument("--config", metavar="FILE", help="deployment file (default: none)")
    show.add_argument(
        "--section",
        choices=SECTIONS,
        metavar="NAME",
        help=f"print only this section: {', '.join(SECTIONS)} (default: all)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Print the effective configuration; return the exit code."""
    import yaml

    from adrank.config import DeploymentConfig, load_config

    config = load_config(args.config) if args.config else DeploymentConfig()
    doc = config.model_dump(mode="json")
    if args.section:
        doc = {args.section: doc[args.section]}
    origin = f"defaults merged with {args.config}" if args.config else "defaults (no --config)"
    print(f"# effective adrank configuration: {origin}")
    print(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False), end="")
    return 0
