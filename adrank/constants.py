"""Defaults shared across packages. Quantities carry their unit in the name."""

from __future__ import annotations

FORMAT_VERSION_STATS = 1
"""Version of the stats.json layout written by ``adrank stats``."""

STRING_ID_SEED = 0
"""mmh3 seed that turns a string raw id into its int64 id key (see :mod:`adrank.hashing`)."""

DEFAULT_EXACT_DISTINCT_LIMIT = 1 << 19
"""Distinct ids per feature counted exactly; beyond it stats switch to sketches (524,288 ids)."""

DEFAULT_HLL_PRECISION = 14
"""HyperLogLog precision p: 2**p registers, relative standard error 1.04 / sqrt(2**p) ~ 0.81%."""

DEFAULT_HEAVY_HITTERS = 100
"""Heavy hitters reported per feature."""

DEFAULT_RECENT_WINDOW_S = 86_400
"""Ids not seen in the last this-many seconds of the logs count as dead-row candidates (1 day)."""

DEFAULT_BATCH_ROWS = 262_144
"""Rows per streamed record batch when reading parquet."""
