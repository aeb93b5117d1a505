"""``--config FILE`` and its precedence, once for every command that has a deployment section.

Precedence, lowest first (STYLE §7): the code defaults (:mod:`adrank.config`), then the file, then
the flags the user actually passed. To tell a passed flag from a default, a section's flags are
registered as usual and then get ``default=argparse.SUPPRESS`` (:func:`add_config_argument`): a
flag the user did not pass leaves no attribute on the Namespace, so ``--port 50061`` given
explicitly still beats a file's ``port: 6000`` even though it equals the default. The help texts
keep naming the code defaults; :func:`resolve_config` then writes the effective value of every
flag back onto the Namespace, so ``run()`` reads ``args.port`` as before.

Without ``--config`` the effective section is the code defaults plus the flags, which is what the
commands did before the file existed (a test checks that the flags' defaults equal the section's).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "EMBEDDING_SERVER_FLAGS",
    "FEATURE_SERVER_FLAGS",
    "JOIN_FLAGS",
    "LISTEN_FLAGS",
    "RANK_SERVER_FLAGS",
    "SECTIONS",
    "ConfigBinding",
    "add_config_argument",
    "effective_section",
    "resolve_config",
]

SECTIONS = ("feature_server", "embedding_server", "rank_server", "join")
"""The sections of a deployment file (the fields of :class:`adrank.config.DeploymentConfig`,
repeated so that ``adrank --help`` does not import pydantic)."""

# Section field -> argparse dest of the flag that sets it.
LISTEN_FLAGS: Mapping[str, str] = {
    "host": "host",
    "port": "port",
    "tls_cert_path": "tls_cert",
    "tls_key_path": "tls_key",
    "token_path": "token_file",
    "max_receive_bytes": "max_receive_bytes",
    "max_send_bytes": "max_send_bytes",
    "max_workers": "workers",
    "grace_s": "grace",
}
"""The flags of :func:`adrank.cli._serve.add_listen_arguments`."""
FEATURE_SERVER_FLAGS: Mapping[str, str] = {
    **LISTEN_FLAGS,
    "ttl_at_server_clock": "ttl_at_server_clock",
}
"""``adrank serve-features`` (``block_cache_bytes`` has no flag: file only)."""
EMBEDDING_SERVER_FLAGS: Mapping[str, str] = {
    **LISTEN_FLAGS,
    "devices": "devices",
    "threads_per_rank": "threads_per_rank",
    "rank_timeout_s": "rank_timeout",
}
"""``adrank serve-embeddings``."""
RANK_SERVER_FLAGS: Mapping[str, str] = {
    **LISTEN_FLAGS,
    "devices": "devices",
    "threads_per_rank": "threads_per_rank",
    "score_threads": "score_threads",
    "rank_timeout_s": "rank_timeout",
    "features_timeout_s": "features_timeout",
    "metrics_port": "metrics_port",
    "metrics_host": "metrics_host",
    "router_log": "router_log",
}
"""``adrank serve``."""
JOIN_FLAGS: Mapping[str, str] = {
    "memory_budget_bytes": "memory_budget",
    "batch_rows": "batch_rows",
    "strategy": "strategy",
    "snapshot_dir": "snapshot_dir",
}
"""``adrank join``."""

_BINDING_DEST = "_config_binding"


@dataclass(frozen=True, slots=True)
class ConfigBinding:
    """Which deployment section a subcommand reads and which of its flags set which field.

    Args:
        section: The section's name in the file, e.g. ``"feature_server"``.
        dests: Section field -> argparse dest of the flag that overrides it.
        flag_defaults: Section field -> the default the flag was registered with (what ``--help``
            names; tests check it equals the section's code default).
    """

    section: str
    dests: Mapping[str, str]
    flag_defaults: Mapping[str, Any]


def add_config_argument(
    parser: argparse.ArgumentParser, section: str, dests: Mapping[str, str]
) -> None:
    """Add ``--config FILE`` to a subcommand whose flags ``dests`` are already registered.

    Each of those flags then defaults to ``argparse.SUPPRESS``, so that only the flags the user
    passed reach the Namespace; :func:`resolve_config` fills in the rest.

    Args:
        parser: The subcommand's parser.
        section: Its section of the deployment file (one of :data:`SECTIONS`).
        dests: Section field -> argparse dest, e.g. :data:`LISTEN_FLAGS`.

    Raises:
        ValueError: A dest is not one of the parser's flags or the section is unknown (a
            programming error, found when the CLI is built).
    """
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}")
    # argparse has no public setter for one action's default (set_defaults would also store the
    # SUPPRESS marker as a parser-level default, which parse_args then copies onto the Namespace).
    actions = {action.dest: action for action in parser._actions}
    missing = sorted(set(dests.values()) - set(actions))
    if missing:
        raise ValueError(f"{parser.prog} has no flags with dests {missing}")
    flag_defaults = {}
    for field, dest in dests.items():
        flag_defaults[field] = actions[dest].default
        actions[dest].default = argparse.SUPPRESS
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"deployment configuration file (YAML); its {section} section sets this "
        "command's defaults, and flags given here override it (see `adrank config show`)",
    )
    parser.set_defaults(**{_BINDING_DEST: ConfigBinding(section, dict(dests), flag_defaults)})


def effective_section(args: argparse.Namespace, binding: ConfigBinding) -> BaseModel:
    """The section as it applies: code defaults, then ``--config``'s file, then passed flags.

    Args:
        args: Parsed arguments; a flag the user did not pass has no attribute (see
            :func:`add_config_argument`). ``args.config`` is the file, or None.
        binding: The subcommand's section and flags.

    Returns:
        The effective section (a frozen model of :mod:`adrank.config`). Flag values are taken as
        argparse typed them and are checked by the command, as they were before the file existed.

    Raises:
        NotFoundError: The file does not exist.
        InputError: The file is invalid (key path and file named).
    """
    from adrank.config import DeploymentConfig, load_config

    path = getattr(args, "config", None)
    config = load_config(path) if path is not None else DeploymentConfig()
    section: BaseModel = getattr(config, binding.section)
    passed = {
        field: getattr(args, dest) for field, dest in binding.dests.items() if hasattr(args, dest)
    }
    # model_copy does not validate: a bad flag value is reported by the command's own checks
    # (source: the flag), exactly as without --config.
    return section.model_copy(update=passed)


def resolve_config(args: argparse.Namespace) -> BaseModel:
    """Apply the precedence to ``args`` in place and return the effective section.

    Every flag of the section gets its effective value on ``args`` (``args.port`` etc.), so the
    command's ``run()`` reads its flags as it always has.

    Args:
        args: Parsed arguments of a subcommand set up with :func:`add_config_argument`.

    Returns:
        The effective section.

    Raises:
        NotFoundError: The ``--config`` file does not exist.
        InputError: The file is invalid.
    """
    binding: ConfigBinding = getattr(args, _BINDING_DEST)
    section = effective_section(args, binding)
    for field, dest in binding.dests.items():
        setattr(args, dest, getattr(section, field))
    return section
