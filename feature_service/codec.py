"""Value encoding of the feature store: a compact fixed binary layout per group schema version.

One value holds one entity version of every feature in its group. Layout (little-endian, packed)::

    offset 0   u8    codec format (1)
           1   u16   schema version the value was written under
           3   i64   event_us
          11   i64   created_us
          19   ceil(F/8) bytes null bitmap, bit i (LSB first) set = feature i is null
               then every fixed-width feature in schema order: a scalar's itemsize bytes, a
               vector's dim * itemsize bytes (nulls are zero-filled)
               then every variable-width feature in schema order: u32 count, then count elements
               (LIST) or count UTF-8 bytes (STRING scalar); a null has count 0

F is the number of features of that schema version. Schema evolution only appends features, so a
value written under an older version decodes with that version's (prefix) layout and the newer
features come back null. Never pickle: the layout is documented here and decodable without Python.

Both directions are vectorised with numpy over a whole batch: encoding fills a packed structured
array for the fixed part and scatters variable parts with index arithmetic; decoding concatenates
the values, gathers the fixed part with one fancy index per schema version, and walks the (few)
variable-width features column by column, never row by row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from adrank.errors import InputError
from feature_service.types import Dtype, FeatureColumn, FeatureGroup, FeatureSpec, Shape

__all__ = [
    "CODEC_FORMAT_VERSION",
    "HEADER_BYTES",
    "ValueCodec",
    "DecodedValues",
    "check_columns",
    "empty_column",
    "read_headers",
]

CODEC_FORMAT_VERSION = 1
"""First byte of every value; a reader refuses values of another format."""

_HEADER_DTYPE = np.dtype([("fmt", "u1"), ("schema", "<u2"), ("event", "<i8"), ("created", "<i8")])
HEADER_BYTES = _HEADER_DTYPE.itemsize
"""Bytes before the null bitmap (19)."""

# Rows per fancy-index gather, so that decoding a million values never builds a 1M x width index.
_GATHER_CHUNK_ROWS = 32_768


@dataclass(frozen=True, slots=True, eq=False)
class DecodedValues:
    """Values decoded into columns.

    Args:
        found: bool per input value: it was not None.
        event_us: Event time per row (0 where not found).
        created_us: Created time per row (0 where not found).
        columns: Requested features, in request order.
    """

    found: np.ndarray
    event_us: np.ndarray
    created_us: np.ndarray
    columns: dict[str, FeatureColumn]


@dataclass(frozen=True, slots=True, eq=False)
class _FixedGroup:
    """Fixed-width features of one value type and width, decoded together: one byte gather pulls
    all of them out of the rows, one transposing copy makes each a contiguous column.

    Args:
        names: Feature names, in schema order.
        positions: Each feature's index in the schema (its null bit).
        dtype: Their numpy dtype.
        dim: Values per row (1 for a scalar).
        vector: They are vectors (columns of shape (n, dim)), not scalars.
        byte_index: Byte positions within the fixed part: feature after feature, each its
            ``dim * itemsize`` bytes.
    """

    names: tuple[str, ...]
    positions: tuple[int, ...]
    dtype: np.dtype[Any]
    dim: int
    vector: bool
    byte_index: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class _Layout:
    """Byte layout of values written under one schema version."""

    features: tuple[FeatureSpec, ...]
    fixed_dtype: np.dtype[Any]
    fixed_index: dict[str, int]
    var_index: dict[str, int]
    var_specs: tuple[FeatureSpec, ...]
    fixed_groups: tuple[_FixedGroup, ...]

    @property
    def fixed_bytes(self) -> int:
        return int(self.fixed_dtype.itemsize)


def _field(i: int) -> str:
    return f"f{i}"


def _make_layout(features: tuple[FeatureSpec, ...]) -> _Layout:
    fields: list[tuple[Any, ...]] = [
        ("fmt", "u1"),
        ("schema", "<u2"),
        ("event", "<i8"),
        ("created", "<i8"),
        ("nulls", "u1", ((len(features) + 7) // 8,)),
    ]
    fixed_index: dict[str, int] = {}
    var_index: dict[str, int] = {}
    var_specs: list[FeatureSpec] = []
    for i, spec in enumerate(features):
        if spec.fixed_width:
            if spec.shape is Shape.VECTOR:
                fields.append((_field(i), spec.dtype.numpy.str, (spec.dim,)))
            else:
                fields.append((_field(i), spec.dtype.numpy.str))
            fixed_index[spec.name] = i
        else:
            var_index[spec.name] = i
            var_specs.append(spec)
    dtype = np.dtype(fields)
    return _Layout(
        features, dtype, fixed_index, var_index, tuple(var_specs), _fixed_groups(features, dtype)
    )


def _fixed_groups(
    features: tuple[FeatureSpec, ...], dtype: np.dtype[Any]
) -> tuple[_FixedGroup, ...]:
    by_kind: dict[tuple[str, int, bool], list[int]] = {}
    for i, spec in enumerate(features):
        if spec.fixed_width:
            vector = spec.shape is Shape.VECTOR
            kind = (spec.dtype.numpy.str, spec.dim if vector else 1, vector)
            by_kind.setdefault(kind, []).append(i)
    groups = []
    for (np_str, dim, vector), positions in by_kind.items():
        item = np.dtype(np_str).itemsize
        assert dtype.fields is not None
        starts = [int(dtype.fields[_field(i)][1]) for i in positions]
        index = np.concatenate([np.arange(o, o + dim * item) for o in starts]).astype(np.intp)
        groups.append(
            _FixedGroup(
                tuple(features[i].name for i in positions),
                tuple(positions),
                np.dtype(np_str),
                dim,
                vector,
                index,
            )
        )
    return tuple(groups)


def empty_column(spec: FeatureSpec, n: int) -> FeatureColumn:
    """An all-null column of ``n`` rows for ``spec``."""
    valid = np.zeros(n, dtype=bool)
    if spec.fixed_width:
        shape = (n, spec.dim) if spec.shape is Shape.VECTOR else (n,)
        return FeatureColumn(spec, np.zeros(shape, dtype=spec.dtype.numpy), valid)
    return FeatureColumn(
        spec, np.zeros(0, dtype=spec.dtype.numpy), valid, np.zeros(n + 1, dtype=np.int64)
    )


def check_columns(group: FeatureGroup, columns: Mapping[str, FeatureColumn], n: int) -> None:
    """Check that ``columns`` hold exactly the group's features with ``n`` rows of the right layout.

    Raises:
        InputError: Every problem found, each naming the feature.
    """
    problems: list[InputError] = []
    declared = set(group.feature_names)
    missing = [f for f in group.feature_names if f not in columns]
    unknown = sorted(set(columns) - declared)
    if missing:
        problems.append(
            InputError(
                f"missing columns for features {missing} of group {group.name!r}",
                source=f"{group.name}: {', '.join(missing)}",
                hint="pass every feature of the group; use an all-null column for absent values",
            )
        )
    if unknown:
        problems.append(
            InputError(
                f"columns {unknown} are not features of group {group.name!r} "
                f"(features: {', '.join(group.feature_names)})",
                source=f"{group.name}: {', '.join(unknown)}",
                hint="register the features first (register_group with allow_new_features=True)",
            )
        )
    for spec in group.features:
        col = columns.get(spec.name)
        if col is None:
            continue
        problem = _column_problem(spec, col, n)
        if problem:
            problems.append(
                InputError(
                    f"feature {spec.name!r} ({spec.describe()}): {problem}",
                    source=f"{group.name}.{spec.name}",
                )
            )
    if problems:
        raise InputError.from_problems(problems)


def _column_problem(spec: FeatureSpec, col: FeatureColumn, n: int) -> str | None:
    if col.valid.shape != (n,) or col.valid.dtype != np.bool_:
        return (
            f"valid must be a bool array of shape ({n},), found {col.valid.dtype} {col.valid.shape}"
        )
    if col.values.dtype != spec.dtype.numpy:
        return f"values must have dtype {spec.dtype.numpy}, found {col.values.dtype}"
    if spec.fixed_width:
        want = (n, spec.dim) if spec.shape is Shape.VECTOR else (n,)
        if col.values.shape != want:
            return f"values must have shape {want}, found {col.values.shape}"
        return None
    off = col.offsets
    if off is None or off.shape != (n + 1,) or col.values.ndim != 1:
        return f"needs flat values and offsets of shape ({n + 1},)"
    if n and (off[0] < 0 or off[-1] > col.values.shape[0] or np.any(np.diff(off) < 0)):
        return "offsets must be non-decreasing and within the values"
    return None


def read_headers(values: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Event and created times of encoded values, without decoding the features.

    Args:
        values: Encoded values (no None).

    Returns:
        ``(event_us, created_us)``, int64 arrays.

    Raises:
        ValueError: A value is too short or of another codec format (corrupt row).
    """
    joined = b"".join([v[:HEADER_BYTES] for v in values])
    if len(joined) != len(values) * HEADER_BYTES:
        raise ValueError("value shorter than its header")
    hdr = np.frombuffer(joined, dtype=_HEADER_DTYPE)
    if hdr.shape[0] and not np.all(hdr["fmt"] == CODEC_FORMAT_VERSION):
        raise ValueError(f"value codec format is not {CODEC_FORMAT_VERSION}")
    return hdr["event"].astype(np.int64), hdr["created"].astype(np.int64)


