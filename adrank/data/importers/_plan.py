"""What a format module hands the import driver: the output schema and how to read each file."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from adrank.data.importers._rows import BadRowLog
from adrank.data.importers.types import SourceFormat
from adrank.errors import InputError
from adrank.types import ColumnRole

__all__ = ["ImportPlan", "SourcePart", "guess_format", "format_hint", "require_file"]


class SourcePart(Protocol):
    """One input file and how to stream it as tables of output columns."""

    @property
    def path(self) -> Path:
        """The input file."""
        ...

    def tables(
        self, bad_rows: BadRowLog, progress: Callable[[int], None] | None
    ) -> Iterator[pa.Table]:
        """Yield converted rows; columns are a subset of the plan's schema, in any order."""
        ...


@dataclass(frozen=True, slots=True)
class ImportPlan:
    """A validated import: the output schema (without role metadata), roles, files, advice.

    Attributes:
        schema: Output columns in file order.
        roles: Role of every output column.
        parts: The files to read, in order.
        hint: Advice appended to malformed-row errors.
    """

    schema: pa.Schema
    roles: dict[str, ColumnRole]
    parts: tuple[SourcePart, ...]
    hint: str


_GUESSES: tuple[tuple[SourceFormat, Callable[[bytes], bool]], ...] = (
    (SourceFormat.CRITEO, lambda line: line.count(b"\t") in (38, 39)),
    (
        SourceFormat.AVAZU,
        lambda line: (
            line.startswith(b"id,click,hour")
            or line.startswith(b"id,hour,")
            or (line.count(b",") in (22, 23) and b"\t" not in line)
        ),
    ),
    (SourceFormat.OBD, lambda line: b"timestamp,item_id,position" in line),
    (SourceFormat.IPINYOU, lambda line: re.match(rb"^[01] [0-9]+:", line) is not None),
)


def guess_format(first_line: bytes) -> SourceFormat | None:
    """The format whose rows (or header) ``first_line`` looks like, if any."""
    for fmt, looks_like in _GUESSES:
        if looks_like(first_line):
            return fmt
    return None


def format_hint(fmt: SourceFormat, first_line: bytes, default: str) -> str:
    """``default``, or a pointer to the right ``--format`` when the line looks like another one."""
    guess = guess_format(first_line)
    if guess is not None and guess is not fmt:
        return f"this looks like {guess.value} data: pass --format {guess.value}"
    return default


def require_file(path: Path, fmt: SourceFormat) -> None:
    """Raise InputError unless ``path`` is a regular file (directories are OBD-only)."""
    if path.is_dir():
        raise InputError(
            f"expected a file for --format {fmt.value}, found a directory",
            source=str(path),
            hint="pass one data file; only --format obd reads a directory",
        )
