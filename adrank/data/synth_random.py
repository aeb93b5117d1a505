"""Counter-based randomness for the synthetic log generator: hashed uniforms, normals, ids, Zipf.

Every random quantity of ``adrank synth`` is a pure function of ``(seed, stream, key)``: the
generator never carries RNG state from one chunk to the next, so any chunk can be produced on its
own, the output does not depend on the chunk size, and memory stays bounded whatever the row count.

* :class:`HashStream` turns int64 keys into uniform ``[0, 1)`` floats, standard normals and integers
  with SplitMix64 (a Weyl sequence ``stream_key + (key + 1) * golden`` through the SplitMix64
  finaliser, which passes BigCrush). Stream keys come from BLAKE2b of ``(seed, name)``, so streams
  for different features or seeds are unrelated.
* :func:`mix_ids` maps a dense index ``0, 1, 2, ...`` to a random-looking non-negative int64 id by a
  keyed bijection on ``[0, 2**63)``: distinct indices always get distinct ids.
* :class:`ZipfSampler` draws popularity ranks ``r`` in ``[0, V)`` with ``P(r) ~ (r + 1) ** -s`` by
  inverse CDF: an exact cumulative table for the first 65,536 ranks and the continuous
  (Euler-Maclaurin midpoint) approximation ``P(k) ~ integral of x**-s over [k - 1/2, k + 1/2]`` for
  the tail, whose relative error is below ``s (s + 1) / (24 k**2)`` < 1e-9 there. A 10M-entry
  table would cost 80 MB and slow ``searchsorted`` by cache misses; the head table is 512 KB.

Example::

    >>> s = HashStream(seed=7, name="demo")
    >>> u = s.uniform(np.arange(3))        # three floats in [0, 1), the same on every call
    >>> ZipfSampler.get(1000, 1.1).ranks(u).dtype
    dtype('int64')
"""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np