class ValueCodec:
    """Encodes and decodes one group's values, for every schema version of the group.

    Args:
        group: The group as registered (its ``schema_version`` is the one written).
    """

    def __init__(self, group: FeatureGroup) -> None:
        self.group = group
        self._layouts: dict[int, _Layout] = {}

    def _layout(self, schema_version: int) -> _Layout:
        layout = self._layouts.get(schema_version)
        if layout is None:
            if not 1 <= schema_version <= self.group.schema_version:
                raise ValueError(
                    f"value of group {self.group.name!r} has schema version {schema_version}; "
                    f"known versions are 1..{self.group.schema_version}"
                )
            layout = _make_layout(self.group.features_at(schema_version))
            self._layouts[schema_version] = layout
        return layout

    def encode(
        self,
        event_us: np.ndarray,
        created_us: np.ndarray,
        columns: Mapping[str, FeatureColumn],
    ) -> list[bytes]:
        """Encode n rows under the group's current schema version.

        Args:
            event_us: int64 event times, shape (n,).
            created_us: int64 created times, shape (n,).
            columns: Every feature of the group (checked by :func:`check_columns` at the boundary).

        Returns:
            n encoded values.
        """
        layout = self._layout(self.group.schema_version)
        n = int(event_us.shape[0])
        rec = np.zeros(n, dtype=layout.fixed_dtype)
        rec["fmt"] = CODEC_FORMAT_VERSION
        rec["schema"] = self.group.schema_version
        rec["event"] = event_us
        rec["created"] = created_us
        nulls = np.empty((n, len(layout.features)), dtype=bool)
        for i, spec in enumerate(layout.features):
            nulls[:, i] = ~columns[spec.name].valid
        rec["nulls"] = np.packbits(nulls, axis=1, bitorder="little")
        for name, i in layout.fixed_index.items():
            col = columns[name]
            values = col.values
            if not col.valid.all():
                # Zero-fill nulls so equal inputs give equal bytes.
                mask = ~col.valid if values.ndim == 1 else ~col.valid[:, None]
                values = np.where(mask, np.zeros((), dtype=values.dtype), values)
            rec[_field(i)] = values
        fixed = rec.view(np.uint8).reshape(n, layout.fixed_bytes)
        if not layout.var_specs:
            from feature_service.keys import split_fixed

            return split_fixed(fixed, layout.fixed_bytes)
        return self._encode_var(layout, fixed, columns)

    def _encode_var(
        self, layout: _Layout, fixed: np.ndarray, columns: Mapping[str, FeatureColumn]
    ) -> list[bytes]:
        n, width = fixed.shape
        parts = []  # (counts, nbytes, src_byte_start, data bytes) per variable feature
        row_len = np.full(n, width, dtype=np.int64)
        for spec in layout.var_specs:
            col = columns[spec.name]
            assert col.offsets is not None
            off = col.offsets.astype(np.int64, copy=False)
            counts = np.where(col.valid, off[1:] - off[:-1], 0)
            item = spec.dtype.itemsize
            data = np.ascontiguousarray(col.values).view(np.uint8).reshape(-1)
            parts.append((counts, counts * item, off[:-1] * item, data))
            row_len += 4 + counts * item
        ends = np.cumsum(row_len)
        starts = ends - row_len
        out = np.empty(int(ends[-1]) if n else 0, dtype=np.uint8)
        _scatter_rows(out, starts, fixed)
        pos = starts + width
        for counts, nbytes, src_start, data in parts:
            _scatter_rows(out, pos, counts.astype("<u4").view(np.uint8).reshape(n, 4))
            pos = pos + 4
            _copy_ranges(out, pos, data, src_start, nbytes)
            pos = pos + nbytes
        buf = out.tobytes()
        return [buf[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]

    def _specs(self, features: Sequence[str] | None) -> tuple[FeatureSpec, ...]:
        if features is None:
            return self.group.features
        return tuple(self.group.feature(f) for f in features)

    def decode(
        self, values: Sequence[bytes | None], features: Sequence[str] | None = None
    ) -> DecodedValues:
        """Decode values (None = missing) into columns.

        Args:
            values: Encoded values of this group, any mix of schema versions; None for missing rows.
            features: Features to decode (default: all), each a feature of the group.

        Returns:
            Decoded columns; rows whose value is None are not found and null.

        Raises:
            NotFoundError: A requested feature is not in the group.
            ValueError: A value is corrupt (wrong format byte, unknown schema version, bad lengths).
        """
        specs = self._specs(features)
        n = len(values)
        present: Sequence[bytes] = (
            cast("Sequence[bytes]", values)
            if None not in values
            else [v for v in values if v is not None]
        )
        m = len(present)
        if m == 0:
            zeros = np.zeros(n, dtype=np.int64)
            cols = {s.name: empty_column(s, n) for s in specs}
            return DecodedValues(np.zeros(n, dtype=bool), zeros, zeros.copy(), cols)
        buf = np.frombuffer(b"".join(present), dtype=np.uint8)
        lens = np.fromiter(map(len, present), dtype=np.int64, count=m)
        ends = np.cumsum(lens)
        starts = ends - lens
        if lens.min() < HEADER_BYTES:
            raise ValueError("value shorter than its header")
        if np.any(buf[starts] != CODEC_FORMAT_VERSION):
            raise ValueError(f"value codec format is not {CODEC_FORMAT_VERSION}")
        schema = buf[starts + 1].astype(np.int64) | (buf[starts + 2].astype(np.int64) << 8)
        if m == n and schema.min() == schema.max():
            # The common case (every row found, one schema version): decoded arrays are the result.
            layout = self._layout(int(schema[0]))
            part = self._decode_part(layout, present, buf, starts, ends, specs)
            cols = {}
            for spec in specs:
                if spec.name in part.fixed:
                    vals, valid = part.fixed[spec.name]
                    cols[spec.name] = FeatureColumn(spec, vals, valid)
                elif spec.name in part.var:
                    cols[spec.name] = _gather_var(spec, buf, *part.var[spec.name])
                else:
                    cols[spec.name] = empty_column(spec, n)
            return DecodedValues(np.ones(n, dtype=bool), part.event_us, part.created_us, cols)
        return self._decode_mixed(values, present, specs, buf, starts, ends, schema)

    def _decode_mixed(
        self,
        values: Sequence[bytes | None],
        present: Sequence[bytes],
        specs: tuple[FeatureSpec, ...],
        buf: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        schema: np.ndarray,
    ) -> DecodedValues:
        """Missing rows or several schema versions: decode per version and scatter into place."""
        n = len(values)
        found = np.array([v is not None for v in values], dtype=bool)
        rows = np.flatnonzero(found)
        event_us = np.zeros(n, dtype=np.int64)
        created_us = np.zeros(n, dtype=np.int64)
        fixed = {s.name: empty_column(s, n) for s in specs if s.fixed_width}
        var = {
            s.name: (np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64), np.zeros(n, np.int64))
            for s in specs
            if not s.fixed_width
        }
        for version in np.unique(schema).tolist():
            sel = np.flatnonzero(schema == version)
            part = self._decode_part(
                self._layout(version),
                [present[i] for i in sel.tolist()],
                buf,
                starts[sel],
                ends[sel],
                specs,
            )
            out = rows[sel]
            event_us[out] = part.event_us
            created_us[out] = part.created_us
            for name, (vals, valid) in part.fixed.items():
                fixed[name].values[out] = vals
                fixed[name].valid[out] = valid
            for name, arrays in part.var.items():
                for dest, src in zip(var[name], arrays, strict=True):
                    dest[out] = src
        cols = {}
        for spec in specs:
            if spec.fixed_width:
                cols[spec.name] = fixed[spec.name]
            else:
                cols[spec.name] = _gather_var(spec, buf, *var[spec.name])
        return DecodedValues(found, event_us, created_us, cols)

    def _decode_part(
        self,
        layout: _Layout,
        values: Sequence[bytes],
        buf: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        specs: tuple[FeatureSpec, ...],
    ) -> _Part:
        """Decode values of one schema version (all present; ``starts``/``ends`` locate them in
        ``buf``, their concatenation)."""
        width = layout.fixed_bytes
        m = starts.shape[0]
        lens = ends - starts
        if lens.min() < width:
            raise ValueError("value shorter than its schema's fixed part")
        if not layout.var_specs and lens.max() == width and ends[-1] - starts[0] == m * width:
            # Contiguous equal-width values: a reshape, no copy.
            fixed_u8 = buf[int(starts[0]) : int(ends[-1])].reshape(m, width)
        else:
            # Slicing each value's fixed prefix costs ~0.1 us per row, less than a fancy-index
            # gather of m x width bytes.
            fixed_u8 = np.frombuffer(b"".join([v[:width] for v in values]), dtype=np.uint8)
            fixed_u8 = fixed_u8.reshape(m, width)
        rec = fixed_u8.view(layout.fixed_dtype).reshape(m)
        nulls = np.unpackbits(rec["nulls"], axis=1, count=len(layout.features), bitorder="little")
        # One row of validity per feature, each contiguous.
        valid = np.ascontiguousarray(nulls.T == 0)
        wanted = {s.name for s in specs}
        part = _Part(rec["event"].astype(np.int64), rec["created"].astype(np.int64), {}, {})
        for g in layout.fixed_groups:
            if wanted.isdisjoint(g.names):
                continue
            k = len(g.names)
            # (m, k * dim) values -> (k, m, dim): feature j's column is block[j], contiguous.
            gathered = np.ascontiguousarray(np.take(fixed_u8, g.byte_index, axis=1))
            block = gathered.view(g.dtype).reshape(m, k, g.dim)
            block = np.ascontiguousarray(block.transpose(1, 0, 2))
            for j, name in enumerate(g.names):
                if name in wanted:
                    col = block[j] if g.vector else block[j, :, 0]
                    part.fixed[name] = (col, valid[g.positions[j]])
        pos = starts + width
        for spec in layout.var_specs:
            if np.any(pos + 4 > ends):
                raise ValueError(f"value too short for the length of feature {spec.name!r}")
            counts = _gather(buf, pos, 4).view("<u4").reshape(m).astype(np.int64)
            if spec.name in wanted:
                valid = nulls[:, layout.var_index[spec.name]] == 0
                part.var[spec.name] = (valid, pos + 4, counts)
            pos = pos + 4 + counts * spec.dtype.itemsize
            if np.any(pos > ends):
                raise ValueError(f"value overruns its length in feature {spec.name!r}")
        if np.any(pos != ends):
            raise ValueError("value length does not match its schema layout")
        return part


