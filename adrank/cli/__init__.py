"""The one ``adrank`` command.

Each subcommand lives in its own module with ``register(subparsers)`` and ``run(args) -> int``.
Subcommand modules import heavy libraries (numba, pyarrow, torch) inside ``run`` so that
``adrank --help`` stays fast.

Only this package reads the environment, configures logging, draws progress bars and prints.
Exit codes: 0 success, 1 runtime failure, 2 bad input or usage (see :mod:`adrank.errors`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from adrank.errors import EXIT_RUNTIME, EXIT_USAGE, AdrankError

__all__ = ["main", "build_parser"]

logger = logging.getLogger("adrank.cli")

# (subcommand name, module under adrank.cli). Order is the order shown in --help.
_SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("demo", "demo"),
    ("synth", "synth"),
    ("import", "import_cmd"),
    ("stats", "stats"),
    ("plan", "plan"),
    ("prune", "prune"),
    ("checkpoint", "checkpoint"),
    ("calibrate", "calibrate"),
    ("ingest", "ingest"),
    ("join", "join"),
    ("store", "store"),
    ("serve-features", "serve_features"),
    ("train", "train"),
    ("serve-embeddings", "serve_embeddings"),
    ("serve", "serve"),
    ("bench", "bench"),
    ("config", "config"),
)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors raise instead of exiting, so ``main`` can return 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: error: {message}\n{self.format_usage().rstrip()}")


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    parser = _Parser(
        prog="adrank",
        description=(
            "Embedding sharding and feature store for adaptive ads ranking. "
            "Run `adrank demo` for the main job on built-in synthetic data."
        ),
    )
    _add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for _name, module_name in _SUBCOMMANDS:
        module = importlib.import_module(f"adrank.cli.{module_name}")
        sp = module.register(sub)
        _add_verbosity(sp)
        sp.set_defaults(_run=module.run)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more log output (-v: INFO detail per item is DEBUG with -vv)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="only warnings and errors; no progress bars",
    )


def _drop_library_chatter(record: logging.LogRecord) -> bool:
    """FBGEMM and TorchRec log their .so loading and feature gates at INFO on the root logger;
    users see them only with -vv (warnings always pass)."""
    if record.levelno >= logging.WARNING:
        return True
    path = record.pathname.replace("\\", "/")
    return not any(f"/{lib}/" in path for lib in ("fbgemm_gpu", "torchrec", "torch"))


def _configure_logging(verbose: int, quiet: bool) -> None:
    if quiet:
        level = logging.WARNING
    elif verbose >= 2:
        level = logging.DEBUG
    else:
        level = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    # Replace handlers from an earlier main() call in the same process (tests call main repeatedly).
    for h in list(root.handlers):
        if getattr(h, "_adrank_cli", False):
            root.removeHandler(h)
    handler._adrank_cli = True  # type: ignore[attr-defined]
    if verbose < 2:
        handler.addFilter(_drop_library_chatter)
    root.addHandler(handler)
    root.setLevel(level)
    # numba's compiler logs at INFO; it is noise for users.
    logging.getLogger("numba").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The process exit code (0 success, 1 runtime failure, 2 bad input or usage).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version exit 0 through argparse
        return int(exc.code or 0)
    verbose = getattr(args, "verbose", 0) or 0
    quiet = bool(getattr(args, "quiet", False))
    args.verbose, args.quiet = verbose, quiet
    _configure_logging(verbose, quiet)
    try:
        return int(args._run(args))
    except AdrankError as exc:
        print(f"adrank {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"adrank {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        logger.exception("adrank %s failed with an unexpected error", args.command)
        print(
            f"adrank {args.command}: internal error (traceback above); please report it",
            file=sys.stderr,
        )
        return EXIT_RUNTIME


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
