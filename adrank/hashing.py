"""Canonical id hashing: raw ids -> 64-bit id keys -> per-feature hashes.

Every part that maps ids (stats, planner, pruning, embedding runtime) must agree bit for bit, so
the one implementation lives here. The id spaces (see DESIGN.md) start from:

* ``raw_id``: what the log holds, an int64 or a string.
* ``id_key``: the int64 that identifies a raw id everywhere in adrank. An int64 raw id is its own
  key; a string raw id's key is ``mmh3.hash64(utf8, seed=STRING_ID_SEED)[0]`` (signed int64).
* ``murmur3_64(id_key, seed)``: MurmurHash3 x64-128 of the key's 8 little-endian bytes, first 64
  bits, as uint64. The planner derives ``hashed_id = murmur3_64(key, feature_seed) % num_rows``.

``murmur3_64`` equals ``mmh3.hash64(np.int64(key).tobytes(), seed, signed=False)[0]`` (a unit test
checks it) but runs as a numba kernel: ~10x faster than a numpy-vectorised version on 2 cores.

This module departs from STYLE.md §1 (``adrank`` imports only stdlib, numpy, pyarrow): it also
imports numba and mmh3, because the hash must be shared by the planner and the torch runtime,
which may not import each other.
"""

from __future__ import annotations

import mmh3
import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adrank.constants import STRING_ID_SEED

__all__ = ["murmur3_64", "string_id_keys", "id_keys_from_arrow", "fmix64"]

_C1 = np.uint64(0x87C37B91114253D5)
_C2 = np.uint64(0x4CF5AD432745937F)
_FM1 = np.uint64(0xFF51AFD7ED558CCD)
_FM2 = np.uint64(0xC4CEB9FE1A85EC53)
_U8 = np.uint64(8)
_U33 = np.uint64(33)
_U31 = np.uint64(31)
_U64_31 = np.uint64(64 - 31)


@numba.njit(inline="always", cache=True)
def fmix64(k: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    """MurmurHash3's 64-bit finaliser: a bijective avalanche mix of one uint64."""
    k ^= k >> _U33
    k *= _FM1
    k ^= k >> _U33
    k *= _FM2
    k ^= k >> _U33
    return k


@numba.njit(inline="always", cache=True)
def _murmur3_64_one(key: np.int64, seed: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    h1 = seed
    h2 = seed
    # An 8-byte input has no 16-byte block; its tail is k1 = the 8 bytes as a little-endian uint64.
    k1 = np.uint64(key)
    k1 *= _C1
    k1 = (k1 << _U31) | (k1 >> _U64_31)
    k1 *= _C2
    h1 ^= k1
    h1 ^= _U8
    h2 ^= _U8
    h1 += h2
    h2 += h1
    h1 = fmix64(h1)
    h2 = fmix64(h2)
    h1 += h2
    return h1


@numba.njit(parallel=True, cache=True)
def _murmur3_64_array(
    keys: np.ndarray, seed: np.uint64, out: np.ndarray
) -> None:  # pragma: no cover
    for i in numba.prange(keys.shape[0]):
        out[i] = _murmur3_64_one(keys[i], seed)


@numba.njit(cache=True)
def _murmur3_64_array_serial(
    keys: np.ndarray, seed: np.uint64, out: np.ndarray
) -> None:  # pragma: no cover
    for i in range(keys.shape[0]):
        out[i] = _murmur3_64_one(keys[i], seed)


_PARALLEL_MIN_KEYS = 1 << 16
"""Below this many keys the serial kernel runs: a parallel launch costs more than the work (a
request's few hundred ids: 4 us serial, milliseconds at the tail for a launch on a busy machine)."""


def murmur3_64(id_keys: np.ndarray, seed: int) -> np.ndarray:
    """Hash int64 id keys with MurmurHash3 x64-128 (first 64 bits).

    Args:
        id_keys: 1-D int64 array of id keys.
        seed: 32-bit unsigned seed (one per feature in the planner).

    Returns:
        uint64 array, same length.
    """
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be a 32-bit unsigned int, got {seed}")
    keys = np.ascontiguousarray(id_keys, dtype=np.int64)
    out = np.empty(keys.shape[0], dtype=np.uint64)
    kernel = _murmur3_64_array if keys.shape[0] >= _PARALLEL_MIN_KEYS else _murmur3_64_array_serial
    kernel(keys, np.uint64(seed), out)
    return out


def string_id_keys(values: list[str] | np.ndarray) -> np.ndarray:
    """Turn string raw ids into int64 id keys (mmh3 of their UTF-8 bytes, seed STRING_ID_SEED).

    Args:
        values: Strings (no nulls).

    Returns:
        int64 array, same length. Calls mmh3 once per string (~4M/s): callers hash distinct values
        only (see :func:`id_keys_from_arrow`).
    """
    h = mmh3.hash64
    return np.fromiter(
        (h(s.encode("utf-8"), STRING_ID_SEED)[0] for s in values),
        dtype=np.int64,
        count=len(values),
    )


def id_keys_from_arrow(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Convert a flat Arrow array of raw ids to id keys and a validity mask.

    Integer arrays are cast to int64 (their values are the keys); uint64 values of 2**63 and above
    keep their 64 bits, reinterpreted as int64. String arrays are dictionary
    encoded first, so each distinct string is hashed once per call, not once per row.

    Args:
        arr: integer, string or dictionary-of-string Arrow array (nulls allowed).

    Returns:
        ``(id_keys, valid)``: int64 keys (0 where null) and a bool mask of non-null entries.

    Raises:
        TypeError: Another Arrow type; callers turn it into an InputError naming the column.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    valid = (
        np.ones(len(arr), dtype=bool)
        if arr.null_count == 0
        else pc.is_valid(arr).to_numpy(zero_copy_only=False)
    )
    if pa.types.is_uint64(t):
        # Ids of 2**63 and above do not fit int64; their 64 bits are the key (two's complement).
        keys = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False).view(np.int64)
        return np.ascontiguousarray(keys), valid
    if pa.types.is_integer(t):
        keys = pc.fill_null(arr, 0).cast(pa.int64()).to_numpy(zero_copy_only=False)
        return np.ascontiguousarray(keys, dtype=np.int64), valid
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        arr = pc.dictionary_encode(arr)
        t = arr.type
    if pa.types.is_dictionary(t) and (
        pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)
    ):
        dict_keys = string_id_keys(arr.dictionary.to_pylist())
        idx = pc.fill_null(arr.indices, 0).cast(pa.int64()).to_numpy(zero_copy_only=False)
        keys = dict_keys[idx] if len(dict_keys) else np.zeros(len(arr), dtype=np.int64)
        return keys, valid
    raise TypeError(f"ids must be integers or strings, found Arrow type {t}")
