"""Values the importers hand back: the source formats they read and the summary of one import."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from adrank.types import ColumnRole

__all__ = ["SourceFormat", "ImportSummary"]


class SourceFormat(enum.Enum):
    """Raw public click-log formats ``adrank import`` reads (values are the CLI's ``--format``)."""

    CRITEO = "criteo"
    """Criteo Kaggle DAC raw rows: tab-separated ``label, I1..I13, C1..C26`` (test rows lack the
    label); no header."""
    AVAZU = "avazu"
    """Avazu CTR raw rows: comma-separated ``id, click, hour, C1, banner_pos, site_id, ... C21``,
    with or without the header line (test rows lack ``click``)."""
    IPINYOU = "ipinyou"
    """iPinYou one-hot rows (make-ipinyou-data): ``label idx:1 idx:1 ...`` plus a featindex file
    mapping ``field:value`` to ``idx``."""
    OBD = "obd"
    """Open Bandit Dataset CSVs (``{policy}/{campaign}/{campaign}.csv``): a file or a directory."""


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What one :func:`~adrank.data.importers.import_log` call wrote.

    Example: importing a 3-row Criteo file with one malformed row and ``skip_bad_rows=True``
    gives ``rows_written=2, rows_skipped=1, columns=("label", "I1", ..., "C26")`` and
    ``skipped_examples=("in.tsv:2, column I3: field 4 of 40: expected an integer or nothing,
    found 'x'",)``.

    Attributes:
        format: The source format read.
        input_paths: Every file read, in reading order.
        out_path: The parquet file written.
        rows_written: Rows in ``out_path``.
        rows_skipped: Malformed rows skipped (always 0 unless ``skip_bad_rows``).
        columns: Output column names, in file order.
        roles: Role of every output column (also stored in the file's schema metadata).
        out_bytes: Size of ``out_path`` in bytes.
        elapsed_s: Wall time of the import in seconds.
        skipped_examples: Descriptions (file, line, column, problem) of the first skipped rows.
    """

    format: SourceFormat
    input_paths: tuple[Path, ...]
    out_path: Path
    rows_written: int
    rows_skipped: int
    columns: tuple[str, ...]
    roles: Mapping[str, ColumnRole]
    out_bytes: int
    elapsed_s: float
    skipped_examples: tuple[str, ...] = ()

    @property
    def rows_per_s(self) -> float:
        """Rows read (written plus skipped) per second of wall time."""
        return (
            (self.rows_written + self.rows_skipped) / self.elapsed_s if self.elapsed_s > 0 else 0.0
        )
