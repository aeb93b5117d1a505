"""Mergeable per-feature sketch state: exact counters, HLL, a sampled exact table, heavy hitters.

One :class:`FeatureSketch` per sparse feature holds:

1. Exact counters: rows seen (rows of files having the column), a histogram of ids per present
   row (pooling factor; rows present and total ids follow from it), the event-time range of the
   feature's ids and of all rows seen (the log window).
2. A HyperLogLog sketch: ``2**p`` uint8 registers over ``h1`` of the id key. Merge = max.
3. A hash-sampled exact table ("adaptive distinct sampling", Gibbons 2001): every id whose
   sampling hash ``h2 < 2**(64 - level)`` with its exact count and first/last time. Level 0 keeps
   every id (exact mode). When the table holds more than ``exact_limit`` ids the level goes up by
   one (rate halves) and ids above the new threshold are dropped. The kept set is a deterministic
   function of the ids seen (level = the smallest ``j`` whose kept set fits the limit), so it does
   not depend on order, and merging two sketches gives exactly the sketch of the concatenated logs.
4. A Misra-Gries summary (mergeable frequent items, Agarwal et al. 2012) of capacity ``k``, kept
   only once the table samples (in exact mode the table itself has every count) and seeded from
   the exact table then. The kernel updates it per id and compacts it when it tracks ``2k`` ids
   (amortised O(1) per id, and it stays in cache), rather than counting each batch exactly and
   merging. The textbook "subtract d from every counter" is kept as a global ``undercount`` that
   grows by d, while each tracked id keeps its exact count since it was (last) inserted and the
   ``undercount`` at that moment: its true count lies in ``[count, count + err_at_insert]`` (ids
   tracked since sampling began are exact), an untracked id's count is at most ``undercount``,
   and ``undercount <= total_ids / (k + 1)``.
5. For string features, the raw strings of the current heavy-hitter candidates.

Example::

    >>> s = FeatureSketch.empty("ad_id", IdKind.INT, False, exact_limit=100, hll_precision=10,
    ...                         heavy_keep=40)
    >>> s.observe(np.array([7, 7, 9], dtype=np.int64))
    >>> s.add_rows(rows_seen=4, present_rows=3, ts_min=None, ts_max=None)
    >>> sorted(map(tuple, s.sample_entries()[:, :2].tolist()))
    [(7, 2), (9, 1)]
"""

from __future__ import annotations

import base64
import logging
import zlib
from typing import Any

import numpy as np
import pyarrow as pa

from adrank.errors import InputError
from sharding_planner.stats import kernels as K
from sharding_planner.types import HLL_PRECISION_RANGE, IdKind

__all__ = ["FeatureSketch", "decode_int64", "encode_int64"]

logger = logging.getLogger(__name__)

_MIN_CAPACITY = 1024
_EMPTY_BOOL = np.empty(0, dtype=np.bool_)
_EMPTY_I64 = np.empty(0, dtype=np.int64)


def _capacity_for(n: int) -> int:
    """Smallest power-of-two capacity holding ``n`` ids at load factor <= 1/2."""
    return max(_MIN_CAPACITY, 1 << max(0, (2 * n - 1).bit_length()))