__all__ = ["HashStream", "ZipfSampler", "mix_ids", "stream_key"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_S32 = np.uint64(32)
_ONE = np.uint64(1)
_INV_2_53 = 1.0 / 9007199254740992.0
_INV_2_32 = 1.0 / 4294967296.0

# Bijection on [0, 2**63): multiplication by an odd constant modulo 2**63 and xorshifts of a 63-bit
# value are both invertible there, so their composition maps distinct indices to distinct ids.
_MASK63 = np.uint64((1 << 63) - 1)
_B1 = np.uint64(0x5851F42D4C957F2D)
_B2 = np.uint64(0x2545F4914F6CDD1D)
_S29 = np.uint64(29)

_ZIPF_HEAD_RANKS = 1 << 16


def stream_key(seed: int, name: str) -> int:
    """The 64-bit key of stream ``name`` under ``seed`` (BLAKE2b of both; stable across runs)."""
    digest = hashlib.blake2b(f"adrank.synth/{seed}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _splitmix(keys: np.ndarray, key: np.uint64) -> np.ndarray:
    z = keys.astype(np.uint64, copy=False) + _ONE
    z = z * _GOLDEN + key
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


class HashStream:
    """A named stream of deterministic random values indexed by int64 keys.

    Args:
        seed: The generation seed (``--seed``).
        name: The stream's name; each random quantity uses its own name.
    """

    __slots__ = ("_key", "name")

    def __init__(self, seed: int, name: str) -> None:
        self.name = name
        self._key = np.uint64(stream_key(seed, name))

    def bits(self, keys: np.ndarray) -> np.ndarray:
        """64 random bits per key (uint64, same shape as ``keys``)."""
        return _splitmix(np.asarray(keys), self._key)

    def uniform(self, keys: np.ndarray) -> np.ndarray:
        """Uniform floats in ``[0, 1)`` with 53 random bits (float64)."""
        return (self.bits(keys) >> _S11).astype(np.float64) * _INV_2_53

    def integers(self, keys: np.ndarray, high: int) -> np.ndarray:
        """Uniform integers in ``[0, high)`` (int64); ``high`` below 2**31 keeps the bias < 1e-9."""
        return (self.uniform(keys) * high).astype(np.int64)

    def normal(self, keys: np.ndarray) -> np.ndarray:
        """Standard normal floats (float64) by Box-Muller on the two 32-bit halves of one hash."""
        b = self.bits(keys)
        u1 = ((b >> _S32).astype(np.float64) + 1.0) * _INV_2_32  # (0, 1]: log is finite
        u2 = (b & np.uint64(0xFFFFFFFF)).astype(np.float64) * _INV_2_32
        return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)

    def normals(self, keys: np.ndarray, dim: int) -> np.ndarray:
        """``dim`` independent standard normals per key: a float64 array of shape ``(len, dim)``."""
        k = np.asarray(keys, dtype=np.int64)
        out = np.empty((k.shape[0], dim), dtype=np.float64)
        for j in range(dim):
            # Each column is its own stream so column j of key a never equals column i of key b.
            col_key = (int(self._key) + (j + 1) * int(_M2)) % (1 << 64)
            out[:, j] = HashStream._from_key(np.uint64(col_key)).normal(k)
        return out

    @staticmethod
    def _from_key(key: np.uint64) -> HashStream:
        s = HashStream.__new__(HashStream)
        s.name = ""
        s._key = key
        return s


def mix_ids(index: np.ndarray, seed: int, feature: str) -> np.ndarray:
    """Map dense indices to random-looking, distinct, non-negative int64 ids.

    Args:
        index: Non-negative int64 indices (e.g. an ad's position in the ad universe).
        seed: The generation seed.
        feature: Feature name; each feature gets its own bijection.

    Returns:
        int64 ids in ``[0, 2**63)``; equal indices give equal ids, distinct indices distinct ids.
    """
    key = np.uint64(stream_key(seed, "ids/" + feature)) & _MASK63
    x = (np.asarray(index).astype(np.uint64) ^ key) & _MASK63
    x = (x * _B1) & _MASK63
    x ^= x >> _S29
    x = (x * _B2) & _MASK63
    x ^= x >> _S32
    x = (x * _B1) & _MASK63
    x ^= x >> _S29
    return x.astype(np.int64)


class ZipfSampler:
    """Inverse-CDF sampler of Zipf ranks: ``P(rank = r) ~ (r + 1) ** -exponent`` for ``r < vocab``.

    Use :meth:`get`, which caches one sampler per ``(vocab, exponent)``.

    Args:
        vocab: Number of ranks ``V`` (>= 1).
        exponent: Zipf exponent ``s`` (> 0).
    """

    __slots__ = ("vocab", "exponent", "_head_cum", "_head_mass", "_total_mass")

    def __init__(self, vocab: int, exponent: float) -> None:
        if vocab < 1 or exponent <= 0:
            raise ValueError(f"need vocab >= 1 and exponent > 0, got {vocab}, {exponent}")
        self.vocab = int(vocab)
        self.exponent = float(exponent)
        head = min(self.vocab, _ZIPF_HEAD_RANKS)
        weights = np.arange(1, head + 1, dtype=np.float64) ** -self.exponent
        self._head_cum = np.cumsum(weights)
        self._head_mass = float(self._head_cum[-1])
        self._total_mass = self._head_mass + self._tail_integral(head + 0.5, self.vocab + 0.5)

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def get(vocab: int, exponent: float) -> ZipfSampler:
        """The cached sampler for ``(vocab, exponent)``."""
        return ZipfSampler(vocab, exponent)

    def _tail_integral(self, a: float, b: float) -> float:
        s = self.exponent
        if b <= a:
            return 0.0
        if abs(s - 1.0) < 1e-12:
            return math.log(b / a)
        return (b ** (1.0 - s) - a ** (1.0 - s)) / (1.0 - s)

    def probabilities(self, ranks: np.ndarray) -> np.ndarray:
        """``P(rank)`` for each of ``ranks`` under this sampler (float64); for tests and fits."""
        k = np.asarray(ranks, dtype=np.float64) + 1.0
        head = len(self._head_cum)
        s = self.exponent
        if abs(s - 1.0) < 1e-12:
            tail = np.log((k + 0.5) / (k - 0.5))
        else:
            tail = ((k + 0.5) ** (1.0 - s) - (k - 0.5) ** (1.0 - s)) / (1.0 - s)
        return np.where(k <= head, k**-s, tail) / self._total_mass

    def ranks(self, u: np.ndarray) -> np.ndarray:
        """Ranks for uniforms ``u`` in ``[0, 1)``: int64 in ``[0, vocab)``, rank 0 most popular."""
        target = np.asarray(u, dtype=np.float64) * self._total_mass
        out = np.searchsorted(self._head_cum, target, side="right").astype(np.int64)
        in_tail = target >= self._head_mass
        if in_tail.any():
            m = target[in_tail] - self._head_mass
            a = len(self._head_cum) + 0.5
            s = self.exponent
            if abs(s - 1.0) < 1e-12:
                x = a * np.exp(m)
            else:
                x = (a ** (1.0 - s) + m * (1.0 - s)) ** (1.0 / (1.0 - s))
            # x lies in [k - 1/2, k + 1/2) for the 1-based rank k; rank = k - 1.
            out[in_tail] = np.floor(x + 0.5).astype(np.int64) - 1
        return np.clip(out, 0, self.vocab - 1)
