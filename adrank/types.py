"""Typed values that cross package boundaries.

Anything passed between stages is a frozen, slotted dataclass or an Enum. Types used inside one
package live in that package's ``types.py``.
"""

from __future__ import annotations

import enum

__all__ = ["ColumnRole"]


class ColumnRole(enum.Enum):
    """What a column of a log or snapshot table is for.

    Logs written by ``adrank synth`` and ``adrank import`` record each column's role in the parquet
    schema metadata (see :mod:`adrank.data.schema`); for other files roles are inferred from types.
    """

    SPARSE = "sparse"
    """Categorical id feature: an int or string column (one id per row) or a list of them
    (multi-hot, e.g. a behaviour sequence). Gets an embedding table."""
    DENSE = "dense"
    """Numeric feature fed to the model as a value (float or a fixed-size float list)."""
    LABEL = "label"
    """Training target, e.g. click (0/1)."""
    TIMESTAMP = "timestamp"
    """Event time of the row."""
    KEY = "key"
    """Join or grouping key that is not a model feature, e.g. ``request_id``."""
