"""The pruning remap (``hashed_id -> row``) of one table: the value, its files, FBGEMM's layout.

:mod:`pruning` builds :class:`RowRemap` values and writes them beside a plan; ``embed_store``
reads them and hands them to FBGEMM's pruned lookups. Both sides need the type and the file
layout but may not import each other (STYLE.md §1), so both live here, in pure numpy.

Layout of a plan directory after pruning::

    DIR/plan.json                    TablePlan.remap_file -> "remaps/<table>.npy"
    DIR/remaps/<table>.npy           int64, length hashed_rows: row, or -1 for a pruned hashed id
    DIR/remaps/manifest.json         kind "adrank.remaps", format_version 1 (below)

``manifest.json``::

    {"kind": "adrank.remaps", "format_version": 1,
     "inputs_fingerprint": "sha256:...",          # the plan's: remaps belong to one plan
     "tables": [{"table": "t_ad_id", "file": "t_ad_id.npy", "hashed_rows": 1000,
                 "num_rows": 701, "num_kept": 700, "fallback_row": 700,
                 "sha256": "..."}]}               # of the .npy file's bytes

FBGEMM's pruned lookups (``torch.ops.fbgemm.pruned_array_lookup``, used by
``IntNBitTableBatchedEmbeddingBagsCodegen`` when given ``index_remapping``) take one array that
concatenates every table's remap (dtype = the TBE's ``indices_dtype``: int32 by default, or int64)
and int64 offsets of length ``T + 1``; a table whose slice is empty (``offsets[t] ==
offsets[t + 1]``) is not remapped. A remapped index of ``-1`` contributes nothing to its bag, so
a table with a fallback row gets the fallback row written into those entries instead
(:func:`fbgemm_index_remappings`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from adrank.errors import InputError, NotFoundError
from adrank.formats import atomic_path, read_json_document, write_json_document

__all__ = [
    "FORMAT_VERSION_REMAPS",
    "PRUNED",
    "REMAPS_DIR",
    "REMAPS_KIND",
    "REMAPS_MANIFEST",
    "RowRemap",
    "fbgemm_index_remappings",
    "read_remap_file",
    "read_remaps",
    "remap_digest",
    "remap_file_name",
    "write_remaps",
]

PRUNED = -1
"""Entry of ``RowRemap.hashed_to_row`` for a pruned hashed id (FBGEMM's convention)."""
REMAPS_KIND = "adrank.remaps"
"""The ``kind`` of the remaps manifest."""
REMAPS_DIR = "remaps"
"""Directory, inside a plan directory, holding the remap files and their manifest."""
REMAPS_MANIFEST = "manifest.json"
"""Name of the manifest inside :data:`REMAPS_DIR`."""

FORMAT_VERSION_REMAPS = 1
"""Layout version of the remaps manifest (belongs in :mod:`adrank.constants`)."""

_INT32_MAX = np.iinfo(np.int32).max


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class RowRemap:
    """Where each hashed id of one table lives after pruning.

    Kept hashed ids get the physical rows ``0..num_kept-1`` in ascending ``hashed_id`` order
    (skipping ``fallback_row`` if it lies among them); pruned ones hold :data:`PRUNED` and read
    ``fallback_row`` (or nothing, when it is None). Rows of the stored table that neither a kept id
    nor the fallback uses are spare (the plan sized the table for more live rows than were found).

    Example: hashed_rows 6, hashed ids 1 and 4 dead, fallback after the kept rows::

        hashed_id      0  1  2  3  4  5
        hashed_to_row  0 -1  1  2 -1  3       num_kept 4, fallback_row 4, num_rows 5
        rows_for([1, 3]) == [4, 2]

    Attributes:
        table: Table name.
        hashed_to_row: int64 array of length ``hashed_rows``: a row in ``[0, num_rows)`` or -1.
            Treated as read-only.
        num_rows: Rows of the stored (compacted) table.
        num_kept: Hashed ids that kept a row.
        fallback_row: Row that pruned ids read (None: they contribute nothing).
        inputs_fingerprint: Fingerprint of the plan the remap was made for ("" when none).
    """

    table: str
    hashed_to_row: np.ndarray
    num_rows: int
    num_kept: int
    fallback_row: int | None = None
    inputs_fingerprint: str = ""

    @property
    def hashed_rows(self) -> int:
        """Size of the hashed-id space (length of ``hashed_to_row``)."""
        return int(self.hashed_to_row.shape[0])

    @property
    def num_pruned(self) -> int:
        """Hashed ids without a row of their own."""
        return self.hashed_rows - self.num_kept

    @property
    def kept_mask(self) -> np.ndarray:
        """bool array over hashed ids: True where the id kept a row."""
        return self.hashed_to_row >= 0

    def rows_for(self, hashed_ids: np.ndarray) -> np.ndarray:
        """Rows that ``hashed_ids`` read (pruned ids read the fallback row, or -1 without one).

        Args:
            hashed_ids: int64 hashed ids in ``[0, hashed_rows)``.

        Returns:
            int64 rows, same shape.
        """
        rows = self.hashed_to_row[np.asarray(hashed_ids, dtype=np.int64)]
        if self.fallback_row is not None:
            rows = np.where(rows < 0, self.fallback_row, rows)
        return rows

    def row_to_hashed(self) -> np.ndarray:
        """The inverse map: int64 array of length ``num_rows`` giving each row's hashed id, or -1
        for the fallback row and spare rows."""
        inverse = np.full(self.num_rows, PRUNED, dtype=np.int64)
        kept = np.flatnonzero(self.hashed_to_row >= 0)
        inverse[self.hashed_to_row[kept]] = kept
        return inverse

    def lookup_array(self, dtype: type[np.integer] | np.dtype = np.int64) -> np.ndarray:
        """The remap as FBGEMM's pruned lookup reads it: ``-1`` replaced by the fallback row.

        Args:
            dtype: int32 or int64 (the TBE's ``indices_dtype``).

        Returns:
            A new array of length ``hashed_rows``.

        Raises:
            ValueError: Another dtype, or int32 with more than 2**31-1 hashed ids or rows.
        """
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.int32), np.dtype(np.int64)):
            raise ValueError(f"FBGEMM remaps are int32 or int64, not {dt}")
        if dt == np.int32 and max(self.hashed_rows, self.num_rows) > _INT32_MAX:
            raise ValueError(
                f"table {self.table!r} has {self.hashed_rows} hashed ids and {self.num_rows} rows; "
                "int32 indices cannot address them: use int64"
            )
        out = self.hashed_to_row.astype(dt)
        if self.fallback_row is not None:
            out[out < 0] = self.fallback_row
        return out

    def validate(self, source: str | None = None) -> None:
        """Check every invariant (done when reading a file; builders produce valid remaps).

        Args:
            source: File or table name for the message.

        Raises:
            InputError: Listing every broken invariant.
        """
        problems = _remap_problems(self)
        if problems:
            raise InputError(
                f"invalid remap for table {self.table!r}: " + "; ".join(problems),
                source=source or self.table,
                hint="rebuild the remaps with the pruning package (`adrank prune`)",
            )


