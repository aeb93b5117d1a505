"""Fast, exact reader of unquoted delimited text (Criteo TSV, Avazu CSV, Open Bandit CSV).

Each block of lines goes first through Arrow's multi-threaded CSV parser with the final column
types (the fast path). Only when that fails (a wrong field count, a value that does not convert)
is the block parsed again slowly to find each malformed row's line number and column: field counts
come from counting delimiters per line with numpy, and bad cells are found by bisecting each
failing column with the same conversion the fast path used, so both paths accept exactly the same
values. None of these sources quotes fields, so quoting is off and one line is one row.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from adrank.data.importers._rows import BadRowLog, RowProblem, show_value
from adrank.data.importers._text import TextBlock, iter_blocks
from adrank.errors import InputError
from adrank.types import ColumnRole

__all__ = [
    "ColumnSpec",
    "DelimitedLayout",
    "read_delimited",
    "finish_label",
    "finish_int_to_float32",
    "finish_required_ts_seconds",
    "finish_yymmddhh",
]

Finisher = Callable[[pa.Array], pa.Array]
_SEPARATOR_NAMES = {"\t": "tab", ",": "comma"}
_BISECT_LEAF = 16
_INCONSISTENT_HINT = "look for stray carriage returns or binary data in those lines"


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One source column and how it becomes an output column.

    Attributes:
        source_name: The column's name in the source (header name or documented name).
        name: Output column name.
        parse_type: Arrow type the text is parsed into (empty fields become null).
        out_type: Arrow type of the output column (``finish`` turns ``parse_type`` into it).
        role: Output column role.
        expected: What a valid value looks like, for error messages ("an integer").
        finish: Vectorised check and conversion from ``parse_type`` to the output type; raises
            InputError on any invalid value. None keeps the parsed column as is.
    """

    source_name: str
    name: str
    parse_type: pa.DataType
    out_type: pa.DataType
    role: ColumnRole
    expected: str
    finish: Finisher | None = None


@dataclass(frozen=True, slots=True)
class DelimitedLayout:
    """The shape of one delimited file.

    Attributes:
        delimiter: One-character field separator.
        columns: Every field of a row, in file order.
        header_lines: Leading lines to skip (0 or 1).
        description: What a row holds, for error messages.
    """

    delimiter: str
    columns: tuple[ColumnSpec, ...]
    header_lines: int
    description: str


