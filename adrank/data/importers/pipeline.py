"""``import_log``: validate a raw public log, stream it into canonical parquet, summarise.

The order is fixed: check the arguments (all problems at once), let the format module check the
input's layout (first line, header, featindex), then stream blocks of rows into a ParquetWriter
writing a temporary file that is renamed onto ``out_path`` only when everything succeeded.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from adrank.data.importers._plan import ImportPlan
from adrank.data.importers._rows import BadRowLog
from adrank.data.importers.avazu import plan_avazu
from adrank.data.importers.criteo import plan_criteo
from adrank.data.importers.ipinyou import plan_ipinyou
from adrank.data.importers.obd import plan_obd
from adrank.data.importers.types import ImportSummary, SourceFormat
from adrank.data.schema import with_roles
from adrank.errors import AdrankError, InputError
from adrank.formats import atomic_path

__all__ = ["import_log", "IMPORT_METADATA_KEY"]

logger = logging.getLogger(__name__)

IMPORT_METADATA_KEY = b"adrank.import"
"""Schema metadata key of a JSON object ``{"format": ..., "inputs": [file names]}``."""


def _check_arguments(fmt: SourceFormat, path: Path, out_path: Path, featindex: Path | None) -> None:
    problems: list[InputError] = []
    if not path.exists():
        problems.append(
            InputError(
                "input path does not exist",
                source=str(path),
                hint="check the path; --format obd also takes a directory",
            )
        )
    if out_path.is_dir():
        problems.append(
            InputError(
                "output path is a directory", source=str(out_path), hint="pass a .parquet file path"
            )
        )
    elif path.exists() and out_path.exists() and os.path.samefile(path, out_path):
        problems.append(
            InputError(
                "output path is the input file", source=str(out_path), hint="choose another -o path"
            )
        )
    if featindex is not None:
        if fmt is not SourceFormat.IPINYOU:
            problems.append(
                InputError(
                    f"a featindex file only applies to --format ipinyou, not {fmt.value}",
                    source=str(featindex),
                    hint="drop --featindex",
                )
            )
        elif not featindex.is_file():
            problems.append(
                InputError(
                    "featindex file does not exist", source=str(featindex), hint="check the path"
                )
            )
    if problems:
        raise InputError.from_problems(problems)


def _plan(fmt: SourceFormat, path: Path, featindex: Path | None) -> ImportPlan:
    if fmt is SourceFormat.CRITEO:
        return plan_criteo(path)
    if fmt is SourceFormat.AVAZU:
        return plan_avazu(path)
    if fmt is SourceFormat.IPINYOU:
        return plan_ipinyou(path, featindex)
    return plan_obd(path)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Order ``table``'s columns as ``schema`` and add all-null columns it lacks (OBD campaigns
    differ in their item-affinity columns)."""
    columns = []
    for field in schema:
        i = table.schema.get_field_index(field.name)
        columns.append(table.column(i) if i >= 0 else pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _write_parquet(
    tmp: Path,
    out: Path,
    schema: pa.Schema,
    plan: ImportPlan,
    bad_rows: BadRowLog,
    progress: Callable[[int], None] | None,
) -> int:
    """Stream every part's tables into ``tmp`` (one row group per block); return rows written."""
    rows = 0
    try:
        writer = pq.ParquetWriter(tmp, schema)
    except (OSError, pa.ArrowException) as exc:
        raise AdrankError(f"cannot write parquet: {exc}", source=str(out)) from exc
    try:
        for part in plan.parts:
            for table in part.tables(bad_rows, progress):
                try:
                    writer.write_table(_conform(table, schema))
                except (OSError, pa.ArrowException) as exc:
                    raise AdrankError(f"cannot write parquet: {exc}", source=str(out)) from exc
                rows += table.num_rows
            logger.debug("read %s (%d rows so far)", part.path, rows)
    finally:
        try:
            writer.close()
        except (OSError, pa.ArrowException) as exc:
            raise AdrankError(f"cannot finish parquet: {exc}", source=str(out)) from exc
    return rows


def import_log(
    fmt: SourceFormat | str,
    path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    skip_bad_rows: bool = False,
    featindex: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Convert a raw public click log into adrank's canonical parquet log schema.

    Columns keep their source names (``click`` becomes ``label``; Avazu ``hour`` and OBD
    ``timestamp`` become ``ts``, timestamp[s, UTC]); string ids stay strings, integer ids int64,
    dense values float32, labels int8, empty fields null. Column roles are recorded in the schema
    metadata (:func:`adrank.data.schema.with_roles`). The input is streamed in blocks of about
    16 MiB, each written as one parquet row group, so memory stays bounded.

    Malformed rows (wrong field count, a value that does not convert, a label other than 0/1) stop
    the import with an InputError naming the file, line and column, unless ``skip_bad_rows``, which
    leaves them out and counts them. Either way no partial ``out_path`` is left on failure.

    Args:
        fmt: Source format (a :class:`SourceFormat` or its value, e.g. ``"criteo"``).
        path: Input file (plain or gzip, detected by content); for OBD also a directory, read
            recursively (``*.csv``/``*.csv.gz`` except ``item_context``).
        out_path: Parquet file to write (replaced atomically if it exists).
        skip_bad_rows: Skip and count malformed rows instead of failing on the first.
        featindex: iPinYou only: the ``field:value<TAB>index`` file; by default found beside
            ``path`` (``featindex.fm.txt[.gz]`` for ``*.fm.txt`` inputs, else ``featindex.txt``).
        progress: Called with on-disk input bytes consumed, after each block.

    Returns:
        What was written.

    Raises:
        InputError: Bad arguments, an input of another format, a malformed row (unless skipping),
            or no rows to write (empty input, or every row malformed).
        AdrankError: The output cannot be written (disk full, permissions).
    """
    t0 = time.perf_counter()
    try:
        fmt = SourceFormat(fmt)
    except ValueError as exc:
        choices = ", ".join(f.value for f in SourceFormat)
        raise InputError(f"unknown format {fmt!r}", hint=f"use one of {choices}") from exc
    path, out = Path(path), Path(out_path)
    featindex_path = Path(featindex) if featindex is not None else None
    _check_arguments(fmt, path, out, featindex_path)
    plan = _plan(fmt, path, featindex_path)
    schema = with_roles(plan.schema, plan.roles)
    inputs = [
        p.path.name if p.path == path else p.path.relative_to(path).as_posix() for p in plan.parts
    ]
    schema = schema.with_metadata(
        {
            **schema.metadata,
            IMPORT_METADATA_KEY: json.dumps({"format": fmt.value, "inputs": inputs}).encode(),
        }
    )
    bad_rows = BadRowLog(skip_bad_rows, plan.hint)
    with atomic_path(out, suffix=".parquet") as tmp:
        rows = _write_parquet(tmp, out, schema, plan, bad_rows, progress)
        if rows == 0:
            if bad_rows.rows_skipped:
                raise InputError(
                    f"all {bad_rows.rows_skipped} rows are malformed; nothing to write",
                    source=str(path),
                    hint=f"check --format (first problem: {bad_rows.examples[0]})",
                )
            raise InputError("input has no data rows", source=str(path), hint=plan.hint)
    elapsed = time.perf_counter() - t0
    summary = ImportSummary(
        format=fmt,
        input_paths=tuple(p.path for p in plan.parts),
        out_path=out,
        rows_written=rows,
        rows_skipped=bad_rows.rows_skipped,
        columns=tuple(schema.names),
        roles=dict(plan.roles),
        out_bytes=out.stat().st_size,
        elapsed_s=elapsed,
        skipped_examples=tuple(bad_rows.examples),
    )
    logger.info(
        "imported %d rows (%d skipped) of %s from %s into %s in %.2f s",
        rows,
        bad_rows.rows_skipped,
        fmt.value,
        path,
        out,
        elapsed,
    )
    return summary