def _remap_problems(r: RowRemap) -> list[str]:
    problems: list[str] = []
    a = r.hashed_to_row
    if not isinstance(a, np.ndarray) or a.dtype != np.int64 or a.ndim != 1:
        return [f"hashed_to_row must be a 1-D int64 array, found {getattr(a, 'dtype', type(a))}"]
    if r.num_rows < 0 or r.num_kept < 0:
        problems.append(f"num_rows and num_kept must be >= 0, found {r.num_rows}, {r.num_kept}")
    if r.fallback_row is not None and not 0 <= r.fallback_row < r.num_rows:
        problems.append(f"fallback_row {r.fallback_row} is outside [0, {r.num_rows})")
    kept = a[a >= 0]
    if np.any(a < PRUNED):
        problems.append("entries below -1")
    if kept.size != r.num_kept:
        problems.append(f"{kept.size} hashed ids have a row, but num_kept is {r.num_kept}")
    if kept.size and int(kept.max()) >= r.num_rows:
        problems.append(f"a row {int(kept.max())} is outside [0, {r.num_rows})")
    if kept.size != np.unique(kept).size:
        problems.append("two hashed ids share a row")
    if r.fallback_row is not None and np.any(kept == r.fallback_row):
        problems.append(f"a kept hashed id uses the fallback row {r.fallback_row}")
    return problems


