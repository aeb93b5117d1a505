"""The embedding checkpoint: one memory-mappable ``.npy`` file per shard plus a JSON manifest.

A checkpoint is a directory written for one plan (its ``inputs_fingerprint``)::

    CKPT/manifest.json                      kind "adrank.embedding_checkpoint", format_version 1
    CKPT/tables/<table>/r<row>_c<col>.npy   float32 [shard rows, shard cols], C order, one per shard

``manifest.json``::

    {"kind": "adrank.embedding_checkpoint", "format_version": 1,
     "plan_fingerprint": "sha256:...",
     "tables": [{"name": "t_ad_id", "num_rows": 701, "dim": 64, "dtype": "float32",
                 "precision": "int8", "pooling": "SUM",
                 "shards": [{"rank": 0, "row_offset": 0, "num_rows": 351, "col_offset": 0,
                             "num_cols": 64, "file": "tables/t_ad_id/r0_c0.npy",
                             "sha256": "sha256:..."}, ...]}]}

Weights are stored at float32, the master copy; ``precision`` is the plan's serving precision,
kept for information: the runtime quantizes each shard when it loads it
(:mod:`embed_store.quantize`). ``sha256`` hashes the whole ``.npy`` file (header included).

Every writer fills a temporary directory beside the destination and renames it into place
(:func:`adrank.formats.atomic_dir`), so a reader sees the old checkpoint or the new one, never a
mix. Writers stream shard by shard in row blocks: memory stays bounded by one block, not a table.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import torch

from adrank.errors import InputError, NotFoundError, PlanError, PlanErrorKind
from adrank.formats import atomic_dir, read_json_document, write_json_document
from adrank.planfile import validate_plan
from adrank.types import PoolingType, Precision, ShardPlan, ShardSpec, TablePlan

__all__ = [
    "CHECKPOINT_KIND",
    "FORMAT_VERSION_CHECKPOINT",
    "MANIFEST_FILE_NAME",
    "Checkpoint",
    "StoredShard",
    "StoredTable",
    "init_checkpoint",
    "open_checkpoint",
    "reshard_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = "adrank.embedding_checkpoint"
"""The ``kind`` of checkpoint manifests."""
FORMAT_VERSION_CHECKPOINT = 1
"""Layout version of the checkpoint manifest and directory."""
MANIFEST_FILE_NAME = "manifest.json"
"""Name of the manifest inside a checkpoint directory."""

_INIT_BLOCK_ROWS = 4096
"""Rows per random block of :func:`init_checkpoint`. Part of the init's contract: block ``b`` of a
table holds rows ``[b * 4096, (b + 1) * 4096)`` drawn from a generator seeded by (seed, table, b),
so changing it changes every initial value."""
_STREAM_BLOCK_BYTES = 16 << 20
"""Bytes of float32 values copied per step when writing a shard (bounds a writer's memory)."""
_HASH_CHUNK_BYTES = 1 << 20
_DTYPE = "float32"


@dataclass(frozen=True, slots=True)
class StoredShard:
    """One shard file of a checkpoint.

    Attributes:
        spec: The block it holds (rank, offsets, sizes).
        file: Path relative to the checkpoint directory (POSIX separators).
        sha256: ``sha256:<hex>`` of the whole ``.npy`` file.
    """

    spec: ShardSpec
    file: str
    sha256: str


@dataclass(frozen=True, slots=True)
class StoredTable:
    """One table of a checkpoint.

    Example: a 10 x 8 table stored row-wise on two ranks has ``shards`` covering rows ``[0, 5)``
    and ``[5, 10)``, each all 8 columns, in files ``tables/t/r0_c0.npy`` and ``tables/t/r5_c0.npy``.

    Attributes:
        name: Table name.
        num_rows: Rows.
        dim: Columns (embedding dim).
        precision: The plan's serving precision (informational; the files are float32).
        pooling: The plan's pooling of the table.
        shards: The stored blocks; they cover ``num_rows x dim`` exactly once.
        remap_file: The plan's pruning remap the rows follow (``TablePlan.remap_file``, named by
            its content digest), or None for an unpruned table.
    """

    name: str
    num_rows: int
    dim: int
    precision: Precision
    pooling: PoolingType
    shards: tuple[StoredShard, ...]
    remap_file: str | None = None


class Checkpoint:
    """An opened checkpoint directory: shard files read through memory maps.

    Open with :func:`open_checkpoint`; the writers (:func:`save_checkpoint`,
    :func:`init_checkpoint`, :func:`reshard_checkpoint`) return one too. Reads copy only the
    requested rows and columns out of the shard files.
    """

    def __init__(
        self,
        directory: Path,
        plan_fingerprint: str,
        tables: tuple[StoredTable, ...],
        arrays: Mapping[str, np.ndarray],
    ) -> None:
        self._directory = directory
        self._fingerprint = plan_fingerprint
        self._tables = {t.name: t for t in tables}
        self._arrays = dict(arrays)

    @property
    def directory(self) -> Path:
        """The checkpoint directory."""
        return self._directory

    @property
    def plan_fingerprint(self) -> str:
        """``inputs_fingerprint`` of the plan the checkpoint was written for."""
        return self._fingerprint

    @property
    def table_names(self) -> tuple[str, ...]:
        """Table names, in manifest order."""
        return tuple(self._tables)

    @property
    def tables(self) -> tuple[StoredTable, ...]:
        """Every table with its stored shards."""
        return tuple(self._tables.values())

    @property
    def nbytes(self) -> int:
        """Bytes of the shard files on disk (headers included)."""
        return sum((self._directory / s.file).stat().st_size for t in self.tables for s in t.shards)

    def table(self, name: str) -> StoredTable:
        """The stored table ``name``.

        Raises:
            NotFoundError: The checkpoint has no such table.
        """
        try:
            return self._tables[name]
        except KeyError:
            raise NotFoundError(
                f"checkpoint has no table {name!r}; it has {', '.join(self._tables) or 'none'}",
                source=str(self._directory),
            ) from None

    def table_shape(self, name: str) -> tuple[int, int]:
        """``(num_rows, dim)`` of table ``name``.

        Raises:
            NotFoundError: No such table.
        """
        t = self.table(name)
        return t.num_rows, t.dim

    def read_block(
        self, table: str, row_start: int, row_stop: int, col_start: int, col_stop: int
    ) -> np.ndarray:
        """Rows ``[row_start, row_stop)`` x columns ``[col_start, col_stop)`` of a table.

        Assembled from whichever stored shards overlap the block; only the overlap is read.

        Args:
            table: Table name.
            row_start: First row.
            row_stop: One past the last row (``row_start <= row_stop <= num_rows``).
            col_start: First column.
            col_stop: One past the last column (``<= dim``).

        Returns:
            A new float32 C-order array ``[row_stop - row_start, col_stop - col_start]``.

        Raises:
            NotFoundError: No such table.
            InputError: The block lies outside the table.
        """
        t = self.table(table)
        if not (0 <= row_start <= row_stop <= t.num_rows and 0 <= col_start <= col_stop <= t.dim):
            raise InputError(
                f"block rows [{row_start}, {row_stop}) x cols [{col_start}, {col_stop}) lies "
                f"outside table {table!r} of {t.num_rows} x {t.dim}",
                source=f"{self._directory}:{table}",
            )
        out = np.empty((row_stop - row_start, col_stop - col_start), dtype=np.float32)
        for s in t.shards:
            sp = s.spec
            r0, r1 = max(row_start, sp.row_offset), min(row_stop, sp.row_offset + sp.num_rows)
            c0, c1 = max(col_start, sp.col_offset), min(col_stop, sp.col_offset + sp.num_cols)
            if r0 >= r1 or c0 >= c1:
                continue
            src = self._arrays[s.file]
            out[r0 - row_start : r1 - row_start, c0 - col_start : c1 - col_start] = src[
                r0 - sp.row_offset : r1 - sp.row_offset, c0 - sp.col_offset : c1 - sp.col_offset
            ]
        return out

    def read_rows(self, table: str, rows: np.ndarray) -> np.ndarray:
        """Whole rows of a table, in the order given (repeats allowed).

        Only the pages of the requested rows are read, so sampling a few rows of a large table is
        cheap.

        Args:
            table: Table name.
            rows: Integer row indices in ``[0, num_rows)``.

        Returns:
            float32 ``[len(rows), dim]``.

        Raises:
            NotFoundError: No such table.
            InputError: ``rows`` is not a 1-D integer array or holds an index out of range.
        """
        t = self.table(table)
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise InputError(
                f"rows must be a 1-D integer array, found {rows.dtype} {rows.shape}",
                source=f"{self._directory}:{table}",
            )
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (rows.min() < 0 or rows.max() >= t.num_rows):
            raise InputError(
                f"row indices must lie in [0, {t.num_rows}) for table {table!r}, found "
                f"[{rows.min()}, {rows.max()}]",
                source=f"{self._directory}:{table}",
            )
        out = np.empty((rows.size, t.dim), dtype=np.float32)
        for s in t.shards:
            sp = s.spec
            mask = (rows >= sp.row_offset) & (rows < sp.row_offset + sp.num_rows)
            if mask.any():
                src = self._arrays[s.file]
                out[mask, sp.col_offset : sp.col_offset + sp.num_cols] = src[
                    rows[mask] - sp.row_offset
                ]
        return out

    def read_shard(self, table: str, shard: ShardSpec) -> np.ndarray:
        """The block of ``shard`` (any plan's shard of this table, stored or not).

        Raises:
            NotFoundError: No such table.
            InputError: The shard lies outside the table.
        """
        return self.read_block(
            table,
            shard.row_offset,
            shard.row_offset + shard.num_rows,
            shard.col_offset,
            shard.col_offset + shard.num_cols,
        )

    def read_table(self, table: str) -> np.ndarray:
        """The whole table as float32 ``[num_rows, dim]`` (materialised in memory).

        Raises:
            NotFoundError: No such table.
        """
        rows, dim = self.table_shape(table)
        return self.read_block(table, 0, rows, 0, dim)

    def check_plan(self, plan: ShardPlan, *, source: str | None = None) -> None:
        """Refuse a plan this checkpoint was not written for.

        Args:
            plan: The plan to serve or calibrate with.
            source: The plan's file, for messages and the hint.

        Raises:
            PlanError: ``kind=PLAN_MISMATCH`` when the plan's ``inputs_fingerprint`` differs from
                the checkpoint's (the message shows both) or when the tables differ (each table
                named, with both shapes).
        """
        problems = _table_mismatches(self, plan)
        fingerprint_differs = plan.inputs_fingerprint != self._fingerprint
        if fingerprint_differs:
            problems.insert(
                0,
                f"checkpoint was written for plan {self._fingerprint} but the plan has "
                f"inputs_fingerprint {plan.inputs_fingerprint}",
            )
        if not problems:
            return
        if len(problems) == 1 and fingerprint_differs:
            hint = (
                f"reshard it: adrank checkpoint reshard --checkpoint {self._directory} "
                f"--plan {source or 'PLAN_DIR'} -o NEW_CHECKPOINT"
            )
        else:
            hint = (
                "the checkpoint holds other tables than the plan: use the plan it was written "
                "for, or make a new one with `adrank checkpoint init`"
            )
        raise PlanError(
            _join_problems(f"checkpoint {self._directory} does not match the plan", problems),
            kind=PlanErrorKind.PLAN_MISMATCH,
            source=source or str(self._directory),
            hint=hint,
        )

    def verify(self) -> None:
        """Check every shard file against its manifest ``sha256`` (reads every byte).

        Raises:
            InputError: A file's hash differs (every such file is named).
        """
        problems = []
        for t in self.tables:
            for s in t.shards:
                path = self._directory / s.file
                found = _file_sha256(path)
                if found != s.sha256:
                    problems.append(
                        InputError(
                            f"shard file of table {t.name!r} is corrupt: sha256 {found}, "
                            f"manifest says {s.sha256}",
                            source=str(path),
                            hint="restore the checkpoint from a copy or write it again",
                        )
                    )
        if problems:
            raise InputError.from_problems(problems)

    def __repr__(self) -> str:
        return (
            f"Checkpoint({str(self._directory)!r}, plan_fingerprint={self._fingerprint!r}, "
            f"tables={list(self._tables)})"
        )


# --------------------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------------------


def open_checkpoint(directory: str | os.PathLike[str], *, verify: bool = False) -> Checkpoint:
    """Open a checkpoint directory and check it.

    Checked: the manifest (kind, version, every field's type), that each table's shards cover it
    exactly once, and that every shard file exists and is a float32 C-order ``.npy`` of its
    shard's shape. The file hashes are checked only with ``verify`` (it reads every byte).

    Args:
        directory: The checkpoint directory.
        verify: Also check each file's ``sha256``.

    Returns:
        The checkpoint, its shard files memory-mapped read-only.

    Raises:
        NotFoundError: No such directory or manifest, or shard files missing (all named).
        InputError: A malformed manifest or a shard file of the wrong shape, dtype or layout (each
            problem names its file or manifest field).
    """
    root = Path(directory)
    manifest = root / MANIFEST_FILE_NAME
    if not root.is_dir():
        raise NotFoundError(
            "checkpoint directory does not exist",
            source=str(root),
            hint="make one with `adrank checkpoint init --plan PLAN_DIR -o DIR`",
        )
    doc = read_json_document(manifest, CHECKPOINT_KIND, (FORMAT_VERSION_CHECKPOINT,))
    fingerprint, tables = _parse_manifest(doc, root, manifest)
    arrays: dict[str, np.ndarray] = {}
    problems: list[InputError] = []
    missing: list[str] = []
    for t in tables:
        for s in t.shards:
            path = root / s.file
            if not path.is_file():
                missing.append(str(path))
                continue
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                problems.append(
                    InputError(
                        f"cannot read shard file of table {t.name!r}: {exc}", source=str(path)
                    )
                )
                continue
            want = (s.spec.num_rows, s.spec.num_cols)
            if arr.dtype != np.float32 or arr.shape != want or not arr.flags.c_contiguous:
                layout = "C" if arr.flags.c_contiguous else "Fortran"
                problems.append(
                    InputError(
                        f"shard file of table {t.name!r} holds {arr.dtype} {arr.shape} in "
                        f"{layout} order, expected float32 {want} in C order",
                        source=str(path),
                        hint="the checkpoint is corrupt; write it again",
                    )
                )
                continue
            arrays[s.file] = arr
    if missing:
        problems += [
            InputError("shard file listed in the manifest does not exist", source=p)
            for p in missing
        ]
        if len(problems) == len(missing):
            raise NotFoundError(
                f"{len(missing)} shard file(s) of the checkpoint are missing: {', '.join(missing)}",
                source=missing[0],
                hint="the checkpoint is incomplete; restore it or write it again",
            )
    if problems:
        raise InputError.from_problems(problems)
    ckpt = Checkpoint(root, fingerprint, tables, arrays)
    if verify:
        ckpt.verify()
    return ckpt


class _Fields:
    """Typed access to manifest fields; problems are collected, each naming its field path."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.problems: list[InputError] = []

    def bad(self, where: str, message: str) -> None:
        self.problems.append(
            InputError(
                f"malformed checkpoint manifest: {message}",
                source=f"{self.source}:{where}",
                hint="the checkpoint is corrupt; write it again",
            )
        )

    def get(self, d: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(d, dict) or key not in d:
            self.bad(f"{where}.{key}".lstrip("."), "missing field")
            return None
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.bad(f"{where}.{key}".lstrip("."), f"expected {names}, found {v!r}")
            return None
        return v


def _parse_manifest(
    doc: Mapping[str, Any], root: Path, manifest: Path
) -> tuple[str, tuple[StoredTable, ...]]:
    f = _Fields(manifest)
    fingerprint = f.get(doc, "plan_fingerprint", "", str)
    tables_doc = f.get(doc, "tables", "", list) or []
    tables: list[StoredTable] = []
    names: set[str] = set()
    files: set[str] = set()
    for i, td in enumerate(tables_doc):
        w = f"tables[{i}]"
        before = len(f.problems)
        name = f.get(td, "name", w, str)
        rows = f.get(td, "num_rows", w, int)
        dim = f.get(td, "dim", w, int)
        dtype = f.get(td, "dtype", w, str)
        precision = _enum(f, td, "precision", w, Precision)
        pooling = _enum(f, td, "pooling", w, PoolingType)
        if dtype is not None and dtype != _DTYPE:
            f.bad(f"{w}.dtype", f"expected {_DTYPE!r}, found {dtype!r}")
        if name is not None:
            if name in names:
                f.bad(f"{w}.name", f"table {name!r} appears twice")
            names.add(name)
        if rows is not None and dim is not None and (rows < 1 or dim < 1):
            f.bad(w, f"table {name!r} must have rows and dim >= 1, found {rows} x {dim}")
        shards: list[StoredShard] = []
        for j, sd in enumerate(f.get(td, "shards", w, list) or []):
            sw = f"{w}.shards[{j}]"
            nums = [
                f.get(sd, k, sw, int)
                for k in ("rank", "row_offset", "num_rows", "col_offset", "num_cols")
            ]
            file = f.get(sd, "file", sw, str)
            digest = f.get(sd, "sha256", sw, str)
            if file is not None:
                if not _is_inside(root, file):
                    f.bad(f"{sw}.file", f"{file!r} is not a relative path inside the checkpoint")
                    file = None
                elif file in files:
                    f.bad(f"{sw}.file", f"{file!r} is listed for two shards")
                else:
                    files.add(file)
            if None in nums or file is None or digest is None:
                continue
            shards.append(StoredShard(ShardSpec(*nums), file, digest))
        if len(f.problems) > before:
            continue
        tiling = _tiling_problem(tuple(s.spec for s in shards), rows, dim)
        if tiling:
            f.bad(f"{w}.shards", f"table {name!r}: {tiling}")
            continue
        remap = td.get("remap_file") if isinstance(td, dict) else None
        if remap is not None and not isinstance(remap, str):
            f.bad(f"{w}.remap_file", f"expected a string or null, found {remap!r}")
            continue
        tables.append(StoredTable(name, rows, dim, precision, pooling, tuple(shards), remap))
    if f.problems:
        raise InputError.from_problems(f.problems)
    return fingerprint, tuple(tables)


def _enum(f: _Fields, d: Any, key: str, where: str, cls: Any) -> Any:
    v = f.get(d, key, where, str)
    if v is None:
        return None
    try:
        return cls(v)
    except ValueError:
        f.bad(f"{where}.{key}", f"expected one of {[m.value for m in cls]}, found {v!r}")
        return None


def _is_inside(root: Path, file: str) -> bool:
    p = PurePosixPath(file)
    return bool(file) and not p.is_absolute() and ".." not in p.parts and "\\" not in file


def _tiling_problem(shards: tuple[ShardSpec, ...], rows: int, dim: int) -> str | None:
    """Why ``shards`` do not cover ``rows x dim`` exactly once, or None when they do."""
    if not shards:
        return "has no shards"
    area = 0
    for s in shards:
        if (
            s.num_rows < 1
            or s.num_cols < 1
            or s.row_offset < 0
            or s.col_offset < 0
            or s.row_offset + s.num_rows > rows
            or s.col_offset + s.num_cols > dim
        ):
            return (
                f"shard rows [{s.row_offset}, {s.row_offset + s.num_rows}) x cols "
                f"[{s.col_offset}, {s.col_offset + s.num_cols}) is empty or outside {rows} x {dim}"
            )
        area += s.num_rows * s.num_cols
    ordered = sorted(shards, key=lambda s: (s.row_offset, s.col_offset))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.row_offset >= a.row_offset + a.num_rows:
                break
            if (
                a.col_offset < b.col_offset + b.num_cols
                and b.col_offset < a.col_offset + a.num_cols
            ):
                return "shards overlap"
    # Shards inside the table that do not overlap and sum to its area cover it exactly once.
    if area != rows * dim:
        return f"shards cover {area} of its {rows * dim} values"
    return None


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------

_BlockSource = Callable[[TablePlan, int, int, int, int], np.ndarray]
"""(table, row_start, row_stop, col_start, col_stop) -> float32 block: what a writer copies."""


def save_checkpoint(
    directory: str | os.PathLike[str],
    plan: ShardPlan,
    weights: Mapping[str, np.ndarray | torch.Tensor],
    *,
    progress: Callable[[int], None] | None = None,
) -> Checkpoint:
    """Write full tables as a checkpoint in ``plan``'s shard layout.

    Args:
        directory: Output directory; created, or replaced as a whole (atomically).
        plan: The plan whose shards to write; its fingerprint is recorded.
        weights: Table name -> float ``[num_rows, dim]`` array or tensor (any float dtype; stored as
            float32), one per plan table.
        progress: Called with the number of shard rows written after each block.

    Returns:
        The written checkpoint, opened.

    Raises:
        PlanError: The plan is invalid.
        InputError: A plan table without weights, weights for a table not in the plan, a wrong
            shape, a non-float dtype or non-finite values (all problems in one error, each naming
            its table). Nothing is written.
    """
    validate_plan(plan)
    arrays: dict[str, np.ndarray] = {}
    problems = _name_problems(plan)
    for name in sorted(set(weights) - {t.name for t in plan.tables}):
        problems.append(
            InputError(
                f"weights given for table {name!r}, which the plan does not have",
                source=f"weights[{name!r}]",
                hint=f"the plan's tables: {', '.join(t.name for t in plan.tables)}",
            )
        )
    for t in plan.tables:
        where = f"weights[{t.name!r}]"
        if t.name not in weights:
            problems.append(InputError(f"no weights for table {t.name!r}", source=where))
            continue
        w = weights[t.name]
        if isinstance(w, torch.Tensor):
            if not w.is_floating_point():
                problems.append(
                    InputError(
                        f"table {t.name!r}: expected float weights, found {w.dtype}", source=where
                    )
                )
                continue
            w = w.detach().to("cpu", torch.float32).numpy()
        w = np.asarray(w)
        if not np.issubdtype(w.dtype, np.floating):
            problems.append(
                InputError(
                    f"table {t.name!r}: expected float weights, found {w.dtype}", source=where
                )
            )
            continue
        if w.shape != (t.num_rows, t.dim):
            problems.append(
                InputError(
                    f"table {t.name!r}: expected weights of shape ({t.num_rows}, {t.dim}), "
                    f"found {w.shape}",
                    source=where,
                )
            )
            continue
        bad = _count_non_finite(w)
        if bad:
            problems.append(
                InputError(
                    f"table {t.name!r}: {bad} weights are NaN or infinite (as float32)",
                    source=where,
                    hint="fix the training run that produced them; a checkpoint stores finite "
                    "values only",
                )
            )
            continue
        arrays[t.name] = w

    if problems:
        raise InputError.from_problems(problems)

    def block(t: TablePlan, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return np.asarray(arrays[t.name][r0:r1, c0:c1], dtype=np.float32)

    return _write(directory, plan, block, "saved", progress)


def init_checkpoint(
    directory: str | os.PathLike[str],
    plan: ShardPlan,
    *,
    seed: int = 0,
    scale: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Checkpoint:
    """Write a checkpoint of random initial weights in ``plan``'s shard layout.

    Values are uniform in ``[-s, s)`` with ``s = scale`` or ``1 / sqrt(dim)`` (TorchRec's default
    ``EmbeddingBagConfig`` init). Rows come in blocks of 4096; block ``b`` of table ``T`` is drawn
    from a generator seeded by ``(seed, T, b)``, so a seed gives the same table whatever the
    shard layout, and no table is ever held in memory whole.

    Args:
        directory: Output directory; created, or replaced as a whole (atomically).
        plan: The plan whose shards to write.
        seed: Random seed (>= 0).
        scale: Half-width of the uniform range (> 0); None for ``1 / sqrt(dim)`` per table.
        progress: Called with the number of shard rows written after each block.

    Returns:
        The written checkpoint, opened.

    Raises:
        PlanError: The plan is invalid.
        InputError: A negative seed, a non-positive scale, or a table name unusable as a
            directory name.
    """
    validate_plan(plan)
    problems = _name_problems(plan)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(InputError(f"seed must be an integer >= 0, found {seed!r}", source="seed"))
    if scale is not None and not (np.isfinite(scale) and scale > 0):
        problems.append(InputError(f"scale must be > 0, found {scale!r}", source="scale"))
    if problems:
        raise InputError.from_problems(problems)

    def block(t: TablePlan, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        s = np.float32(scale if scale is not None else 1.0 / np.sqrt(t.dim))
        out = np.empty((r1 - r0, c1 - c0), dtype=np.float32)
        key = _name_key(t.name)
        for b in range(r0 // _INIT_BLOCK_ROWS, (r1 - 1) // _INIT_BLOCK_ROWS + 1):
            b0 = b * _INIT_BLOCK_ROWS
            b1 = min(b0 + _INIT_BLOCK_ROWS, t.num_rows)
            rng = np.random.default_rng(np.random.SeedSequence([seed, *key, b]))
            # The whole block is drawn even when only part is needed: the stream of a block
            # must not depend on which rows a shard covers.
            values = rng.random((b1 - b0, t.dim), dtype=np.float32)
            lo, hi = max(r0, b0), min(r1, b1)
            part = values[lo - b0 : hi - b0, c0:c1]
            out[lo - r0 : hi - r0] = part * (2 * s) - s
        return out

    return _write(directory, plan, block, f"initialised (seed {seed})", progress, _INIT_BLOCK_ROWS)


def reshard_checkpoint(
    source: Checkpoint,
    plan: ShardPlan,
    directory: str | os.PathLike[str],
    *,
    progress: Callable[[int], None] | None = None,
) -> Checkpoint:
    """Write ``source``'s weights in ``plan``'s shard layout, stamped with ``plan``'s fingerprint.

    Streams shard by shard in row blocks, reading only the overlapping parts of the source's
    files, so memory stays bounded whatever the table sizes. ``directory`` may be the source's
    own directory (it is replaced only after the new checkpoint is complete).

    Args:
        source: The checkpoint to read.
        plan: The target plan: same table names, rows and dims as ``source``.
        directory: Output directory; created, or replaced as a whole (atomically).
        progress: Called with the number of shard rows written after each block.

    Returns:
        The written checkpoint, opened.

    Raises:
        PlanError: ``kind=PLAN_MISMATCH`` when the tables differ (each mismatched table named with
            both shapes; missing and extra tables listed), or the plan is invalid.
    """
    validate_plan(plan)
    problems = _table_mismatches(source, plan)
    if problems:
        raise PlanError(
            _join_problems(
                f"checkpoint {source.directory} cannot be resharded into the plan", problems
            ),
            kind=PlanErrorKind.PLAN_MISMATCH,
            source=str(source.directory),
            hint="resharding keeps every table's rows and dim; make a new checkpoint with "
            "`adrank checkpoint init` for a plan with other tables",
        )
    name_problems = _name_problems(plan)
    if name_problems:
        raise InputError.from_problems(name_problems)

    def block(t: TablePlan, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return source.read_block(t.name, r0, r1, c0, c1)

    return _write(directory, plan, block, f"resharded from {source.directory}", progress)


def _write(
    directory: str | os.PathLike[str],
    plan: ShardPlan,
    block: _BlockSource,
    what: str,
    progress: Callable[[int], None] | None,
    row_multiple: int = 1,
) -> Checkpoint:
    start = time.perf_counter()
    dest = Path(directory)
    tables_doc: list[dict[str, Any]] = []
    num_shards = 0
    with atomic_dir(dest) as tmp:
        for t in plan.tables:
            shards_doc = []
            for s in t.shards:
                rel = f"tables/{t.name}/r{s.row_offset}_c{s.col_offset}.npy"
                step = max(1, _STREAM_BLOCK_BYTES // (4 * t.dim))
                # Aligned steps let a generator-backed source draw each random block once.
                step = max(row_multiple, step // row_multiple * row_multiple)
                digest = _write_npy(
                    tmp / rel,
                    (s.num_rows, s.num_cols),
                    _blocks(t, s, block, step, progress),
                )
                shards_doc.append(
                    {
                        "rank": s.rank,
                        "row_offset": s.row_offset,
                        "num_rows": s.num_rows,
                        "col_offset": s.col_offset,
                        "num_cols": s.num_cols,
                        "file": rel,
                        "sha256": digest,
                    }
                )
                num_shards += 1
            tables_doc.append(
                {
                    "name": t.name,
                    "num_rows": t.num_rows,
                    "dim": t.dim,
                    "dtype": _DTYPE,
                    "precision": t.precision.value,
                    "pooling": t.pooling.value,
                    "remap_file": t.remap_file,
                    "shards": shards_doc,
                }
            )
        write_json_document(
            tmp / MANIFEST_FILE_NAME,
            CHECKPOINT_KIND,
            FORMAT_VERSION_CHECKPOINT,
            {"plan_fingerprint": plan.inputs_fingerprint, "tables": tables_doc},
        )
    ckpt = open_checkpoint(dest)
    logger.info(
        "%s checkpoint %s: %d tables, %d shards, %s bytes in %.2f s",
        what,
        dest,
        len(tables_doc),
        num_shards,
        f"{ckpt.nbytes:,}",
        time.perf_counter() - start,
    )
    return ckpt


def _blocks(
    t: TablePlan,
    s: ShardSpec,
    block: _BlockSource,
    step: int,
    progress: Callable[[int], None] | None,
) -> Iterator[np.ndarray]:
    # Row blocks start at multiples of `step` in table rows so block boundaries do not depend
    # on the shard's offset.
    r = s.row_offset
    end = s.row_offset + s.num_rows
    while r < end:
        stop = min(end, (r // step + 1) * step)
        yield block(t, r, stop, s.col_offset, s.col_offset + s.num_cols)
        if progress is not None:
            progress(stop - r)
        r = stop


class _HashingWriter:
    """A binary file wrapper that hashes everything written through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        self.sha.update(data)
        return self._f.write(data)


def _write_npy(path: Path, shape: tuple[int, int], blocks: Iterator[np.ndarray]) -> str:
    """Write a float32 C-order ``.npy`` from row blocks; return ``sha256:<hex>`` of the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "wb") as f:
        w = _HashingWriter(f)
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False,
            "shape": shape,
        }
        np.lib.format.write_array_header_1_0(w, header)
        for b in blocks:
            assert b.dtype == np.float32 and b.shape[1] == shape[1], (b.dtype, b.shape, shape)
            w.write(np.ascontiguousarray(b).data.cast("B"))
            written += b.shape[0]
        f.flush()
        os.fsync(f.fileno())
    assert written == shape[0], (written, shape)
    return "sha256:" + w.sha.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _count_non_finite(w: np.ndarray) -> int:
    # Row blocks keep the temporary boolean mask small for large tables.
    step = max(1, _STREAM_BLOCK_BYTES // (4 * max(1, w.shape[1])))
    bad = 0
    # A float64 value beyond float32's range becomes inf when stored: count it, without a warning.
    with np.errstate(over="ignore", invalid="ignore"):
        for r in range(0, w.shape[0], step):
            part = np.asarray(w[r : r + step], dtype=np.float32)
            bad += int(part.size - np.count_nonzero(np.isfinite(part)))
    return bad


def _name_key(name: str) -> tuple[int, int]:
    """Two stable uint32 words from a table name (Python's ``hash`` varies between processes)."""
    d = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(d[:4], "little"), int.from_bytes(d[4:8], "little")


def _name_problems(plan: ShardPlan) -> list[InputError]:
    """Table names that cannot be a directory name in the checkpoint."""
    return [
        InputError(
            f"table name {t.name!r} cannot be a checkpoint directory name",
            source=f"table {t.name!r}",
            hint="table names must not be empty, '.', '..' or contain '/', '\\' or NUL",
        )
        for t in plan.tables
        if t.name in ("", ".", "..") or any(c in t.name for c in "/\\\0")
    ]


def _table_mismatches(ckpt: Checkpoint, plan: ShardPlan) -> list[str]:
    """One line per table whose presence or shape differs between ``ckpt`` and ``plan``."""
    problems = []
    have = set(ckpt.table_names)
    want = {t.name for t in plan.tables}
    missing = sorted(want - have)
    extra = sorted(have - want)
    if missing:
        problems.append(f"tables in the plan but not in the checkpoint: {', '.join(missing)}")
    if extra:
        problems.append(f"tables in the checkpoint but not in the plan: {', '.join(extra)}")
    for t in plan.tables:
        if t.name in have:
            shape = ckpt.table_shape(t.name)
            if shape != (t.num_rows, t.dim):
                problems.append(
                    f"table {t.name!r} is {shape[0]} x {shape[1]} in the checkpoint but "
                    f"{t.num_rows} x {t.dim} in the plan"
                )
            stored = ckpt.table(t.name).remap_file
            if stored != t.remap_file:
                # Same shape, other row order: reading it would silently return wrong rows.
                problems.append(
                    f"table {t.name!r} rows follow pruning remap {stored or 'none'} in the "
                    f"checkpoint but {t.remap_file or 'none'} in the plan"
                )
    return problems


def _join_problems(head: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{head}: {problems[0]}"
    return f"{head}:\n" + "\n".join(f"{i}. {p}" for i, p in enumerate(problems, 1))
