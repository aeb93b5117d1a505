"""argparse ``type=`` converters shared by the subcommands (bad values exit 2 with the message)."""

from __future__ import annotations

import argparse

from adrank.errors import InputError
from adrank.units import parse_duration_s, parse_size_bytes

__all__ = ["duration_s", "positive_int", "size_bytes"]


def positive_int(text: str) -> int:
    """Parse an integer >= 1 (``_`` separators allowed: ``1_000``)."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}")
    return value


def size_bytes(text: str) -> int:
    """Parse a size such as ``512M``, ``2GiB`` or ``1048576`` (grammar of :mod:`adrank.units`)."""
    try:
        return parse_size_bytes(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def duration_s(text: str) -> int:
    """Parse a duration such as ``3600``, ``90m``, ``1.5h`` or ``30d`` into whole seconds (grammar
    of :mod:`adrank.units`)."""
    try:
        return parse_duration_s(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
