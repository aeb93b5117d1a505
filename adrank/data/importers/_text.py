"""Streaming line-block reader for plain or gzip text files, with line numbers for error messages.

A file is read as blocks of whole lines (about ``block_bytes`` of decompressed text each), so memory
stays bounded however large the input is, and every block knows the 1-based line number of its first
line, so a malformed row can be reported as ``path:line``. The next block is decompressed on a
background thread while the caller parses the current one (zlib and Arrow both release the GIL).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import zlib
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from adrank.errors import InputError

__all__ = ["TextBlock", "iter_blocks", "read_head_lines", "DEFAULT_BLOCK_BYTES"]

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_BYTES = 16 << 20
"""Decompressed bytes per block (16 MiB: ~100k Criteo rows; one parquet row group each)."""
MAX_LINE_BYTES = 256 << 20
"""A line longer than this (256 MiB) means the file is not line-oriented text; reading stops."""

_GZIP_MAGIC = b"\x1f\x8b"
# Other containers users may pass by mistake; named in the error instead of parsing garbage.
_OTHER_MAGIC = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
    b"PAR1": "parquet",
}
# Errors a damaged or unreadable (gzip) file raises while being read.
_READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True, slots=True)
class TextBlock:
    """A run of whole lines of one file.

    Example: a file ``"h\\na\\nb\\n"`` read with ``skip_lines=1`` gives one block
    ``TextBlock(data=b"a\\nb\\n", first_line=2, raw_bytes=<file size>)``.

    Attributes:
        data: The lines, each ending in ``\\n`` except possibly the file's last line.
        first_line: 1-based line number (in the decompressed file) of the first line in ``data``.
        raw_bytes: Bytes of the file on disk consumed since the previous block (for progress).
    """

    data: bytes
    first_line: int
    raw_bytes: int


@contextlib.contextmanager
def _open(path: Path) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """Open ``path`` for reading, decompressing gzip (detected by magic bytes, not by name).

    Yields:
        ``(text_stream, raw_file)``: read lines from the first; ``raw_file.tell()`` is the on-disk
        position, used for progress.
    """
    raw = open(path, "rb")  # noqa: SIM115 - closed in the finally below
    try:
        magic = raw.read(6)
        raw.seek(0)
        for prefix, kind in _OTHER_MAGIC.items():
            if magic.startswith(prefix):
                raise InputError(
                    f"file is {kind}, not plain or gzip text",
                    source=str(path),
                    hint="decompress or convert it to text first (only gzip is read transparently)",
                )
        if magic.startswith(_GZIP_MAGIC):
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream, raw  # type: ignore[misc]
        else:
            yield raw, raw
    finally:
        raw.close()


def read_head_lines(path: Path, n: int = 1, limit_bytes: int = 1 << 20) -> list[bytes]:
    """Return up to the first ``n`` lines of ``path`` (newline and trailing ``\\r`` removed).

    Args:
        path: A plain or gzip text file.
        n: Lines wanted.
        limit_bytes: Longest line read (bytes); longer lines are returned truncated.

    Returns:
        Fewer than ``n`` lines if the file is shorter (an empty file gives ``[]``).

    Raises:
        InputError: The file cannot be read or is damaged gzip.
    """
    lines: list[bytes] = []
    try:
        with _open(path) as (stream, _raw):
            for _ in range(n):
                line = stream.readline(limit_bytes)
                if not line:
                    break
                lines.append(line.rstrip(b"\n").rstrip(b"\r"))
    except _READ_ERRORS as exc:
        raise InputError(
            f"cannot read file: {exc}",
            source=str(path),
            hint="check that the file exists, is readable and, if gzip, is not truncated",
        ) from exc
    return lines


class _BlockCutter:
    """Reads a stream block by block and cuts at the last newline; state lives between calls."""

    def __init__(
        self, path: Path, stream: BinaryIO, raw: BinaryIO, skip_lines: int, block_bytes: int
    ):
        self._path = path
        self._stream = stream
        self._raw = raw
        self._skip_lines = skip_lines
        self._block_bytes = block_bytes
        self._rest = b""
        self._line = 1
        self._raw_pos = 0
        self._eof = False

    def next_block(self) -> TextBlock | None:
        """The next block, or None at end of file. Runs on the prefetch thread."""
        while True:
            if self._eof and not self._rest:
                return None
            buf = self._rest
            cut = -1
            while not self._eof:
                chunk = self._stream.read(self._block_bytes)
                if not chunk:
                    self._eof = True
                    break
                buf += chunk
                cut = buf.rfind(b"\n")
                if cut >= 0:
                    break
                if len(buf) > MAX_LINE_BYTES:
                    raise InputError(
                        f"line {self._line} is longer than {MAX_LINE_BYTES >> 20} MiB",
                        source=f"{self._path}:{self._line}",
                        hint="this does not look like a line-oriented text file; check the path",
                    )
            if self._eof:
                data, self._rest = buf, b""
            else:
                data, self._rest = buf[: cut + 1], buf[cut + 1 :]
            first_line = self._line
            self._line += data.count(b"\n")
            if self._skip_lines:
                data, first_line = self._drop_head(data, first_line)
            pos = self._raw.tell()
            raw_bytes, self._raw_pos = pos - self._raw_pos, pos
            if data:
                return TextBlock(data=data, first_line=first_line, raw_bytes=raw_bytes)

    def _drop_head(self, data: bytes, first_line: int) -> tuple[bytes, int]:
        start = 0
        while self._skip_lines and start < len(data):
            nl = data.find(b"\n", start)
            start = len(data) if nl < 0 else nl + 1
            self._skip_lines -= 1
            first_line += 1
        return data[start:], first_line


def iter_blocks(
    path: Path, *, skip_lines: int = 0, block_bytes: int | None = None
) -> Generator[TextBlock, None, None]:
    """Yield ``path``'s lines in blocks of about ``block_bytes``, reading ahead on a thread.

    Args:
        path: A plain or gzip text file.
        skip_lines: Leading lines (headers) to drop; line numbers still count them.
        block_bytes: Target decompressed bytes per block; None reads ``DEFAULT_BLOCK_BYTES`` at
            call time (tests shrink it to exercise many blocks).

    Yields:
        Non-empty blocks, in file order.

    Raises:
        InputError: The file cannot be read, is damaged gzip, or has an absurdly long line.
    """
    try:
        with _open(path) as (stream, raw), ThreadPoolExecutor(1, "adrank-read") as pool:
            size = block_bytes if block_bytes is not None else DEFAULT_BLOCK_BYTES
            cutter = _BlockCutter(path, stream, raw, skip_lines, size)
            pending = pool.submit(cutter.next_block)
            while True:
                block = pending.result()
                if block is None:
                    return
                pending = pool.submit(cutter.next_block)
                yield block
    except _READ_ERRORS as exc:
        raise InputError(
            f"cannot read file: {exc}",
            source=str(path),
            hint="the file may be truncated or damaged; re-download or re-compress it",
        ) from exc
