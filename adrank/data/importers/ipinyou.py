"""iPinYou one-hot rows (make-ipinyou-data, used by Zhang et al.'s deep-ctr) -> canonical columns.

Source: ``train.fm.txt``/``test.fm.txt``, one impression per line, libFM style::

    <label> <idx>:1 <idx>:1 ...

with at most one active feature per field, plus a featindex file whose lines are
``<field>:<value><TAB><idx>`` (``weekday:2	1``, ``IP:60.22.69.*	45``; every field has an
``other`` bucket). The featindex is found beside the data (``featindex.fm.txt[.gz]`` for
``*.fm.txt`` data, else ``featindex.txt[.gz]``) unless given explicitly.

Output: ``label`` int8 and one string column per field (SPARSE), named as in the featindex and in
its order of first appearance, holding the field's raw value (``"18"`` for hour 18, ``"other"``
for the bucket); a field with no feature in a row is null. The data has no time column beyond
weekday/hour fields, so there is no ``ts``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adrank.data.importers._plan import ImportPlan, format_hint, require_file
from adrank.data.importers._rows import BadRowLog, RowProblem, show_value
from adrank.data.importers._text import TextBlock, iter_blocks, read_head_lines
from adrank.data.importers.types import SourceFormat
from adrank.errors import InputError
from adrank.types import ColumnRole

__all__ = ["plan_ipinyou", "FeatIndex", "load_featindex", "find_featindex"]

_HINT = (
    "iPinYou rows are '<label> <idx>:1 <idx>:1 ...' (label 0 or 1, one feature per field, every "
    "idx listed in the featindex file)"
)
_FEATINDEX_HINT = "featindex lines are '<field>:<value><TAB><index>' with a unique integer index"
_ROW = re.compile(rb"^\s*[01](\s+[0-9]+:\S+)*\s*$")
_DENSE_LOOKUP_MIN = 1 << 20
_TOKEN = r"^(?P<idx>[0-9]{1,18}):(?P<val>.*)$"
# One pattern for the fast (Arrow, RE2) and the slow (Python re) featindex parse, so they agree.
_FEATINDEX_LINE = r"^(?P<field>[^:\t]+):(?P<value>[^\t]*)\t(?P<index>[0-9]{1,18})$"
_FEATINDEX_LINE_BYTES = re.compile(rb"([^:\t]+):([^\t]*)\t([0-9]{1,18})")


@dataclass(frozen=True, slots=True)
class FeatIndex:
    """A featindex file, sorted by index for lookups.

    Example: lines ``hour:18\\t6`` and ``weekday:2\\t1`` give ``fields=("hour", "weekday")``,
    ``sorted_index=[1, 6]``, ``field_code=[1, 0]``, ``values=["2", "18"]``.

    Attributes:
        path: The file read.
        fields: Field names in order of first appearance in the file.
        sorted_index: int64 feature indices, ascending, unique.
        field_code: int32, ``fields`` position of each ``sorted_index`` entry.
        values: string Arrow array, raw value of each ``sorted_index`` entry.
    """

    path: Path
    fields: tuple[str, ...]
    sorted_index: np.ndarray
    field_code: np.ndarray
    values: pa.Array
    dense_lookup: np.ndarray | None = None
    """int32 position of each index (-1 if absent), when the index range is small enough."""

    def lookup(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of feature indices in ``sorted_index`` and a mask of those that exist there.

        Args:
            idx: int64 feature indices (any values).

        Returns:
            ``(pos, known)``: ``pos`` is a valid position everywhere (0 where not ``known``).
        """
        if self.dense_lookup is not None:
            in_range = (idx >= 0) & (idx < len(self.dense_lookup))
            pos = self.dense_lookup[np.where(in_range, idx, 0)]
            known = in_range & (pos >= 0)
            return np.where(known, pos, 0), known
        pos = np.minimum(np.searchsorted(self.sorted_index, idx), len(self.sorted_index) - 1)
        return pos, self.sorted_index[pos] == idx


