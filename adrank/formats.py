"""Versioned file formats: atomic writes, versioned JSON documents and input fingerprints.

Every file adrank writes for another stage (stats, plans, remaps, manifests) is versioned JSON or
``.npy``, never pickle. A JSON document has a top-level ``kind`` (what it is), ``format_version``
(its layout) and usually ``inputs_fingerprint`` (a hash of what it was computed from), so a reader
can refuse a file it does not understand or that was made from other inputs.

Writes go to a temporary file in the destination directory and are renamed into place, so a failed
or killed run never leaves a half-written file behind (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from adrank.errors import InputError, NotFoundError

__all__ = [
    "atomic_dir",
    "atomic_path",
    "atomic_write_text",
    "canonical_json",
    "fingerprint",
    "parquet_file_fingerprint",
    "read_json_document",
    "write_json_document",
]


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.

    The caller writes the whole file to the yielded path. If the block raises, the temporary file
    is removed and ``dest`` is untouched (an existing file keeps its old contents).

    Args:
        dest: Final path. Its parent directory is created if missing.
        suffix: Suffix for the temporary name (some writers check extensions, e.g. ``.parquet``).

    Yields:
        The temporary path to write.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates mode 0600; outputs are ordinary files that should follow the umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``dest``; on success it replaces ``dest``.

    The caller writes every output file into the yielded directory. If the block raises, the
    temporary directory is removed and ``dest`` is untouched. An existing ``dest`` is moved aside,
    the new directory renamed into place, then the old one deleted: readers see either the old or
    the new complete directory, never a mix (a crash between the two renames leaves the old one
    under ``.<name>.old-*`` beside it).

    Args:
        dest: Final directory. Its parent is created if missing; an existing ``dest`` must be a
            directory.

    Yields:
        The temporary directory to fill.

    Raises:
        InputError: ``dest`` exists and is not a directory.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise InputError(
            "output path exists and is not a directory",
            source=str(dest),
            hint="pass a directory path (it is created or replaced as a whole)",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.rmdir(old)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically, fsyncing before the rename."""
    with atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        _fsync(f)


def _fsync(f: IO[Any]) -> None:
    f.flush()
    os.fsync(f.fileno())


def canonical_json(obj: Any) -> str:
    """Serialise ``obj`` deterministically (sorted keys, no whitespace) for hashing."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def fingerprint(obj: Any) -> str:
    """Return ``sha256:<hex>`` of the canonical JSON of ``obj``: equal inputs, equal hashes."""
    return "sha256:" + hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()


def parquet_file_fingerprint(path: str | os.PathLike[str]) -> str:
    """Fingerprint a parquet file cheaply from its size and footer.

    The footer holds the schema and every row group's column-chunk offsets, sizes and statistics, so
    any change to the data changes it; reading it costs one seek instead of reading the whole file.

    Args:
        path: A parquet file.

    Returns:
        ``sha256:<hex>``.

    Raises:
        NotFoundError: The file does not exist.
        InputError: The file is not parquet (no ``PAR1`` trailer).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            if size < 12:
                raise InputError(
                    f"file is {size} bytes, too short to be parquet",
                    source=str(p),
                    hint="pass a parquet file written by pyarrow, Spark or adrank synth",
                )
            f.seek(size - 8)
            tail = f.read(8)
            footer_len, magic = struct.unpack("<I4s", tail)
            if magic != b"PAR1" or footer_len + 8 > size:
                raise InputError(
                    "not a parquet file (missing PAR1 trailer)",
                    source=str(p),
                    hint="the file may be truncated or of another format; re-export it as parquet",
                )
            f.seek(size - 8 - footer_len)
            footer = f.read(footer_len)
    except FileNotFoundError as exc:
        raise NotFoundError("file does not exist", source=str(p)) from exc
    h = hashlib.sha256()
    h.update(str(size).encode())
    h.update(footer)
    return "sha256:" + h.hexdigest()


def write_json_document(
    dest: str | os.PathLike[str], kind: str, format_version: int, body: dict[str, Any]
) -> None:
    """Write a versioned JSON document atomically.

    Args:
        dest: Output path.
        kind: What the document is, e.g. ``"adrank.stats"``.
        format_version: Layout version of ``body``.
        body: JSON-serialisable content; must not use the keys ``kind`` or ``format_version``.
    """
    if "kind" in body or "format_version" in body:
        raise ValueError("body must not set 'kind' or 'format_version'")
    doc = {"kind": kind, "format_version": format_version, **body}
    atomic_write_text(dest, json.dumps(doc, indent=1, allow_nan=False) + "\n")


def read_json_document(
    path: str | os.PathLike[str], kind: str, supported_versions: tuple[int, ...]
) -> dict[str, Any]:
    """Read a versioned JSON document and check its kind and version.

    Args:
        path: File to read.
        kind: Expected ``kind``.
        supported_versions: Versions this reader understands.

    Returns:
        The whole document, ``kind`` and ``format_version`` included.

    Raises:
        NotFoundError: No such file.
        InputError: Not JSON, not an object, wrong kind or unsupported version.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotFoundError("file does not exist", source=str(p)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read file: {exc}", source=str(p)) from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
            source=str(p),
            hint=f"regenerate the file; adrank writes {kind} documents atomically",
        ) from exc
    if not isinstance(doc, dict):
        raise InputError(f"expected a JSON object, found {type(doc).__name__}", source=str(p))
    found_kind = doc.get("kind")
    if found_kind != kind:
        raise InputError(
            f"expected a document of kind {kind!r}, found kind {found_kind!r}",
            source=str(p),
            hint="check that you passed the right file",
        )
    version = doc.get("format_version")
    if version not in supported_versions:
        raise InputError(
            f"unsupported format_version {version!r} for {kind}; this adrank reads "
            f"{', '.join(map(str, supported_versions))}",
            source=str(p),
            hint="regenerate the file with this adrank version, or upgrade adrank",
        )
    return doc