# --------------------------------------------------------------------------------------------------
# FBGEMM's layout
# --------------------------------------------------------------------------------------------------


def fbgemm_index_remappings(
    remaps: Sequence[RowRemap | None], dtype: type[np.integer] | np.dtype = np.int32
) -> tuple[np.ndarray, np.ndarray]:
    """Pack per-table remaps the way FBGEMM's ``pruned_array_lookup`` reads them.

    ``index_remappings_array`` concatenates each remapped table's :meth:`RowRemap.lookup_array`
    (tables in TBE order; None = not remapped, an empty slice); ``index_remappings_array_offsets``
    has ``T + 1`` int64 entries, ``offsets[t]..offsets[t+1]`` being table ``t``'s slice (as
    ``IntNBitTableBatchedEmbeddingBagsCodegen.set_index_remappings_array`` builds them).

    Example: remaps ``[r0 (3 ids), None, r2 (2 ids)]`` -> array of 5 entries, offsets
    ``[0, 3, 3, 5]``.

    Args:
        remaps: One entry per TBE table, in order.
        dtype: The TBE's ``indices_dtype``: int32 (FBGEMM's default) or int64.

    Returns:
        ``(index_remappings_array, index_remappings_array_offsets)``.

    Raises:
        ValueError: An unsupported dtype, or int32 indices too small for a table.
    """
    parts = [r.lookup_array(dtype) for r in remaps if r is not None]
    sizes = [0 if r is None else r.hashed_rows for r in remaps]
    offsets = np.zeros(len(remaps) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    array = np.concatenate(parts) if parts else np.empty(0, dtype=np.dtype(dtype))
    return array, offsets


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def remap_digest(remap: RowRemap) -> str:
    """Hex sha256 of what a remap decides (the mapping, the row count and the fallback row)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(remap.hashed_to_row, dtype=np.int64).tobytes())
    h.update(f"|{remap.num_rows}|{remap.fallback_row}".encode())
    return h.hexdigest()


def remap_file_name(table: str, digest: str) -> str:
    """File name of a table's remap inside :data:`REMAPS_DIR`: ``<table>-<digest[:12]>.npy``.

    The content digest is part of the name, so ``TablePlan.remap_file`` in plan.json identifies
    the mapping itself: re-pruning a plan gives new names, and a checkpoint trained under the old
    rows is refused instead of read in another row order. Unusual table names are sanitised plus
    a short hash of the name (so distinct tables never share a file).
    """
    if _SAFE_NAME.match(table) and not table.startswith("."):
        safe = table
    else:
        clean = re.sub(r"[^A-Za-z0-9_.-]", "_", table)[:80].lstrip(".") or "table"
        safe = f"{clean}-{hashlib.sha256(table.encode()).hexdigest()[:8]}"
    return f"{safe}-{digest[:12]}.npy"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_remaps(
    remaps: Mapping[str, RowRemap], plan_dir: str | os.PathLike[str], inputs_fingerprint: str
) -> dict[str, str]:
    """Write remap arrays and their manifest under ``plan_dir/remaps/`` (each file atomically).

    Array files are written first and the manifest last, so a reader that finds a manifest finds
    every file it lists. Existing remap files of tables not in ``remaps`` are left alone but are
    no longer listed.

    Args:
        remaps: Table name -> remap (each valid, see :meth:`RowRemap.validate`).
        plan_dir: The plan directory.
        inputs_fingerprint: The plan's fingerprint, recorded in the manifest.

    Returns:
        Table name -> remap file path relative to ``plan_dir`` (the value for
        ``TablePlan.remap_file``).

    Raises:
        InputError: A remap breaks an invariant, or its key differs from its table name.
    """
    problems: list[InputError] = []
    for name, r in remaps.items():
        if name != r.table:
            problems.append(
                InputError(f"remap for {r.table!r} is filed under {name!r}", source=name)
            )
            continue
        try:
            r.validate()
        except InputError as exc:
            problems.append(exc)
    if problems:
        raise InputError.from_problems(problems)
    out_dir = Path(plan_dir) / REMAPS_DIR
    entries = []
    rel: dict[str, str] = {}
    for name in sorted(remaps):
        r = remaps[name]
        file_name = remap_file_name(name, remap_digest(r))
        dest = out_dir / file_name
        with atomic_path(dest, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(r.hashed_to_row, dtype=np.int64), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        entries.append(
            {
                "table": name,
                "file": file_name,
                "hashed_rows": r.hashed_rows,
                "num_rows": r.num_rows,
                "num_kept": r.num_kept,
                "fallback_row": r.fallback_row,
                "sha256": _sha256_file(dest),
            }
        )
        rel[name] = f"{REMAPS_DIR}/{file_name}"
    write_json_document(
        out_dir / REMAPS_MANIFEST,
        REMAPS_KIND,
        FORMAT_VERSION_REMAPS,
        {"inputs_fingerprint": inputs_fingerprint, "tables": entries},
    )
    return rel


def read_remap_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Load one remap array (``.npy``, int64, 1-D; never pickle).

    Raises:
        NotFoundError: No such file.
        InputError: Not a 1-D int64 ``.npy`` array.
    """
    p = Path(path)
    try:
        a = np.load(p, allow_pickle=False)
    except FileNotFoundError as exc:
        raise NotFoundError("remap file is missing", source=str(p)) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read remap array: {exc}", source=str(p)) from exc
    if not isinstance(a, np.ndarray) or a.dtype != np.int64 or a.ndim != 1:
        raise InputError(
            f"expected a 1-D int64 array, found {getattr(a, 'dtype', type(a))} of shape "
            f"{getattr(a, 'shape', '?')}",
            source=str(p),
            hint="rebuild the remaps with the pruning package (`adrank prune`)",
        )
    return a


def read_remaps(
    plan_dir: str | os.PathLike[str],
    *,
    expected_fingerprint: str | None = None,
    verify_checksums: bool = True,
) -> dict[str, RowRemap]:
    """Read every remap listed in ``plan_dir/remaps/manifest.json``.

    Args:
        plan_dir: The plan directory.
        expected_fingerprint: When given, refuse remaps made for another plan.
        verify_checksums: Check each file's sha256 against the manifest.

    Returns:
        Table name -> remap.

    Raises:
        NotFoundError: The manifest or a file it lists is missing.
        InputError: A malformed manifest, a checksum or shape mismatch, an invalid remap, or
            another plan's fingerprint (every problem in one error).
    """
    base = Path(plan_dir) / REMAPS_DIR
    manifest = base / REMAPS_MANIFEST
    doc = read_json_document(manifest, REMAPS_KIND, (FORMAT_VERSION_REMAPS,))
    fp = doc.get("inputs_fingerprint")
    if expected_fingerprint is not None and fp != expected_fingerprint:
        raise InputError(
            f"remaps were made for another plan: inputs_fingerprint {fp}, expected "
            f"{expected_fingerprint}",
            source=str(manifest),
            hint="re-run pruning on the current plan",
        )
    tables = doc.get("tables")
    if not isinstance(tables, list):
        raise InputError("manifest field 'tables' must be a list", source=f"{manifest}:tables")
    problems: list[InputError] = []
    out: dict[str, RowRemap] = {}
    for i, e in enumerate(tables):
        where = f"{manifest}:tables[{i}]"
        try:
            name, file_name = str(e["table"]), str(e["file"])
            hashed_rows, num_rows, num_kept = (
                int(e["hashed_rows"]),
                int(e["num_rows"]),
                int(e["num_kept"]),
            )
            fallback = None if e["fallback_row"] is None else int(e["fallback_row"])
            checksum = str(e["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(InputError(f"malformed manifest entry: {exc!r}", source=where))
            continue
        path = base / file_name
        try:
            if verify_checksums and path.exists() and _sha256_file(path) != checksum:
                raise InputError(
                    "remap file does not match the manifest's checksum",
                    source=str(path),
                    hint="the file was changed or truncated; re-run pruning",
                )
            arr = read_remap_file(path)
            if arr.shape[0] != hashed_rows:
                raise InputError(
                    f"remap has {arr.shape[0]} entries, manifest says {hashed_rows}",
                    source=str(path),
                )
            remap = RowRemap(name, arr, num_rows, num_kept, fallback, str(fp or ""))
            remap.validate(str(path))
        except InputError as exc:
            problems.append(exc)
            continue
        out[name] = remap
    if problems:
        raise InputError.from_problems(problems)
    return out
