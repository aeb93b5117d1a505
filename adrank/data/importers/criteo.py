"""Criteo Kaggle Display Advertising Challenge raw rows -> canonical columns.

Source: ``train.txt`` (and samples of it), tab-separated, no header, 40 fields:
``label, I1..I13, C1..C26``. I1..I13 are integer counts (may be negative or empty), C1..C26 are
32-bit hashes written as 8 hex characters (may be empty). ``test.txt`` rows have no label (39
fields). Empty fields become nulls.

Output: ``label`` int8 (labelled files only), ``I1..I13`` float32 (DENSE), ``C1..C26`` string
(SPARSE; the stats stage hashes them). The data has no time column, so there is no ``ts``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from adrank.data.importers._delimited import (
    ColumnSpec,
    DelimitedLayout,
    finish_int_to_float32,
    finish_label,
    read_delimited,
)
from adrank.data.importers._plan import ImportPlan, format_hint, require_file
from adrank.data.importers._rows import BadRowLog
from adrank.data.importers._text import read_head_lines
from adrank.data.importers.types import SourceFormat
from adrank.errors import InputError
from adrank.types import ColumnRole

__all__ = ["plan_criteo", "NUM_DENSE", "NUM_SPARSE"]

NUM_DENSE = 13
NUM_SPARSE = 26
_HINT = (
    "Criteo Kaggle raw rows are tab-separated: label, I1..I13 (integers or empty), "
    "C1..C26 (hex strings or empty); test rows omit the label"
)

_LABEL = ColumnSpec(
    "label", "label", pa.int64(), pa.int8(), ColumnRole.LABEL, "0 or 1", finish_label
)
_DENSE = tuple(
    ColumnSpec(
        f"I{i}",
        f"I{i}",
        pa.int64(),
        pa.float32(),
        ColumnRole.DENSE,
        "an integer or nothing",
        finish_int_to_float32,
    )
    for i in range(1, NUM_DENSE + 1)
)
_SPARSE = tuple(
    ColumnSpec(f"C{i}", f"C{i}", pa.string(), pa.string(), ColumnRole.SPARSE, "UTF-8 text")
    for i in range(1, NUM_SPARSE + 1)
)
_LABELLED = DelimitedLayout("\t", (_LABEL, *_DENSE, *_SPARSE), 0, "label, I1..I13, C1..C26")
_UNLABELLED = DelimitedLayout("\t", (*_DENSE, *_SPARSE), 0, "I1..I13, C1..C26 (unlabelled)")


@dataclass(frozen=True, slots=True)
class _CriteoPart:
    path: Path
    layout: DelimitedLayout

    def tables(
        self, bad_rows: BadRowLog, progress: Callable[[int], None] | None
    ) -> Iterator[pa.Table]:
        return read_delimited(self.path, self.layout, bad_rows, progress)


def plan_criteo(path: Path) -> ImportPlan:
    """Check a Criteo file's first line and plan its import.

    The field count of line 1 decides between labelled (40 fields) and unlabelled (39) rows.

    Args:
        path: Plain or gzip TSV file.

    Returns:
        The plan.

    Raises:
        InputError: ``path`` is a directory, empty, or line 1 is not a Criteo row.
    """
    require_file(path, SourceFormat.CRITEO)
    head = read_head_lines(path)
    if not head:
        raise InputError("file is empty: no data rows", source=str(path), hint=_HINT)
    n_fields = head[0].count(b"\t") + 1
    if n_fields == len(_LABELLED.columns):
        layout = _LABELLED
    elif n_fields == len(_UNLABELLED.columns):
        layout = _UNLABELLED
    else:
        raise InputError(
            f"line 1 has {n_fields} tab-separated fields; Criteo rows have 40 "
            f"(label, I1..I13, C1..C26) or 39 (unlabelled test rows)",
            source=f"{path}:1",
            hint=format_hint(SourceFormat.CRITEO, head[0], _HINT),
        )
    schema = pa.schema([(c.name, c.out_type) for c in layout.columns])
    roles = {c.name: c.role for c in layout.columns}
    return ImportPlan(schema=schema, roles=roles, parts=(_CriteoPart(path, layout),), hint=_HINT)
