"""Malformed-row bookkeeping shared by every importer: fail on the first one, or skip and count.

Policy: by default an import stops at the first malformed row (the earliest line number in the
block where one is found) and raises an InputError naming the file, the line and the column. With
``skip_bad_rows`` such rows are left out of the output and counted; the first few are kept as
examples for the summary. Blank lines are not rows and are ignored either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from adrank.errors import InputError

__all__ = ["RowProblem", "BadRowLog", "MAX_EXAMPLES", "show_value"]

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5
"""Skipped rows described in the summary (and logged as warnings)."""
_SHOW_CHARS = 40


def show_value(value: bytes | str | None) -> str:
    """Render a raw field for a message: quoted, at most 40 characters; None is an empty field."""
    if value is None:
        return "an empty field"
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    if len(text) > _SHOW_CHARS:
        text = text[: _SHOW_CHARS - 3] + "..."
    return repr(text)


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why one row of one file is malformed.

    Attributes:
        path: The file.
        line: 1-based line number in the (decompressed) file.
        column: Source column or field that is wrong, or None when the row's shape is wrong.
        detail: What was expected and what was found.
    """

    path: Path
    line: int
    column: str | None
    detail: str

    def where(self) -> str:
        """``path:line`` plus ``, column NAME`` when a column is known."""
        loc = f"{self.path}:{self.line}"
        return f"{loc}, column {self.column}" if self.column else loc

    def describe(self) -> str:
        """One line for summaries and logs."""
        return f"{self.where()}: {self.detail}"

    def to_error(self, hint: str) -> InputError:
        """The InputError raised when this row stops an import."""
        col = f", column {self.column!r}" if self.column else ""
        return InputError(
            f"malformed row at line {self.line}{col}: {self.detail}",
            source=self.where(),
            hint=f"{hint}; or pass --skip-bad-rows (skip_bad_rows=True) to skip and count them",
        )


class BadRowLog:
    """Applies the malformed-row policy and counts what was skipped.

    Args:
        skip_bad_rows: Skip and count malformed rows instead of raising on the first one.
        hint: Format-specific advice appended to the error.
    """

    def __init__(self, skip_bad_rows: bool, hint: str) -> None:
        self.skip_bad_rows = skip_bad_rows
        self.hint = hint
        self.rows_skipped = 0
        self.examples: list[str] = []

    def report(self, problems: list[RowProblem]) -> None:
        """Record the malformed rows of one block (one problem per row).

        Raises:
            InputError: ``skip_bad_rows`` is off; names the earliest of ``problems``.
        """
        if not problems:
            return
        if not self.skip_bad_rows:
            raise min(problems, key=lambda p: p.line).to_error(self.hint)
        for p in sorted(problems, key=lambda p: (str(p.path), p.line)):
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(p.describe())
                logger.warning("skipping malformed row %s", p.describe())
        self.rows_skipped += len(problems)