class FeatureSketch:
    """The mergeable state of one feature's statistics (see the module docstring).

    Mutated only by the thread that owns it during a run; treat it as read-only once returned in
    a :class:`~sharding_planner.types.StatsReport`. Build with :meth:`empty` or
    :meth:`from_dict`.
    """

    __slots__ = (
        "name",
        "id_kind",
        "multi_hot",
        "exact_limit",
        "heavy_keep",
        "scal",
        "table",
        "hll",
        "mg",
        "rows_seen",
        "pooling_hist",
        "log_start_s",
        "log_end_s",
        "raw_ids",
    )

    def __init__(
        self,
        name: str,
        id_kind: IdKind,
        multi_hot: bool,
        *,
        exact_limit: int,
        heavy_keep: int,
        scal: np.ndarray,
        table: np.ndarray,
        hll: np.ndarray,
        mg: np.ndarray,
        rows_seen: int,
        pooling_hist: np.ndarray,
        log_start_s: int | None,
        log_end_s: int | None,
        raw_ids: dict[int, str],
    ) -> None:
        self.name = name
        self.id_kind = id_kind
        self.multi_hot = multi_hot
        self.exact_limit = exact_limit
        self.heavy_keep = heavy_keep
        self.scal = scal
        self.table = table
        self.hll = hll
        self.mg = mg
        self.rows_seen = rows_seen
        self.pooling_hist = pooling_hist
        self.log_start_s = log_start_s
        self.log_end_s = log_end_s
        self.raw_ids = raw_ids

    # ------------------------------------------------------------------ construction

    @classmethod
    def empty(
        cls,
        name: str,
        id_kind: IdKind,
        multi_hot: bool,
        *,
        exact_limit: int,
        hll_precision: int,
        heavy_keep: int,
    ) -> FeatureSketch:
        """A sketch that has seen nothing.

        Args:
            name: Feature (column) name.
            id_kind: Int or string raw ids.
            multi_hot: List column.
            exact_limit: Ids held in the exact table before it starts sampling.
            hll_precision: HLL precision p.
            heavy_keep: Misra-Gries k (ids kept after each compaction).
        """
        scal = np.zeros(K.N_SCALARS, dtype=np.int64)
        scal[K.S_HLL_P] = hll_precision
        scal[K.S_LIMIT] = exact_limit
        scal[K.S_MG_KEEP] = heavy_keep
        scal[K.S_MG_MAX] = 2 * heavy_keep
        scal[K.S_MIN_TS] = K.FIRST_NONE
        scal[K.S_MAX_TS] = K.LAST_NONE
        cap = min(_MIN_CAPACITY, _capacity_for(exact_limit))
        scal[K.S_GROW_AT] = cap // 2 + 1
        return cls(
            name,
            id_kind,
            multi_hot,
            exact_limit=exact_limit,
            heavy_keep=heavy_keep,
            scal=scal,
            table=np.zeros((cap, 4), dtype=np.int64),
            hll=np.zeros(1 << hll_precision, dtype=np.uint8),
            mg=np.zeros((_capacity_for(2 * heavy_keep), 5), dtype=np.int64),
            rows_seen=0,
            pooling_hist=np.zeros(2, dtype=np.int64),
            log_start_s=None,
            log_end_s=None,
            raw_ids={},
        )

    def empty_like(self, name: str | None = None) -> FeatureSketch:
        """An empty sketch with this one's settings."""
        return FeatureSketch.empty(
            name or self.name,
            self.id_kind,
            self.multi_hot,
            exact_limit=self.exact_limit,
            hll_precision=self.hll_precision,
            heavy_keep=self.heavy_keep,
        )

    # ------------------------------------------------------------------ read-only views

    @property
    def hll_precision(self) -> int:
        """HLL precision p."""
        return int(self.scal[K.S_HLL_P])

    @property
    def level(self) -> int:
        """Sample level j: the exact table holds ids with h2 < 2**(64 - j)."""
        return int(self.scal[K.S_LEVEL])

    @property
    def sample_rate(self) -> float:
        """Share of distinct ids the exact table holds (1.0 in exact mode)."""
        return float(2.0**-self.level)

    @property
    def is_exact(self) -> bool:
        """Whether every distinct id is in the exact table."""
        return self.level == 0

    @property
    def sample_size(self) -> int:
        """Ids in the exact table."""
        return int(self.scal[K.S_SIZE])

    @property
    def heavy_active(self) -> bool:
        """Whether the Misra-Gries summary is maintained (only in sampled mode)."""
        return bool(self.scal[K.S_MG_ACTIVE])

    @property
    def heavy_undercount(self) -> int:
        """Bound on how far a summary count (or an untracked id's zero) is below the truth."""
        return int(self.scal[K.S_MG_ERR])

    @property
    def first_seen_s(self) -> int | None:
        """Earliest event time of an observed id."""
        v = int(self.scal[K.S_MIN_TS])
        return None if v == K.FIRST_NONE else v

    @property
    def last_seen_s(self) -> int | None:
        """Latest event time of an observed id."""
        v = int(self.scal[K.S_MAX_TS])
        return None if v == K.LAST_NONE else v

    @property
    def rows_present(self) -> int:
        """Rows with at least one id."""
        return int(self.pooling_hist[1:].sum())

    @property
    def total_ids(self) -> int:
        """Ids observed (sum of list lengths)."""
        return int(np.dot(np.arange(self.pooling_hist.shape[0], dtype=np.int64), self.pooling_hist))

    def sample_entries(self) -> np.ndarray:
        """Exact-table rows ``[key, count, first_ts, last_ts]`` sorted by key, shape ``(n, 4)``."""
        e = K.table_entries(self.table)
        return e[np.argsort(e[:, K.COL_KEY], kind="stable")]

    def heavy_entries(self) -> np.ndarray:
        """Misra-Gries rows ``[key, count, first_ts, last_ts, err_at_insert]`` sorted by key.

        ``count`` is exact since the id was last inserted, so the true count lies in
        ``[count, count + err_at_insert]``. Empty while the summary is inactive.
        """
        if not self.heavy_active:
            return np.empty((0, 5), dtype=np.int64)
        e = K.table_entries(self.mg)
        return e[np.argsort(e[:, K.COL_KEY], kind="stable")]

    def heavy_candidates(self) -> np.ndarray:
        """Id keys that may end up among the reported heavy hitters (for capturing raw strings).

        In exact mode, the top ``heavy_keep`` ids by (count desc, key asc); an id's count only grows
        when it occurs, so an id in the final top list was in this set right after its last
        occurrence. In sampled mode, the ids the Misra-Gries summary tracks (same argument).
        """
        if self.heavy_active:
            return K.table_entries(self.mg)[:, K.COL_KEY]
        return _top_keys(K.table_entries(self.table), self.heavy_keep)

    # ------------------------------------------------------------------ updates

    def observe(
        self,
        keys: np.ndarray,
        valid: np.ndarray | None = None,
        rows: np.ndarray | None = None,
        ts: np.ndarray | None = None,
    ) -> None:
        """Observe a batch of ids.

        Args:
            keys: int64 id keys, C-contiguous.
            valid: bool mask; False entries are skipped (null ids). None: all valid.
            rows: For list features, each id's row index into ``ts``. None: id i is row i.
            ts: int64 epoch seconds per row, ``kernels.NO_TS`` where unknown. None: no times.
        """
        n = keys.shape[0]
        start = 0
        v = _EMPTY_BOOL if valid is None else valid
        r = _EMPTY_I64 if rows is None else rows
        t = _EMPTY_I64 if ts is None else ts
        while start < n:
            start = K.observe_ids(
                keys,
                v,
                valid is not None,
                r,
                rows is not None,
                t,
                ts is not None,
                start,
                self.scal,
                self.table,
                self.hll,
                self.mg,
            )
            size = self.sample_size
            if size > self.exact_limit or size >= int(self.scal[K.S_GROW_AT]):
                self._fix_table()

    def add_rows(
        self, rows_seen: int, present_rows: int, ts_min: int | None, ts_max: int | None
    ) -> None:
        """Count rows of a single-valued feature: ``present_rows`` of ``rows_seen`` had an id.

        Args:
            rows_seen: Rows of the batch.
            present_rows: Rows with a non-null id.
            ts_min: Earliest known timestamp among the batch's rows (None if none).
            ts_max: Latest known timestamp among the batch's rows.
        """
        self.rows_seen += rows_seen
        self.pooling_hist[1] += present_rows
        self._extend_log_window(ts_min, ts_max)

    def add_list_rows(
        self, rows_seen: int, lengths: np.ndarray, ts_min: int | None, ts_max: int | None
    ) -> None:
        """Count rows of a multi-hot feature from the number of ids in each row (0 = absent)."""
        self.rows_seen += rows_seen
        if lengths.shape[0]:
            hist = np.bincount(lengths)
            if hist.shape[0] > self.pooling_hist.shape[0]:
                grown = np.zeros(hist.shape[0], dtype=np.int64)
                grown[: self.pooling_hist.shape[0]] = self.pooling_hist
                self.pooling_hist = grown
            self.pooling_hist[: hist.shape[0]] += hist
            self.pooling_hist[0] = 0  # absent rows are not part of the pooling distribution
        self._extend_log_window(ts_min, ts_max)

    def capture_raw(self, dict_keys: np.ndarray, dict_values: pa.Array) -> None:
        """Remember the raw strings of heavy-hitter candidates found in a batch's dictionary.

        Args:
            dict_keys: Id keys of the batch's distinct strings.
            dict_values: The distinct strings, aligned with ``dict_keys``.
        """
        candidates = self.heavy_candidates()
        known = self.raw_ids
        missing = np.array([k for k in candidates.tolist() if k not in known], dtype=np.int64)
        if missing.shape[0]:
            hit = np.flatnonzero(np.isin(dict_keys, missing))
            if hit.shape[0]:
                strings = dict_values.take(pa.array(hit)).to_pylist()
                for k, s in zip(dict_keys[hit].tolist(), strings, strict=True):
                    known[k] = s
        if len(known) > 2 * max(1, candidates.shape[0]):
            keep = set(candidates.tolist())
            self.raw_ids = {k: s for k, s in known.items() if k in keep}

    def _extend_log_window(self, ts_min: int | None, ts_max: int | None) -> None:
        if ts_min is not None:
            self.log_start_s = ts_min if self.log_start_s is None else min(self.log_start_s, ts_min)
        if ts_max is not None:
            self.log_end_s = ts_max if self.log_end_s is None else max(self.log_end_s, ts_max)

    def _fix_table(self) -> None:
        """Raise the sample level while the table is over the limit, else grow it."""
        if self.sample_size > self.exact_limit:
            entries = K.table_entries(self.table)
            if not self.heavy_active:
                self._activate_heavy(entries)
            level = self.level
            while entries.shape[0] > self.exact_limit:
                level += 1
                entries = _filter_level(entries, level)
            logger.debug(
                "%s: exact table over %d ids; sample rate now 2**-%d",
                self.name,
                self.exact_limit,
                level,
            )
            self.scal[K.S_LEVEL] = level
            self._set_table(entries, max(self.table.shape[0], _capacity_for(entries.shape[0])))
        else:
            entries = K.table_entries(self.table)
            self._set_table(entries, 2 * self.table.shape[0])

    def _set_table(self, entries: np.ndarray, capacity: int) -> None:
        table, n = K.build_table(entries, capacity)
        self.table = table
        self.scal[K.S_SIZE] = n
        self.scal[K.S_GROW_AT] = capacity // 2 + 1

    def _activate_heavy(self, exact_entries: np.ndarray) -> None:
        """Start the Misra-Gries summary from exact counts (sampling is about to begin)."""
        rows, err = _compact_summary(_exact_summary(exact_entries), 0, self.heavy_keep)
        self._set_summary(rows, err)

    def _set_summary(self, rows: np.ndarray, err: int) -> None:
        self.mg = K.build_summary(rows, self.mg.shape[0])
        self.scal[K.S_MG_ACTIVE] = 1
        self.scal[K.S_MG_SIZE] = rows.shape[0]
        self.scal[K.S_MG_ERR] = err

    def _summary(self) -> tuple[np.ndarray, int]:
        """(rows, err) of the summary; an exact sketch's is its whole table with err 0."""
        if self.heavy_active:
            return K.table_entries(self.mg), self.heavy_undercount
        return _exact_summary(K.table_entries(self.table)), 0

    # ------------------------------------------------------------------ merge

    def merge(self, other: FeatureSketch) -> FeatureSketch:
        """A new sketch equal to this one's logs followed by ``other``'s (neither is changed).

        Raises:
            InputError: The sketches have different settings or id kinds.
        """
        problems = []
        if (self.id_kind, self.multi_hot) != (other.id_kind, other.multi_hot):
            problems.append(
                f"ids are {_kind_label(self)} in one input and {_kind_label(other)} in the other"
            )
        if (self.exact_limit, self.heavy_keep, self.hll_precision) != (
            other.exact_limit,
            other.heavy_keep,
            other.hll_precision,
        ):
            problems.append(
                "sketch settings (exact limit, heavy-hitter capacity, HLL precision) differ"
            )
        if problems:
            raise InputError(
                f"cannot merge statistics of feature {self.name!r}: " + "; ".join(problems),
                source=self.name,
                hint="merge only stats computed with the same settings from logs of one schema",
            )
        out = self.empty_like()
        out.rows_seen = self.rows_seen + other.rows_seen
        n = max(self.pooling_hist.shape[0], other.pooling_hist.shape[0])
        out.pooling_hist = np.zeros(n, dtype=np.int64)
        out.pooling_hist[: self.pooling_hist.shape[0]] += self.pooling_hist
        out.pooling_hist[: other.pooling_hist.shape[0]] += other.pooling_hist
        out.log_start_s, out.log_end_s = self.log_start_s, self.log_end_s
        out._extend_log_window(other.log_start_s, other.log_end_s)
        out.scal[K.S_MIN_TS] = min(self.scal[K.S_MIN_TS], other.scal[K.S_MIN_TS])
        out.scal[K.S_MAX_TS] = max(self.scal[K.S_MAX_TS], other.scal[K.S_MAX_TS])
        out.hll = np.maximum(self.hll, other.hll)

        # Exact table: both filtered to the higher level, summed, then levelled up while too big.
        level = max(self.level, other.level)
        mine = _filter_level(K.table_entries(self.table), level)
        theirs = _filter_level(K.table_entries(other.table), level)
        entries = _sum_entries(np.concatenate([mine, theirs]))
        while entries.shape[0] > self.exact_limit:
            level += 1
            entries = _filter_level(entries, level)
        out.scal[K.S_LEVEL] = level
        out._set_table(entries, _capacity_for(max(entries.shape[0], 1)))

        # Heavy hitters: needed only if the result samples; an exact side contributes its summary
        # as if it had started sampling (the seeding rule of _activate_heavy).
        if level > 0:
            rows, err = _merge_summaries(self._summary(), other._summary())
            if rows.shape[0] >= 2 * self.heavy_keep:  # the kernel's trigger: merging an empty
                rows, err = _compact_summary(rows, err, self.heavy_keep)  # sketch is a no-op
            out._set_summary(rows, err)
        if self.id_kind is IdKind.STRING:
            raw = {**self.raw_ids, **other.raw_ids}
            keep = set(out.heavy_candidates().tolist())
            out.raw_ids = {k: s for k, s in raw.items() if k in keep}
        return out

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-ready values (arrays as base64 of zlib of byte-shuffled int64)."""
        sample = self.sample_entries()
        heavy = self.heavy_entries()
        return {
            "id_kind": self.id_kind.value,
            "multi_hot": self.multi_hot,
            "exact_limit": self.exact_limit,
            "heavy_keep": self.heavy_keep,
            "rows_seen": self.rows_seen,
            "pooling_hist": self.pooling_hist.tolist(),
            "log_start_s": self.log_start_s,
            "log_end_s": self.log_end_s,
            "first_seen_s": self.first_seen_s,
            "last_seen_s": self.last_seen_s,
            "hll": {
                "precision": self.hll_precision,
                "registers": base64.b64encode(zlib.compress(self.hll.tobytes(), 6)).decode("ascii"),
            },
            "sample": {
                "level": self.level,
                "size": int(sample.shape[0]),
                **{name: encode_int64(sample[:, col]) for name, col in _COLUMNS},
            },
            "heavy": {
                "active": self.heavy_active,
                "undercount": self.heavy_undercount,
                "size": int(heavy.shape[0]),
                **{name: encode_int64(heavy[:, col]) for name, col in _SUMMARY_COLUMNS},
            },
            "raw_ids": {str(k): self.raw_ids[k] for k in sorted(self.raw_ids)},
        }

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any], source: str) -> FeatureSketch:
        """Rebuild a sketch from :meth:`to_dict` output.

        Args:
            name: Feature name.
            d: The ``sketch`` object of a stats file.
            source: Where it came from, for errors (``path:features.<name>.sketch``).

        Raises:
            InputError: A field is missing or malformed.
        """
        try:
            p = int(d["hll"]["precision"])
            exact_limit = int(d["exact_limit"])
            heavy_keep = int(d["heavy_keep"])
            lo, hi = HLL_PRECISION_RANGE
            if not (lo <= p <= hi and exact_limit >= 1 and heavy_keep >= 1):
                raise ValueError(f"bad settings p={p}, exact_limit={exact_limit}, k={heavy_keep}")
            s = cls.empty(
                name,
                IdKind(d["id_kind"]),
                bool(d["multi_hot"]),
                exact_limit=exact_limit,
                hll_precision=p,
                heavy_keep=heavy_keep,
            )
            hll = np.frombuffer(
                zlib.decompress(base64.b64decode(d["hll"]["registers"])), dtype=np.uint8
            )
            if hll.shape[0] != 1 << p:
                raise ValueError(f"{hll.shape[0]} HLL registers, expected {1 << p}")
            s.hll = hll.copy()
            s.rows_seen = int(d["rows_seen"])
            s.pooling_hist = np.asarray(d["pooling_hist"], dtype=np.int64)
            if s.pooling_hist.ndim != 1 or s.pooling_hist.shape[0] < 2:
                raise ValueError("pooling_hist must be a list of at least 2 counts")
            s.log_start_s = _opt_int(d["log_start_s"])
            s.log_end_s = _opt_int(d["log_end_s"])
            first, last = _opt_int(d["first_seen_s"]), _opt_int(d["last_seen_s"])
            s.scal[K.S_MIN_TS] = K.FIRST_NONE if first is None else first
            s.scal[K.S_MAX_TS] = K.LAST_NONE if last is None else last
            sample = _decode_rows(d["sample"])
            level = int(d["sample"]["level"])
            if not 0 <= level <= 64 or sample.shape[0] > exact_limit:
                raise ValueError(f"sample level {level} with {sample.shape[0]} ids is inconsistent")
            s.scal[K.S_LEVEL] = level
            s._set_table(sample, _capacity_for(max(sample.shape[0], 1)))
            heavy = d["heavy"]
            if heavy["active"]:
                rows = _decode_rows(heavy, _SUMMARY_COLUMNS)
                if rows.shape[0] >= 2 * heavy_keep or len(np.unique(rows[:, K.COL_KEY])) < len(
                    rows
                ):
                    raise ValueError("heavy-hitter summary is over capacity or repeats ids")
                s._set_summary(rows, int(heavy["undercount"]))
            s.raw_ids = {int(k): str(v) for k, v in d["raw_ids"].items()}
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise InputError(
                f"malformed sketch of feature {name!r}: {exc!r}",
                source=source,
                hint="regenerate the stats file with `adrank stats`",
            ) from exc
        return s


_COLUMNS = (
    ("keys", K.COL_KEY),
    ("counts", K.COL_COUNT),
    ("first_ts", K.COL_FIRST),
    ("last_ts", K.COL_LAST),
)
_SUMMARY_COLUMNS = (*_COLUMNS, ("err_at_insert", K.COL_ERR))


def encode_int64(values: np.ndarray) -> str:
    """Compact text form of an int64 array: byte-shuffled, zlib-compressed, base64.

    Byte shuffling (all first bytes, then all second bytes...) turns the mostly-constant high
    bytes of counts and timestamps into long runs that zlib compresses well.
    """
    a = np.ascontiguousarray(values, dtype="<i8")
    shuffled = a.view(np.uint8).reshape(-1, 8).T.tobytes()
    return base64.b64encode(zlib.compress(shuffled, 6)).decode("ascii")


def decode_int64(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`encode_int64` for an array of ``n`` values.

    Raises:
        ValueError: The text does not decode to ``n`` values.
    """
    raw = zlib.decompress(base64.b64decode(text, validate=True))
    if len(raw) != 8 * n:
        raise ValueError(f"array holds {len(raw) // 8} values, expected {n}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(8, n).T.copy().view("<i8").reshape(n)


def _decode_rows(d: dict[str, Any], columns: tuple[tuple[str, int], ...] = _COLUMNS) -> np.ndarray:
    n = int(d["size"])
    rows = np.empty((n, len(columns)), dtype=np.int64)
    for name, col in columns:
        rows[:, col] = decode_int64(d[name], n)
    if n and (rows[:, K.COL_COUNT] <= 0).any():
        raise ValueError("counts must be positive")
    return rows


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _kind_label(s: FeatureSketch) -> str:
    return ("list<" + s.id_kind.value + ">") if s.multi_hot else s.id_kind.value


def _filter_level(entries: np.ndarray, level: int) -> np.ndarray:
    """Rows whose key's sampling hash is below the level's threshold."""
    if level == 0 or entries.shape[0] == 0:
        return entries
    h2 = K.sample_hash(np.ascontiguousarray(entries[:, K.COL_KEY]))
    return entries[(h2 >> np.uint64(64 - level)) == 0]


def _sum_entries(entries: np.ndarray) -> np.ndarray:
    """Aggregate rows with equal keys: counts added, first = min, last = max."""
    if entries.shape[0] == 0:
        return entries.reshape(0, 4)
    table, _ = K.build_table(entries, _capacity_for(entries.shape[0]))
    return K.table_entries(table)


def _exact_summary(entries: np.ndarray) -> np.ndarray:
    """Summary rows (err_at_insert 0) from exact-table rows."""
    rows = np.zeros((entries.shape[0], 5), dtype=np.int64)
    rows[:, :4] = entries
    return rows


def _compact_summary(rows: np.ndarray, err: int, keep: int) -> tuple[np.ndarray, int]:
    """Misra-Gries compaction to at most ``keep`` ids (the numpy twin of the kernel's).

    Returns:
        (rows left, new undercount bound).
    """
    n = rows.shape[0]
    if n <= keep:
        return rows, err
    counters = rows[:, K.COL_COUNT] + rows[:, K.COL_ERR] - err
    err += int(np.partition(counters, n - keep - 1)[n - keep - 1])
    return rows[rows[:, K.COL_COUNT] + rows[:, K.COL_ERR] - err > 0], err


def _merge_summaries(
    a: tuple[np.ndarray, int], b: tuple[np.ndarray, int]
) -> tuple[np.ndarray, int]:
    """Merge two Misra-Gries summaries (Agarwal et al.): counters add, bounds add.

    An id untracked on one side had at most that side's bound there, so its err_at_insert grows by
    that bound; an id tracked on both sides keeps the sum of its two err_at_insert.
    """
    (ra, ea), (rb, eb) = a, b
    ra = ra.copy()
    rb = rb.copy()
    ra[:, K.COL_ERR] += eb
    rb[:, K.COL_ERR] += ea
    both = np.concatenate([ra, rb])
    keys, inv, occurrences = np.unique(both[:, K.COL_KEY], return_inverse=True, return_counts=True)
    out = np.zeros((keys.shape[0], 5), dtype=np.int64)
    out[:, K.COL_KEY] = keys
    np.add.at(out[:, K.COL_COUNT], inv, both[:, K.COL_COUNT])
    np.add.at(out[:, K.COL_ERR], inv, both[:, K.COL_ERR])
    out[occurrences == 2, K.COL_ERR] -= ea + eb
    out[:, K.COL_FIRST] = K.FIRST_NONE
    out[:, K.COL_LAST] = K.LAST_NONE
    np.minimum.at(out[:, K.COL_FIRST], inv, both[:, K.COL_FIRST])
    np.maximum.at(out[:, K.COL_LAST], inv, both[:, K.COL_LAST])
    return out, ea + eb


def _top_keys(entries: np.ndarray, k: int) -> np.ndarray:
    """Keys of the top ``k`` rows by (count desc, key asc)."""
    n = entries.shape[0]
    if n <= k:
        return entries[:, K.COL_KEY].copy()
    counts = entries[:, K.COL_COUNT]
    kth = np.partition(counts, n - k)[n - k]  # the k-th largest count
    above = entries[counts > kth, K.COL_KEY]
    tied = np.sort(entries[counts == kth, K.COL_KEY])[: k - above.shape[0]]
    return np.concatenate([above, tied])
