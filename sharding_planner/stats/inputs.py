"""Resolve and validate the parquet inputs of a stats run before any data is read.

Every problem found (missing path, directory without parquet, unreadable or non-parquet file,
missing or mistyped column, ambiguous timestamp, incompatible types across files, duplicate input)
is collected and reported in one :class:`~adrank.errors.InputError` whose entries name the file
and column.

Which columns are features:

* Without ``config.features``: every column whose role (:func:`adrank.data.schema.read_roles`:
  declared in the file's metadata, else inferred from its type) is SPARSE.
* With ``config.features``: exactly those columns, whatever their role. Each must exist in at
  least one input file (files may have different schemas, e.g. impressions and requests; a
  feature's rows and coverage count only the files that have it) and have an id type wherever
  it exists.

Id types: integer, string (or dictionary of either), or a list of them (multi-hot). A feature must
have the same kind (int or string, single or multi-hot) in every file. Timestamps: the
``config.timestamp_column``, which must then exist in every file, else the file's only
TIMESTAMP-role column (none: the file's rows have no time; several: an error asking for
``--timestamp-column``); its type must be a timestamp, a date or integer epoch seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from adrank.data.schema import read_roles
from adrank.errors import AdrankError, InputError
from adrank.formats import parquet_file_fingerprint
from adrank.types import ColumnRole
from sharding_planner.types import IdKind, StatsConfig

__all__ = ["FeatureColumn", "InputFile", "classify_id_type", "plan_inputs", "resolve_paths"]

logger = logging.getLogger(__name__)

_ID_TYPES_HINT = "sparse ids must be integers or strings, or lists of them"


@dataclasses.dataclass(frozen=True, slots=True)
class FeatureColumn:
    """A feature column of one file.

    Attributes:
        name: Column name.
        id_kind: Int or string ids.
        multi_hot: List column.
        arrow_type: The Arrow type as text (for messages).
    """

    name: str
    id_kind: IdKind
    multi_hot: bool
    arrow_type: str

    @property
    def kind_label(self) -> str:
        """``int``, ``string``, ``list<int>`` or ``list<string>``."""
        return f"list<{self.id_kind.value}>" if self.multi_hot else self.id_kind.value


@dataclasses.dataclass(frozen=True, slots=True)
class InputFile:
    """A validated parquet input.

    Attributes:
        path: Absolute path.
        rows: Rows in the file.
        fingerprint: Cheap content fingerprint (size + footer).
        features: The feature columns it holds.
        timestamp_column: Its event-time column, or None.
    """

    path: Path
    rows: int
    fingerprint: str
    features: tuple[FeatureColumn, ...]
    timestamp_column: str | None


def classify_id_type(t: pa.DataType) -> tuple[IdKind, bool] | None:
    """(id kind, multi-hot) of an Arrow type usable as sparse ids, or None."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        kind = _flat_kind(t.value_type)
        return None if kind is None else (kind, True)
    kind = _flat_kind(t)
    return None if kind is None else (kind, False)


def _flat_kind(t: pa.DataType) -> IdKind | None:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return IdKind.INT
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return IdKind.STRING
    return None


def _is_timestamp_type(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_integer(t)


def resolve_paths(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[InputError]]:
    """Expand directories (recursively, ``*.parquet``, hidden files skipped) and check existence.

    Returns:
        (absolute file paths in order, without duplicates; problems found).
    """
    files: list[Path] = []
    problems: list[InputError] = []
    seen: dict[Path, str] = {}
    for given in paths:
        p = Path(given)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*.parquet")
                if f.is_file()
                and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)
            )
            if not found:
                problems.append(
                    InputError(
                        "directory holds no *.parquet files",
                        source=str(p),
                        hint="pass parquet files or a directory of them",
                    )
                )
        elif p.exists():
            found = [p]
        else:
            problems.append(
                InputError("path does not exist", source=str(p), hint="check the path and spelling")
            )
            continue
        for f in found:
            resolved = f.resolve()
            if resolved in seen:
                problems.append(
                    InputError(
                        f"file given twice (also as {seen[resolved]}); its rows would count twice",
                        source=str(f),
                        hint="pass each file once",
                    )
                )
                continue
            seen[resolved] = str(f)
            files.append(resolved)
    return files, problems


def _open_schema(path: Path) -> tuple[pa.Schema, int]:
    """The Arrow schema and row count from a parquet footer.

    Raises:
        InputError: Not a readable parquet file.
    """
    try:
        with pq.ParquetFile(path) as pf:
            return pf.schema_arrow, pf.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"not a readable parquet file ({type(exc).__name__}: {exc})",
            source=str(path),
            hint="the file may be empty, truncated or of another format; re-export it as parquet",
        ) from exc