def find_featindex(data_path: Path) -> Path:
    """The featindex file beside ``data_path``.

    Raises:
        InputError: None of the candidate names exists.
    """
    fm = ".fm." in data_path.name
    names = (
        ("featindex.fm.txt.gz", "featindex.fm.txt") if fm else ("featindex.txt.gz", "featindex.txt")
    )
    for name in names:
        candidate = data_path.parent / name
        if candidate.is_file():
            return candidate
    raise InputError(
        f"no featindex file beside the data (looked for {', '.join(names)})",
        source=str(data_path.parent),
        hint="pass --featindex PATH (the field:value<TAB>index file made with the data)",
    )


def _read_all(path: Path) -> bytes:
    return b"".join(block.data for block in iter_blocks(path))


def _first_featindex_problem(path: Path, data: bytes) -> InputError | None:
    """Slow, exact scan for the first bad featindex line (run only when the fast parse failed)."""
    seen: dict[int, int] = {}
    for line_no, raw in enumerate(data.split(b"\n"), 1):
        line = raw.rstrip(b"\r")
        if not line:
            continue
        where = f"{path}:{line_no}"
        m = _FEATINDEX_LINE_BYTES.fullmatch(line)
        if m is None:
            return InputError(
                f"expected '<field>:<value><TAB><index>', found {show_value(line)}",
                source=where,
                hint=_FEATINDEX_HINT,
            )
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return InputError("line is not UTF-8 text", source=where, hint=_FEATINDEX_HINT)
        index = int(m.group(3))
        if index in seen:
            return InputError(
                f"index {index} appears twice (lines {seen[index]} and {line_no})",
                source=where,
                hint=_FEATINDEX_HINT,
            )
        seen[index] = line_no
        if m.group(1) == b"label":
            return InputError(
                "field name 'label' clashes with the label column",
                source=where,
                hint=_FEATINDEX_HINT,
            )
    if not seen:
        return InputError("featindex has no entries", source=str(path), hint=_FEATINDEX_HINT)
    return None


