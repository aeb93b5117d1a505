"""Progress bars for long CLI work: tqdm on a terminal, nothing otherwise (or with -q)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(
    total: int | None, desc: str, unit: str, quiet: bool = False
) -> Iterator[Callable[[int], None] | None]:
    """Yield a ``progress(n)`` callback advancing a bar by ``n``, or ``None`` when not on a TTY.

    Library functions take ``progress: Callable[[int], None] | None``; pass what this yields.

    Args:
        total: Expected total in ``unit``s, or None if unknown.
        desc: Label shown before the bar.
        unit: Unit of ``n``, e.g. ``"rows"``.
        quiet: Suppress the bar (``-q``).
    """
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(
        total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, leave=False
    ) as bar:
        yield bar.update
