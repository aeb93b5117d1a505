"""Id-space converters shared by the planner, the pruning package and the runtime.

The id spaces (DESIGN.md "The id spaces") and the plan fields that connect them::

    raw_id      what the log holds (int64 or string)
      |  adrank.hashing: ints are their own key, strings mmh3 (seed STRING_ID_SEED)
    id_key      int64
      |  FeatureSlot: dedicated key -> dedicated_row_offset + its position in the sorted keys;
      |               else row_offset + murmur3_64(id_key, seed) % hash_size
    hashed_id   index into the table's pre-pruning space [0, TablePlan.hashed_rows)
      |  remap (pruning's .npy, -1 = pruned -> fallback_row or -1); identity without a remap
    row         index into the stored table [0, TablePlan.num_rows)
      |  ShardSpec: the shard whose row range holds it; local_row = row - shard.row_offset
    local_row   index inside one shard

Each function names both ends of the step it performs. Pure numpy (plus :mod:`adrank.hashing`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from adrank.errors import InputError, NotFoundError
from adrank.hashing import murmur3_64
from adrank.types import FeatureSlot, TablePlan

__all__ = [
    "PRUNED_ROW",
    "hashed_to_rows",
    "id_keys_to_hashed",
    "id_keys_to_rows",
    "load_dedicated_keys",
    "rows_to_local_rows",
]

PRUNED_ROW = -1
"""``row`` of a pruned hashed id in a table without a fallback row (FBGEMM skips it)."""


def id_keys_to_hashed(
    feature: FeatureSlot, id_keys: np.ndarray, dedicated_keys: np.ndarray | None = None
) -> np.ndarray:
    """Map one feature's id keys to its table's ``hashed_id`` space.

    Args:
        feature: The feature's slot in its table.
        id_keys: int64 id keys (any shape is flattened to 1-D).
        dedicated_keys: The feature's sorted dedicated keys (from ``dedicated_keys_file``; see
            :func:`load_dedicated_keys`); required when ``feature.num_dedicated_rows > 0``.

    Returns:
        int64 hashed ids in ``[0, hashed_rows)``, same length as ``id_keys``.

    Raises:
        ValueError: Dedicated keys are missing, unsorted or of the wrong count.
    """
    keys = np.ascontiguousarray(id_keys, dtype=np.int64).ravel()
    hashed = murmur3_64(keys, feature.seed) % np.uint64(feature.hash_size)
    out = hashed.astype(np.int64) + feature.row_offset
    if feature.num_dedicated_rows:
        if dedicated_keys is None or len(dedicated_keys) != feature.num_dedicated_rows:
            raise ValueError(
                f"feature {feature.name!r} has {feature.num_dedicated_rows} dedicated rows; pass "
                "its dedicated keys"
            )
        dk = np.asarray(dedicated_keys, dtype=np.int64)
        pos = np.searchsorted(dk, keys)
        pos_c = np.minimum(pos, len(dk) - 1)
        hit = dk[pos_c] == keys
        out[hit] = feature.dedicated_row_offset + pos_c[hit]
    return out


def hashed_to_rows(
    hashed_ids: np.ndarray, remap: np.ndarray | None = None, fallback_row: int | None = None
) -> np.ndarray:
    """Map hashed ids to stored rows through a pruning remap.

    Args:
        hashed_ids: int64 hashed ids in ``[0, len(remap))``.
        remap: int64 array, ``remap[hashed_id]`` = row or -1 for pruned; None = identity.
        fallback_row: Row that pruned ids read; None keeps them at :data:`PRUNED_ROW` (-1).

    Returns:
        int64 rows (``-1`` only for pruned ids without a fallback).
    """
    h = np.asarray(hashed_ids, dtype=np.int64)
    if remap is None:
        return h.copy()
    rows = np.asarray(remap, dtype=np.int64)[h]
    if fallback_row is not None:
        rows[rows < 0] = fallback_row
    return rows


def id_keys_to_rows(
    table: TablePlan,
    feature: str,
    id_keys: np.ndarray,
    dedicated_keys: np.ndarray | None = None,
    remap: np.ndarray | None = None,
) -> np.ndarray:
    """Map a feature's id keys to rows of its table (hashing, dedicated rows and the remap).

    Args:
        table: The table holding ``feature``.
        feature: Feature name.
        id_keys: int64 id keys.
        dedicated_keys: The feature's sorted dedicated keys, if it has dedicated rows.
        remap: The table's remap (required when ``table.num_rows < table.hashed_rows``).

    Returns:
        int64 rows in ``[0, table.num_rows)`` (or -1 for pruned ids when there is no fallback row).

    Raises:
        KeyError: ``feature`` is not in ``table``.
        ValueError: A pruned table without its remap, or a remap of the wrong length.
    """
    slot = next((f for f in table.features if f.name == feature), None)
    if slot is None:
        raise KeyError(f"feature {feature!r} is not in table {table.name!r}")
    if remap is None and table.num_rows != table.hashed_rows:
        raise ValueError(
            f"table {table.name!r} has {table.num_rows} rows for {table.hashed_rows} hashed rows; "
            "pass its remap"
        )
    if remap is not None and len(remap) != table.hashed_rows:
        raise ValueError(
            f"remap of table {table.name!r} has {len(remap)} entries, expected {table.hashed_rows}"
        )
    hashed = id_keys_to_hashed(slot, id_keys, dedicated_keys)
    return hashed_to_rows(hashed, remap, table.fallback_row)


def rows_to_local_rows(
    table: TablePlan, rows: np.ndarray, col: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Find the shard holding each row at column ``col`` and the row's index inside it.

    Args:
        table: The table.
        rows: int64 rows in ``[0, table.num_rows)``.
        col: Column whose shard is wanted (matters for column-wise tables).

    Returns:
        ``(shard_index, local_row)``: index into ``table.shards`` and ``row - shard.row_offset``.

    Raises:
        ValueError: A row outside the table.
    """
    r = np.asarray(rows, dtype=np.int64)
    if r.size and (r.min() < 0 or r.max() >= table.num_rows):
        raise ValueError(f"rows must be in [0, {table.num_rows}) for table {table.name!r}")
    idx = [i for i, s in enumerate(table.shards) if s.col_offset <= col < s.col_offset + s.num_cols]
    idx.sort(key=lambda i: table.shards[i].row_offset)
    starts = np.array([table.shards[i].row_offset for i in idx], dtype=np.int64)
    which = np.searchsorted(starts, r, side="right") - 1
    shard_index = np.asarray(idx, dtype=np.int64)[which]
    return shard_index, r - starts[which]


def load_dedicated_keys(
    plan_dir: str | os.PathLike[str], feature: FeatureSlot
) -> np.ndarray | None:
    """Load a feature's dedicated heavy-hitter keys from its plan directory.

    Args:
        plan_dir: Directory holding ``plan.json``.
        feature: The feature's slot.

    Returns:
        Sorted int64 keys, or None when the feature has no dedicated rows.

    Raises:
        NotFoundError: The sidecar file is missing.
        InputError: It is not an int64 array of ``num_dedicated_rows`` sorted unique keys.
    """
    if feature.dedicated_keys_file is None:
        return None
    path = Path(plan_dir) / feature.dedicated_keys_file
    try:
        keys = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise NotFoundError(
            "dedicated-keys file named by the plan is missing", source=str(path)
        ) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read dedicated keys: {exc}", source=str(path)) from exc
    if (
        keys.dtype != np.int64
        or keys.ndim != 1
        or len(keys) != feature.num_dedicated_rows
        or (len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])))
    ):
        raise InputError(
            f"expected {feature.num_dedicated_rows} sorted unique int64 keys, found "
            f"{keys.dtype} array of shape {keys.shape}",
            source=str(path),
            hint="regenerate the plan directory with `adrank plan`",
        )
    return keys