def _file_columns(
    path: Path, schema: pa.Schema, config: StatsConfig, problems: list[InputError]
) -> tuple[list[FeatureColumn], str | None]:
    """The feature columns and timestamp column of one file, appending problems."""
    roles = read_roles(schema)
    if config.features is None:
        names = [n for n, r in roles.items() if r is ColumnRole.SPARSE]
    else:
        names = [n for n in config.features if n in schema.names]
    features = []
    for name in names:
        t = schema.field(name).type
        kind = classify_id_type(t)
        if kind is None:
            problems.append(
                InputError(
                    f"column {name!r} has type {t}; {_ID_TYPES_HINT}",
                    source=f"{path}:{name}",
                    hint="drop it from --features, or cast it to an id type",
                )
            )
            continue
        features.append(FeatureColumn(name, kind[0], kind[1], str(t)))

    ts_col: str | None
    if config.timestamp_column is not None:
        ts_col = config.timestamp_column
        if ts_col not in schema.names:
            problems.append(
                InputError(
                    f"timestamp column {ts_col!r} not found; columns: {', '.join(schema.names)}",
                    source=f"{path}:{ts_col}",
                    hint="fix --timestamp-column, or drop it to use the file's timestamp column",
                )
            )
            return features, None
    else:
        candidates = [n for n, r in roles.items() if r is ColumnRole.TIMESTAMP]
        if len(candidates) > 1:
            problems.append(
                InputError(
                    f"several timestamp columns ({', '.join(candidates)}); which one is meant?",
                    source=f"{path}:{','.join(candidates)}",
                    hint="pick one with --timestamp-column",
                )
            )
            return features, None
        ts_col = candidates[0] if candidates else None
    if ts_col is not None and not _is_timestamp_type(schema.field(ts_col).type):
        problems.append(
            InputError(
                f"timestamp column {ts_col!r} has type {schema.field(ts_col).type}; expected a "
                "timestamp, a date or integer epoch seconds",
                source=f"{path}:{ts_col}",
                hint="convert the column, or choose another with --timestamp-column",
            )
        )
        ts_col = None
    return features, ts_col


def plan_inputs(paths: Sequence[str | os.PathLike[str]], config: StatsConfig) -> list[InputFile]:
    """Validate every input from its footer, before any data is read.

    Args:
        paths: Parquet files or directories of them.
        config: The run's settings (features, timestamp column).

    Returns:
        One :class:`InputFile` per file, in the order given.

    Raises:
        InputError: Listing every problem found, each naming its file and column.
    """
    if not paths:
        raise InputError("no input paths given", hint="pass parquet files or directories")
    files, problems = resolve_paths(paths)
    planned: list[InputFile] = []
    by_fingerprint: dict[str, Path] = {}
    for path in files:
        try:
            schema, rows = _open_schema(path)
            fp = parquet_file_fingerprint(path)
        except AdrankError as exc:
            problems.append(
                exc if isinstance(exc, InputError) else InputError(exc.message, source=exc.source)
            )
            continue
        if fp in by_fingerprint:
            problems.append(
                InputError(
                    f"same content as {by_fingerprint[fp]}; its rows would count twice",
                    source=str(path),
                    hint="pass each file once",
                )
            )
            continue
        by_fingerprint[fp] = path
        features, ts_col = _file_columns(path, schema, config, problems)
        planned.append(InputFile(path, rows, fp, tuple(features), ts_col))

    # A feature must have one id kind across files.
    kinds: dict[str, dict[str, list[Path]]] = {}
    for f in planned:
        for col in f.features:
            kinds.setdefault(col.name, {}).setdefault(col.kind_label, []).append(f.path)
    for name, variants in sorted(kinds.items()):
        if len(variants) > 1:
            where = "; ".join(
                f"{label} in {', '.join(map(str, ps))}" for label, ps in variants.items()
            )
            problems.append(
                InputError(
                    f"column {name!r} has incompatible id types across files: {where}",
                    source=f"{next(iter(variants.values()))[0]}:{name}",
                    hint="make the column's type agree in every file, or stats them separately",
                )
            )
    if config.features is not None and planned:
        for name in config.features:
            if name not in kinds and not any(
                p.source and p.source.endswith(f":{name}") for p in problems
            ):
                problems.append(
                    InputError(
                        f"feature column {name!r} not found in any input file",
                        source=", ".join(f"{f.path}:{name}" for f in planned),
                        hint="check --features against the files' columns",
                    )
                )
    if config.features is not None:
        for name in config.features:
            lacking = [str(f.path) for f in planned if name not in {c.name for c in f.features}]
            if name in kinds and lacking:
                # INFO, not WARNING: request-structured logs keep request- and impression-level
                # features in different files, so a feature missing from some files is normal.
                logger.info(
                    "feature %s is not in %s; its rows and coverage count only the files that "
                    "have it",
                    name,
                    ", ".join(lacking),
                )
    if not problems and not kinds:
        problems.append(
            InputError(
                "no sparse feature columns in the inputs (no column has role 'sparse')",
                source=", ".join(map(str, files)),
                hint="name the id columns with --features",
            )
        )
    if problems:
        raise InputError.from_problems(problems)
    logger.info(
        "validated %d files: %d rows, %d features",
        len(planned),
        sum(f.rows for f in planned),
        len(kinds),
    )
    return planned
