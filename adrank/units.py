"""Sizes and durations written by people (``16GiB``, ``512M``, ``1.5TB``; ``90m``, ``1.5h``,
``30d``): one grammar each for every flag and file.

``K/M/G/T/P`` and ``KiB/MiB/...`` are powers of 1024; ``KB/MB/GB/...`` are powers of 1000, as disk
vendors and HBM specs write them. Durations are a number (fractions allowed) with an optional unit
``s``, ``m``, ``h``, ``d`` or ``w`` that must come to whole seconds. Pure Python, so the CLI can
use it without slowing ``--help``.
"""

from __future__ import annotations

import re

from adrank.errors import InputError

__all__ = ["parse_duration_s", "parse_size_bytes", "scaled_bytes"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)
_POW = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def scaled_bytes(text: str) -> float | None:
    """The bytes ``text`` names (``"1.5GiB"`` -> 1610612736.0), or None if it is not a size."""
    m = _SIZE.match(text)
    if not m:
        return None
    num, prefix, binary, b = m.groups()
    base = 1000 if (b and not binary and prefix) else 1024
    return float(num) * base ** _POW[prefix.lower()]


def parse_size_bytes(text: str | int, *, source: str = "size") -> int:
    """Parse ``16GiB``, ``16G``, ``1.5TB``, ``512MiB`` or ``1024`` into bytes.

    ``G``/``GiB`` are powers of 1024; ``GB`` is a power of 1000 (as disk vendors and HBM specs
    write it).

    Args:
        text: The size, or an int already in bytes.
        source: The flag or field, for the error.

    Returns:
        Bytes (>= 1).

    Raises:
        InputError: Not a positive size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        scaled = scaled_bytes(str(text))
        if scaled is None:
            raise InputError(
                f"expected a size like 16GiB, 512MiB or 1024, found {text!r}", source=source
            )
        value = scaled
    if value < 1 or value != int(value):
        raise InputError(f"expected a whole number of bytes >= 1, found {text!r}", source=source)
    return int(value)


def parse_duration_s(text: str, *, source: str = "duration") -> int:
    """Parse ``3600``, ``3600s``, ``90m``, ``1.5h``, ``30d`` or ``2w`` into whole seconds.

    Args:
        text: The duration.
        source: The flag or field, for the error.

    Returns:
        Seconds (>= 1).

    Raises:
        InputError: Not a duration, or not a whole number of seconds >= 1.
    """
    m = _DURATION.match(text)
    if not m:
        raise InputError(
            f"expected a duration like 3600, 3600s, 90m, 1.5h, 30d or 2w, found {text!r}",
            source=source,
        )
    seconds = float(m.group(1)) * _UNIT_S[m.group(2).lower()]
    if seconds < 1 or seconds != int(seconds):
        raise InputError(f"expected a whole number of seconds >= 1, found {text!r}", source=source)
    return int(seconds)
