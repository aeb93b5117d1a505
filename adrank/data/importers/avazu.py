"""Avazu CTR prediction raw rows -> canonical columns.

Source: ``train.csv`` (and samples of it), comma-separated, 24 fields, with or without the header
line ``id,click,hour,C1,banner_pos,site_id,...,C21``. ``hour`` is ``YYMMDDHH``; ``site_*``,
``app_*``, ``device_id``, ``device_ip`` and ``device_model`` are 8-hex-character hashes; ``C1``,
``banner_pos``, ``device_type``, ``device_conn_type`` and ``C14..C21`` are integers. ``test.csv``
rows have no ``click`` (23 fields). With a header, columns may come in any order.

Output: ``id`` string (KEY: values reach 2**64 - 1, beyond int64), ``label`` int8 (from ``click``),
``ts`` timestamp[s, UTC] (from ``hour``; Avazu gives no time zone, UTC is assumed), the hashed ids
as strings and the anonymised integers as int64 (all SPARSE). Empty fields become nulls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from adrank.data.importers._delimited import (
    ColumnSpec,
    DelimitedLayout,
    finish_label,
    finish_yymmddhh,
    read_delimited,
)
from adrank.data.importers._plan import ImportPlan, format_hint, require_file
from adrank.data.importers._rows import BadRowLog
from adrank.data.importers._text import read_head_lines
from adrank.data.importers.types import SourceFormat
from adrank.errors import InputError
from adrank.types import ColumnRole

__all__ = ["plan_avazu", "AVAZU_COLUMNS"]

_STRING_IDS = (
    "site_id",
    "site_domain",
    "site_category",
    "app_id",
    "app_domain",
    "app_category",
    "device_id",
    "device_ip",
    "device_model",
)
AVAZU_COLUMNS: tuple[str, ...] = (
    "id",
    "click",
    "hour",
    "C1",
    "banner_pos",
    *_STRING_IDS,
    "device_type",
    "device_conn_type",
    *(f"C{i}" for i in range(14, 22)),
)
"""Source columns of Avazu's train.csv, in file order."""

_HINT = (
    "Avazu raw rows are comma-separated: id, click, hour (YYMMDDHH), C1, banner_pos, site_id, ... "
    "C21 (24 fields, 23 without click), optionally under a header line"
)


def _spec(name: str) -> ColumnSpec:
    if name == "id":
        return ColumnSpec("id", "id", pa.string(), pa.string(), ColumnRole.KEY, "UTF-8 text")
    if name == "click":
        return ColumnSpec(
            "click", "label", pa.int64(), pa.int8(), ColumnRole.LABEL, "0 or 1", finish_label
        )
    if name == "hour":
        return ColumnSpec(
            "hour",
            "ts",
            pa.string(),
            pa.timestamp("s", tz="UTC"),
            ColumnRole.TIMESTAMP,
            "a YYMMDDHH hour",
            finish_yymmddhh,
        )
    if name in _STRING_IDS:
        return ColumnSpec(name, name, pa.string(), pa.string(), ColumnRole.SPARSE, "UTF-8 text")
    return ColumnSpec(
        name, name, pa.int64(), pa.int64(), ColumnRole.SPARSE, "an integer or nothing"
    )


_SPECS = {name: _spec(name) for name in AVAZU_COLUMNS}


@dataclass(frozen=True, slots=True)
class _AvazuPart:
    path: Path
    layout: DelimitedLayout

    def tables(
        self, bad_rows: BadRowLog, progress: Callable[[int], None] | None
    ) -> Iterator[pa.Table]:
        return read_delimited(self.path, self.layout, bad_rows, progress)


def _header_layout(path: Path, header: list[str]) -> DelimitedLayout:
    problems = []
    unknown = [n for n in header if n not in _SPECS]
    if unknown:
        problems.append(f"unknown columns {unknown}")
    dupes = sorted({n for n in header if header.count(n) > 1})
    if dupes:
        problems.append(f"repeated columns {dupes}")
    missing = [n for n in AVAZU_COLUMNS if n != "click" and n not in header]
    if missing:
        problems.append(f"missing columns {missing}")
    if problems:
        raise InputError(
            "the header is not Avazu's: " + "; ".join(problems),
            source=f"{path}:1",
            hint=_HINT,
        )
    labelled = "click" in header
    return DelimitedLayout(
        ",",
        tuple(_SPECS[n] for n in header),
        1,
        "Avazu columns as in the header" + ("" if labelled else ", without click"),
    )


def plan_avazu(path: Path) -> ImportPlan:
    """Check an Avazu file's first line and plan its import.

    A first line naming ``id`` and ``hour`` is a header (columns in any order); otherwise line 1
    is data and its field count (24 or 23) says whether rows have ``click``.

    Args:
        path: Plain or gzip CSV file.

    Returns:
        The plan.

    Raises:
        InputError: ``path`` is a directory, empty or header-only, or line 1 is neither an Avazu
            header nor an Avazu row.
    """
    require_file(path, SourceFormat.AVAZU)
    head = read_head_lines(path)
    if not head:
        raise InputError("file is empty: no data rows", source=str(path), hint=_HINT)
    first = head[0]
    names_found = first.decode("utf-8", errors="replace").split(",")
    if "id" in names_found and "hour" in names_found:  # no data row holds these words
        layout = _header_layout(path, names_found)
    else:
        n_fields = first.count(b",") + 1
        if n_fields == len(AVAZU_COLUMNS):
            names: tuple[str, ...] = AVAZU_COLUMNS
        elif n_fields == len(AVAZU_COLUMNS) - 1:
            names = tuple(n for n in AVAZU_COLUMNS if n != "click")
        else:
            raise InputError(
                f"line 1 has {n_fields} comma-separated fields; Avazu rows have 24 "
                f"(id, click, hour, ..., C21) or 23 (test rows, no click)",
                source=f"{path}:1",
                hint=format_hint(SourceFormat.AVAZU, first, _HINT),
            )
        layout = DelimitedLayout(
            ",",
            tuple(_SPECS[n] for n in names),
            0,
            "id, click, hour, C1, ..., C21"
            if "click" in names
            else "id, hour, C1, ..., C21 (no click)",
        )
    # Output order is Avazu's file order whatever the header's order.
    present = {c.source_name for c in layout.columns}
    ordered = [_SPECS[n] for n in AVAZU_COLUMNS if n in present]
    schema = pa.schema([(c.name, c.out_type) for c in ordered])
    roles = {c.name: c.role for c in ordered}
    return ImportPlan(schema=schema, roles=roles, parts=(_AvazuPart(path, layout),), hint=_HINT)