@dataclass(frozen=True, slots=True, eq=False)
class _Part:
    """Decoded values of one schema version: per-row times, fixed columns ``name -> (values,
    valid)`` and variable columns ``name -> (valid, data byte start, element count)``."""

    event_us: np.ndarray
    created_us: np.ndarray
    fixed: dict[str, tuple[np.ndarray, np.ndarray]]
    var: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _gather(buf: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``out[i] = buf[starts[i]:starts[i] + width]`` for every i, as an (m, width) uint8 array."""
    m = starts.shape[0]
    out = np.empty((m, width), dtype=np.uint8)
    ar = np.arange(width, dtype=np.int64)
    for a in range(0, m, _GATHER_CHUNK_ROWS):
        b = min(m, a + _GATHER_CHUNK_ROWS)
        out[a:b] = buf[starts[a:b, None] + ar]
    return out


def _scatter_rows(out: np.ndarray, starts: np.ndarray, rows: np.ndarray) -> None:
    """``out[starts[i]:starts[i] + width] = rows[i]`` for every i."""
    m, width = rows.shape
    ar = np.arange(width, dtype=np.int64)
    for a in range(0, m, _GATHER_CHUNK_ROWS):
        b = min(m, a + _GATHER_CHUNK_ROWS)
        out[starts[a:b, None] + ar] = rows[a:b]


def _range_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[i], starts[i] + lengths[i])`` over i, without a Python
    loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    excl = np.cumsum(lengths) - lengths
    return np.repeat(starts - excl, lengths) + np.arange(total, dtype=np.int64)


def _copy_ranges(
    out: np.ndarray,
    dest_start: np.ndarray,
    data: np.ndarray,
    src_start: np.ndarray,
    nbytes: np.ndarray,
) -> None:
    if nbytes.shape[0] and nbytes.sum():
        out[_range_index(dest_start, nbytes)] = data[_range_index(src_start, nbytes)]


def _gather_var(
    spec: FeatureSpec, buf: np.ndarray, valid: np.ndarray, src: np.ndarray, counts: np.ndarray
) -> FeatureColumn:
    counts = np.where(valid, counts, 0)
    offsets = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    item = spec.dtype.itemsize
    data = buf[_range_index(src, counts * item)]
    values = data.view(spec.dtype.numpy) if spec.dtype is not Dtype.STRING else data
    return FeatureColumn(spec, values, valid, offsets)