def _finish(spec: ColumnSpec, parsed: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if spec.finish is None:
        return parsed
    try:
        return spec.finish(parsed)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InputError(f"value does not convert: {exc}") from exc


def _convert_text(spec: ColumnSpec, raw: pa.Array) -> pa.Array:
    """Binary cells (as the careful path reads them) -> output values, as the fast path converts."""
    try:
        parsed = pc.cast(pc.cast(raw, pa.string()), spec.parse_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InputError(f"value does not convert: {exc}") from exc
    return _finish(spec, parsed)


def _bad_positions(
    arr: pa.Array, convert: Callable[[pa.Array], object], offset: int = 0
) -> list[int]:
    """Indices of the cells ``convert`` rejects, by bisection: O(bad * log n) conversions."""
    try:
        convert(arr)
        return []
    except InputError:
        pass
    if len(arr) <= _BISECT_LEAF:
        bad = []
        for i in range(len(arr)):
            try:
                convert(arr.slice(i, 1))
            except InputError:
                bad.append(offset + i)
        return bad
    mid = len(arr) // 2
    return _bad_positions(arr.slice(0, mid), convert, offset) + _bad_positions(
        arr.slice(mid), convert, offset + mid
    )


class _BlockParser:
    """Parses the blocks of one file with one layout."""

    def __init__(self, path: Path, layout: DelimitedLayout) -> None:
        self.path = path
        self.layout = layout
        self._names = [c.source_name for c in layout.columns]
        self._parse_types = {c.source_name: c.parse_type for c in layout.columns}
        self._raw_types = {c.source_name: pa.binary() for c in layout.columns}
        self._out_names = [c.name for c in layout.columns]

    def _read(
        self, data: bytes, column_types: dict[str, pa.DataType], on_invalid: object
    ) -> pa.Table:
        return pv.read_csv(
            io.BytesIO(data),
            read_options=pv.ReadOptions(column_names=self._names, use_threads=True),
            parse_options=pv.ParseOptions(
                delimiter=self.layout.delimiter,
                quote_char=False,
                escape_char=False,
                newlines_in_values=False,
                ignore_empty_lines=True,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pv.ConvertOptions(
                column_types=column_types,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )

    def fast(self, data: bytes) -> pa.Table:
        """Parse and convert a block with no malformed rows.

        Raises:
            InputError: Some row is malformed (the careful path then says which).
        """
        wrong_shape = 0

        def count_invalid(_row: object) -> str:
            nonlocal wrong_shape
            wrong_shape += 1
            return "skip"

        try:
            table = self._read(data, self._parse_types, count_invalid)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(f"value does not convert: {exc}") from exc
        if wrong_shape:
            raise InputError(f"{wrong_shape} rows have a wrong field count")
        columns = [
            _finish(spec, col) for spec, col in zip(self.layout.columns, table.columns, strict=True)
        ]
        return pa.table(columns, names=self._out_names)

    def careful(self, block: TextBlock) -> tuple[pa.Table, list[RowProblem]]:
        """Parse a block that has malformed rows: the good rows, and one problem per bad row."""
        layout, n_fields = self.layout, len(self.layout.columns)
        data = block.data
        buf = np.frombuffer(data, dtype=np.uint8)
        newlines = np.flatnonzero(buf == 10)
        ends = newlines if data.endswith(b"\n") else np.append(newlines, len(buf))
        starts = np.concatenate(([0], ends[:-1] + 1))
        delims = np.flatnonzero(buf == ord(layout.delimiter))
        n_found = np.searchsorted(delims, ends) - np.searchsorted(delims, starts) + 1
        lengths = ends - starts
        first_byte = buf[np.minimum(starts, max(len(buf) - 1, 0))]
        blank = (lengths == 0) | ((lengths == 1) & (first_byte == 13))  # "" or a lone "\r"
        wrong = ~blank & (n_found != n_fields)
        line_no = block.first_line + np.arange(len(starts))
        sep = _SEPARATOR_NAMES.get(layout.delimiter, repr(layout.delimiter))
        problems = [
            RowProblem(
                self.path,
                int(line_no[i]),
                None,
                f"expected {n_fields} {sep}-separated fields ({layout.description}), "
                f"found {int(n_found[i])}",
            )
            for i in np.flatnonzero(wrong)
        ]
        row_lines = line_no[~blank & ~wrong]
        try:
            raw = self._read(data, self._raw_types, lambda _row: "skip")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            message, where = self._inconsistent(block, str(exc))
            raise InputError(message, source=where, hint=_INCONSISTENT_HINT) from exc
        if raw.num_rows != len(row_lines):
            message, where = self._inconsistent(
                block, f"{raw.num_rows} rows parsed, {len(row_lines)} expected"
            )
            raise InputError(message, source=where, hint=_INCONSISTENT_HINT)
        bad_rows: dict[int, RowProblem] = {}
        for k, spec in enumerate(layout.columns):
            col = raw.column(k).combine_chunks()
            for i in _bad_positions(col, lambda a, s=spec: _convert_text(s, a)):  # type: ignore[misc]
                if i not in bad_rows:
                    bad_rows[i] = RowProblem(
                        self.path,
                        int(row_lines[i]),
                        spec.source_name,
                        f"field {k + 1} of {n_fields}: expected {spec.expected}, "
                        f"found {show_value(col[i].as_py())}",
                    )
        keep = np.ones(raw.num_rows, dtype=bool)
        keep[list(bad_rows)] = False
        good = raw.filter(pa.array(keep)) if bad_rows else raw
        columns = [
            _convert_text(spec, good.column(k).combine_chunks())
            for k, spec in enumerate(layout.columns)
        ]
        problems.extend(bad_rows.values())
        return pa.table(columns, names=self._out_names), problems

    def _inconsistent(self, block: TextBlock, detail: str) -> tuple[str, str]:
        """Message and source for a block Arrow splits into rows differently than we do."""
        last = block.first_line + block.data.count(b"\n")
        return (
            f"lines {block.first_line}-{last} cannot be split into rows consistently ({detail})",
            f"{self.path}:{block.first_line}",
        )


def read_delimited(
    path: Path,
    layout: DelimitedLayout,
    bad_rows: BadRowLog,
    progress: Callable[[int], None] | None = None,
) -> Iterator[pa.Table]:
    """Stream ``path`` as tables of converted rows, one per block of lines.

    Args:
        path: Plain or gzip text file.
        layout: Its shape.
        bad_rows: Malformed-row policy; raises through here unless skipping.
        progress: Called with on-disk bytes consumed after each block.

    Yields:
        Tables with the layout's output names; blocks whose rows were all skipped yield nothing.

    Raises:
        InputError: Unreadable file, or a malformed row when not skipping.
    """
    parser = _BlockParser(path, layout)
    # closing(): a malformed row ends the read at once (stops the prefetch, closes the file).
    with contextlib.closing(iter_blocks(path, skip_lines=layout.header_lines)) as blocks:
        for block in blocks:
            try:
                table = parser.fast(block.data)
            except InputError:
                table, problems = parser.careful(block)
                bad_rows.report(problems)
            if progress is not None:
                progress(block.raw_bytes)
            if table.num_rows:
                yield table


# ---- finishers: vectorised checks and conversions, shared by the format modules -------------


def finish_label(parsed: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """int64 click labels -> int8; every value must be 0 or 1."""
    if parsed.null_count:
        raise InputError("label is empty")
    if len(parsed):
        mm = pc.min_max(parsed).as_py()
        if mm["min"] < 0 or mm["max"] > 1:
            raise InputError("label is not 0 or 1")
    return pc.cast(parsed, pa.int8())


def finish_int_to_float32(parsed: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Integer counts -> float32 dense values (large counts round to the nearest float32)."""
    return pc.cast(parsed, pa.float32(), safe=False)


_TS_S_UTC = pa.timestamp("s", tz="UTC")


def finish_yymmddhh(parsed: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``YYMMDDHH`` strings (Avazu ``hour``, taken as UTC) -> timestamp[s, UTC]; none may be empty.

    Only distinct values are parsed: a log has few distinct hours.
    """
    if parsed.null_count:
        raise InputError("hour is empty")
    arr = parsed.combine_chunks() if isinstance(parsed, pa.ChunkedArray) else parsed
    encoded = pc.dictionary_encode(arr)
    distinct = encoded.dictionary
    if len(distinct) and not pc.all(pc.match_substring_regex(distinct, r"^[0-9]{8}$")).as_py():
        raise InputError("hour is not 8 digits")
    stamps = pc.strptime(distinct, format="%y%m%d%H", unit="s", error_is_null=False)
    return pc.cast(stamps, _TS_S_UTC).take(encoded.indices)


def finish_required_ts_seconds(parsed: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """timestamp[us, UTC] -> timestamp[s, UTC], floored to the second; none may be empty."""
    if parsed.null_count:
        raise InputError("timestamp is empty")
    return pc.cast(pc.floor_temporal(parsed, unit="second"), _TS_S_UTC)