def _parse_featindex(path: Path, data: bytes) -> FeatIndex:
    """Vectorised parse; raises InputError (without a line) when anything is off."""
    lines = [ln.rstrip(b"\r") for ln in data.split(b"\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InputError("featindex has no entries")
    try:
        arr = pa.array(lines, pa.binary()).cast(pa.string())
    except pa.ArrowInvalid as exc:
        raise InputError(f"featindex is not UTF-8: {exc}") from exc
    parts = pc.extract_regex(arr, _FEATINDEX_LINE)
    if parts.null_count:
        raise InputError("malformed featindex line")
    fields = parts.field("field")
    index = pc.cast(parts.field("index"), pa.int64()).to_numpy()
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    if len(sorted_index) > 1 and np.any(sorted_index[1:] == sorted_index[:-1]):
        raise InputError("duplicate featindex index")
    encoded = pc.dictionary_encode(fields)
    names = tuple(encoded.dictionary.to_pylist())
    if "label" in names:
        raise InputError("featindex field named label")
    codes = encoded.indices.to_numpy().astype(np.int32)
    dense = None
    top = int(sorted_index[-1])
    if top < max(_DENSE_LOOKUP_MIN, 8 * len(sorted_index)):
        # A direct table beats binary search ~10x; its size is bounded by 8 slots per entry.
        dense = np.full(top + 1, -1, dtype=np.int32)
        dense[sorted_index] = np.arange(len(sorted_index), dtype=np.int32)
    return FeatIndex(
        path=path,
        fields=names,
        sorted_index=sorted_index,
        field_code=codes[order],
        values=parts.field("value").take(pa.array(order)),
        dense_lookup=dense,
    )


def load_featindex(path: Path) -> FeatIndex:
    """Read a featindex file (plain or gzip).

    Args:
        path: ``field:value<TAB>index`` lines.

    Returns:
        The parsed index.

    Raises:
        InputError: Naming the first malformed line (no tab, no colon, non-integer or repeated
            index, a field called ``label``) or an empty file.
    """
    data = _read_all(path)
    try:
        return _parse_featindex(path, data)
    except InputError as exc:
        problem = _first_featindex_problem(path, data)
        if problem is None:  # the slow scan agrees every line is fine: report the fast path's words
            problem = InputError(f"cannot read featindex: {exc.message}", source=str(path))
        raise problem from exc


def _lines_array(data: bytes) -> pa.Array:
    """Lines of ``data`` as an Arrow string array, without copying (each keeps its newline)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    offsets = np.concatenate(([0], np.flatnonzero(buf == 10) + 1))
    if offsets[-1] != len(buf):
        offsets = np.append(offsets, len(buf))
    return pa.StringArray.from_buffers(
        len(offsets) - 1, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)
    )


def _validated(lines: pa.Array) -> pa.Array:
    try:
        lines.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise InputError(f"not UTF-8: {exc}") from exc
    return lines


def _text_lines(data: bytes) -> tuple[pa.Array, np.ndarray]:
    """Lines as an Arrow string array, and a mask of lines that are not UTF-8 (blanked)."""
    lines = _lines_array(data)
    try:
        return _validated(lines), np.zeros(len(lines), dtype=bool)
    except InputError:
        raw_lines = data.split(b"\n")
        if data.endswith(b"\n"):
            raw_lines.pop()
        bad = np.zeros(len(raw_lines), dtype=bool)
        for i, line in enumerate(raw_lines):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad[i] = True
        cleaned = b"\n".join(b"" if b else line for b, line in zip(bad, raw_lines, strict=True))
        return _validated(_lines_array(cleaned)), bad


def _cast_int64(text: pa.Array) -> np.ndarray:
    try:
        return pc.cast(text, pa.int64()).to_numpy()
    except pa.ArrowInvalid as exc:
        raise InputError(f"not an integer: {exc}") from exc


def _split_tokens(feat: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``idx:val`` tokens -> (index, well-formed mask, value-is-1 mask).

    Fast path for the usual all-``:1`` block (no regex); otherwise a regex per token.
    """
    if len(feat) and pc.all(pc.ends_with(feat, ":1")).as_py():
        try:
            idx = _cast_int64(pc.utf8_slice_codeunits(feat, 0, -2))
            if idx.min() >= 0:
                ones = np.ones(len(feat), dtype=bool)
                return idx, ones, ones
        except InputError:
            pass  # some index is not a plain integer: take the exact path below
    parts = pc.extract_regex(feat, _TOKEN)
    shape_ok = parts.is_valid().to_numpy(zero_copy_only=False)
    idx = _cast_int64(pc.if_else(pa.array(shape_ok), parts.field("idx"), "0"))
    return idx, shape_ok, _is_one(parts.field("val")) | ~shape_ok


def _repeated_fields(
    feat_row: np.ndarray, field: np.ndarray, tok_ok: np.ndarray, n_rows: int, n_fields: int
) -> np.ndarray:
    """Mask of good tokens whose field already had a token earlier in the same row."""
    dup = np.zeros(len(feat_row), dtype=bool)
    ok_at = np.flatnonzero(tok_ok)
    cells = feat_row[ok_at].astype(np.int64) * n_fields + field[ok_at]
    if not len(cells) or np.bincount(cells, minlength=n_rows * n_fields).max() <= 1:
        return dup
    # Rare: find the second and later occurrences exactly (a stable sort keeps row order).
    order = np.argsort(cells, kind="stable")
    repeated = cells[order][1:] == cells[order][:-1]
    dup[ok_at[order[1:][repeated]]] = True
    return dup


def _is_one(values: pa.Array) -> np.ndarray:
    """Mask of feature values equal to 1 (``"1"`` fast; others such as ``"1.0"`` checked slowly)."""
    ok = pc.equal(values, "1").to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(~ok):
        try:
            ok[i] = float(values[i].as_py()) == 1.0
        except ValueError:
            ok[i] = False
    return ok


@dataclass(frozen=True, slots=True)
class _Features:
    """The feature tokens of one block (every token but each row's label), flat, in row order.

    Attributes:
        text: The tokens.
        row: Line of the block each token is on (0-based).
        rank: Position in its row (1 = first feature).
        shape_ok: Token looks like ``<index>:<value>``.
        value_ok: Its value is 1.
        known: Its index is in the featindex.
        repeated: Its field already had a (valid) token earlier in the row.
        field: Field code of its index (meaningful where ``known``).
        pos: Position of its index in the featindex (meaningful where ``known``).
    """

    text: pa.Array
    row: np.ndarray
    rank: np.ndarray
    shape_ok: np.ndarray
    value_ok: np.ndarray
    known: np.ndarray
    repeated: np.ndarray
    field: np.ndarray
    pos: np.ndarray


class _BlockParser:
    """Turns blocks of one iPinYou file into tables, using its featindex."""

    def __init__(self, path: Path, fi: FeatIndex) -> None:
        self.path = path
        self.fi = fi

    def parse(self, block: TextBlock) -> tuple[pa.Table, list[RowProblem]]:
        """Rows of one block as a table, and one problem per malformed row."""
        fi, nf = self.fi, len(self.fi.fields)
        lines, not_utf8 = _text_lines(block.data)
        n = len(lines)
        tokens = pc.ascii_split_whitespace(lines)
        per_line = np.diff(tokens.offsets.to_numpy())
        flat = tokens.flatten()
        row_of = np.repeat(np.arange(n), per_line)
        # Leading/trailing whitespace yields empty tokens; they are not fields.
        nonempty = pc.greater(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False)
        flat, row_of = flat.filter(pa.array(nonempty)), row_of[nonempty]
        counts = np.bincount(row_of, minlength=n)
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rank = np.arange(len(flat)) - first[row_of]
        has_tokens = counts > 0

        is_label = rank == 0
        label_tok = flat.filter(pa.array(is_label))
        label_rows = row_of[is_label]
        label_ok = pc.is_in(label_tok, value_set=pa.array(["0", "1"])).to_numpy(
            zero_copy_only=False
        )
        labels = np.zeros(n, dtype=np.int8)
        labels[label_rows[label_ok]] = pc.cast(
            label_tok.filter(pa.array(label_ok)), pa.int8()
        ).to_numpy()

        feat_mask = ~is_label
        text = flat.filter(pa.array(feat_mask))
        idx, shape_ok, value_ok = _split_tokens(text)
        pos, known = fi.lookup(idx)
        field = fi.field_code[pos]
        valid = shape_ok & value_ok & known
        feat = _Features(
            text=text,
            row=row_of[feat_mask],
            rank=rank[feat_mask],
            shape_ok=shape_ok,
            value_ok=value_ok,
            known=known,
            repeated=_repeated_fields(row_of[feat_mask], field, valid, n, nf),
            field=field,
            pos=pos,
        )
        good = valid & ~feat.repeated

        bad_row = not_utf8.copy()
        bad_row[label_rows[~label_ok]] = True
        bad_row[feat.row[~good]] = True
        problems = self._problems(block, not_utf8, label_rows, label_ok, label_tok, feat)
        keep = has_tokens & ~bad_row
        out_row = np.cumsum(keep) - 1
        grid = np.full((int(keep.sum()), nf), -1, dtype=np.int64)
        sel = good & keep[feat.row]
        grid[out_row[feat.row[sel]], feat.field[sel]] = feat.pos[sel]
        columns = [pa.array(labels[keep], pa.int8())]
        for f in range(nf):
            col = grid[:, f]
            columns.append(fi.values.take(pa.array(col, mask=col < 0)))
        return pa.table(columns, names=["label", *fi.fields]), problems

    def _problems(
        self,
        block: TextBlock,
        not_utf8: np.ndarray,
        label_rows: np.ndarray,
        label_ok: np.ndarray,
        label_tok: pa.Array,
        feat: _Features,
    ) -> list[RowProblem]:
        """One problem per bad row: the first bad thing in it, reading left to right."""
        found: dict[int, RowProblem] = {}

        def add(row: int, column: str | None, detail: str) -> None:
            if row not in found:
                found[row] = RowProblem(self.path, block.first_line + row, column, detail)

        for row in np.flatnonzero(not_utf8):
            add(int(row), None, "line is not UTF-8 text")
        for i in np.flatnonzero(~label_ok):
            add(
                int(label_rows[i]),
                "label",
                f"expected 0 or 1, found {show_value(label_tok[i].as_py())}",
            )
        fields = self.fi.fields
        bad = ~(feat.shape_ok & feat.value_ok & feat.known) | feat.repeated
        for i in np.flatnonzero(bad):
            token = show_value(feat.text[i].as_py())
            rank = int(feat.rank[i])
            where = f"feature {rank} of the row"
            if not feat.shape_ok[i]:
                detail = f"{where}: expected '<index>:1', found {token}"
                column = f"feature {rank}"
            elif not feat.known[i]:
                detail = f"{where}: index not in the featindex ({self.fi.path.name}), found {token}"
                column = f"feature {rank}"
            elif not feat.value_ok[i]:
                detail = f"{where}: expected value 1 (one-hot), found {token}"
                column = fields[feat.field[i]]
            else:
                detail = (
                    f"{where}: second feature of field {fields[feat.field[i]]!r}, found {token}"
                )
                column = fields[feat.field[i]]
            add(int(feat.row[i]), column, detail)
        return sorted(found.values(), key=lambda p: p.line)


@dataclass(frozen=True, slots=True)
class _IpinyouPart:
    path: Path
    featindex: FeatIndex

    def tables(
        self, bad_rows: BadRowLog, progress: Callable[[int], None] | None
    ) -> Iterator[pa.Table]:
        parser = _BlockParser(self.path, self.featindex)
        # closing(): a malformed row ends the read at once (stops the prefetch, closes the file).
        with contextlib.closing(iter_blocks(self.path)) as blocks:
            for block in blocks:
                table, problems = parser.parse(block)
                bad_rows.report(problems)
                if progress is not None:
                    progress(block.raw_bytes)
                if table.num_rows:
                    yield table


def plan_ipinyou(path: Path, featindex: Path | None = None) -> ImportPlan:
    """Check an iPinYou file's first line, load its featindex and plan the import.

    Args:
        path: Plain or gzip ``*.fm.txt`` data file.
        featindex: The featindex file; None finds it beside ``path``.

    Returns:
        The plan.

    Raises:
        InputError: ``path`` is a directory or empty, line 1 is not an iPinYou row, or the
            featindex is missing or malformed.
    """
    require_file(path, SourceFormat.IPINYOU)
    head = read_head_lines(path)
    if not head:
        raise InputError("file is empty: no data rows", source=str(path), hint=_HINT)
    if not _ROW.match(head[0]):
        raise InputError(
            f"line 1 is not an iPinYou one-hot row ('<label> <idx>:1 ...'): {show_value(head[0])}",
            source=f"{path}:1",
            hint=format_hint(SourceFormat.IPINYOU, head[0], _HINT),
        )
    fi = load_featindex(featindex if featindex is not None else find_featindex(path))
    schema = pa.schema([("label", pa.int8()), *((name, pa.string()) for name in fi.fields)])
    roles = {"label": ColumnRole.LABEL} | {name: ColumnRole.SPARSE for name in fi.fields}
    return ImportPlan(schema=schema, roles=roles, parts=(_IpinyouPart(path, fi),), hint=_HINT)
