"""Stream parquet record batches through the feature sketches: :func:`compute_stats`.

Pipeline, with bounded memory (about ``prefetch + 1`` record batches of only the needed columns,
plus the sketches):

1. :func:`~sharding_planner.stats.inputs.plan_inputs` validates every file from its footer.
2. A reader thread decodes record batches (pyarrow, only the feature and timestamp columns) and
   converts the batch's timestamps to epoch seconds; it runs ahead by ``_PREFETCH`` batches.
3. For each batch, one task per feature column goes to a pool of worker threads: the column is
   turned into int64 id keys (zero-copy for int64 columns without nulls; strings dictionary-
   encoded so each distinct string is hashed once per batch) and fed to the feature's sketch,
   whose numba kernel releases the GIL. A feature's batches are processed in file order, one at a
   time; different features run in parallel.
4. Each sketch is summarized into a :class:`~sharding_planner.types.FeatureStats`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from adrank.errors import InputError
from adrank.formats import fingerprint
from adrank.hashing import id_keys_from_arrow
from adrank.timecols import epoch_seconds
from sharding_planner.stats import kernels as K
from sharding_planner.stats.inputs import FeatureColumn, InputFile, plan_inputs
from sharding_planner.stats.sketches import FeatureSketch
from sharding_planner.stats.summarize import summarize
from sharding_planner.types import (
    IdKind,
    InputFileInfo,
    StatsConfig,
    StatsReport,
    StatsTimings,
)

__all__ = ["compute_stats", "inputs_fingerprint", "report_from_sketches"]

logger = logging.getLogger(__name__)

_PREFETCH = 2


class _Batch:
    """A decoded record batch and its timestamps (epoch seconds, ``NO_TS`` where unknown)."""

    __slots__ = ("data", "ts", "ts_min", "ts_max")

    def __init__(
        self, data: pa.RecordBatch, ts: np.ndarray | None, ts_min: int | None, ts_max: int | None
    ) -> None:
        self.data = data
        self.ts = ts
        self.ts_min = ts_min
        self.ts_max = ts_max


def compute_stats(
    paths: Sequence[str | os.PathLike[str]],
    config: StatsConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> StatsReport:
    """Compute per-feature statistics over parquet click logs in one streaming pass.

    Args:
        paths: Parquet files or directories of them (searched recursively for ``*.parquet``).
        config: Settings; defaults to ``StatsConfig()``.
        progress: Called with the number of rows after each record batch.

    Returns:
        The report: statistics and mergeable sketches per feature, inputs and fingerprint.

    Raises:
        InputError: Bad settings, or any input problem (all of them, found before reading data),
            or a file that turns out corrupt while being read (naming the file and column).
    """
    config = config or StatsConfig()
    config.validate()
    t_start = time.perf_counter()
    files = plan_inputs(paths, config)
    sketches = _empty_sketches(files, config)
    threads = config.threads or _usable_cores()
    read_s = [0.0]
    compute_s = 0.0
    rows_done = 0
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="adrank-stats") as pool:
        for f in files:
            if not f.features:
                logger.warning("%s has no feature columns; skipped", f.path)
                continue
            for batch in _prefetch(_read_batches(f, config.batch_rows, read_s), _PREFETCH):
                futures: list[Future[float]] = [
                    pool.submit(_observe_column, sketches[col.name], col, batch, f.path)
                    for col in f.features
                ]
                compute_s += _gather(futures)
                rows_done += batch.data.num_rows
                if progress is not None:
                    progress(batch.data.num_rows)
    t_summary = time.perf_counter()
    report = report_from_sketches(
        sketches,
        config,
        tuple(InputFileInfo(str(f.path), f.fingerprint, f.rows) for f in files),
    )
    t_end = time.perf_counter()
    timings = StatsTimings(
        wall_s=t_end - t_start, read_s=read_s[0], compute_s=compute_s, summarize_s=t_end - t_summary
    )
    logger.info(
        "computed stats of %d features over %d rows in %.1f s (read %.1f s, sketch updates %.1f "
        "thread-s on %d threads, summaries %.1f s)",
        len(sketches),
        rows_done,
        timings.wall_s,
        timings.read_s,
        timings.compute_s,
        threads,
        timings.summarize_s,
    )
    return dataclasses.replace(report, timings=timings)


def _usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def inputs_fingerprint(fingerprints: Sequence[str], config: StatsConfig) -> str:
    """Fingerprint of a report's inputs: their sorted file fingerprints and the result settings."""
    return fingerprint({"inputs": sorted(fingerprints), "config": config.result_config()})


def report_from_sketches(
    sketches: dict[str, FeatureSketch], config: StatsConfig, inputs: tuple[InputFileInfo, ...]
) -> StatsReport:
    """Summarize every sketch and assemble the report (features sorted by name)."""
    names = sorted(sketches)
    features = {
        n: summarize(sketches[n], config.heavy_hitters, config.recent_window_s) for n in names
    }
    return StatsReport(
        config=config,
        inputs=inputs,
        inputs_fingerprint=inputs_fingerprint([i.fingerprint for i in inputs], config),
        features=features,
        sketches={n: sketches[n] for n in names},
    )


def _empty_sketches(files: list[InputFile], config: StatsConfig) -> dict[str, FeatureSketch]:
    sketches: dict[str, FeatureSketch] = {}
    for f in files:
        for col in f.features:
            if col.name not in sketches:
                sketches[col.name] = FeatureSketch.empty(
                    col.name,
                    col.id_kind,
                    col.multi_hot,
                    exact_limit=config.exact_distinct_limit,
                    hll_precision=config.hll_precision,
                    heavy_keep=config.heavy_hitter_capacity,
                )
    return sketches


def _gather(futures: list[Future[float]]) -> float:
    """Wait for every task; return their summed durations or raise the first failure."""
    total = 0.0
    first_exc: BaseException | None = None
    for fut in futures:
        exc = fut.exception()
        if exc is not None:
            first_exc = first_exc or exc
        else:
            total += fut.result()
    if first_exc is not None:
        raise first_exc
    return total


def _read_batches(f: InputFile, batch_rows: int, read_s: list[float]) -> Iterator[_Batch]:
    """Decode ``f``'s needed columns batch by batch, adding decode time to ``read_s[0]``.

    Raises:
        InputError: The file cannot be decoded (corrupt data pages, a bad timestamp value).
    """
    columns = [c.name for c in f.features]
    if f.timestamp_column is not None and f.timestamp_column not in columns:
        columns.append(f.timestamp_column)
    try:
        t0 = time.perf_counter()
        with pq.ParquetFile(f.path) as pf:
            it = pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True)
            read_s[0] += time.perf_counter() - t0
            while True:
                t0 = time.perf_counter()
                data = next(it, None)
                if data is None:
                    read_s[0] += time.perf_counter() - t0
                    return
                if f.timestamp_column is not None:
                    ts, lo, hi = _timestamps(
                        data.column(f.timestamp_column), f"{f.path}:{f.timestamp_column}"
                    )
                else:
                    ts, lo, hi = None, None, None
                read_s[0] += time.perf_counter() - t0
                yield _Batch(data, ts, lo, hi)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"cannot read parquet data ({type(exc).__name__}: {exc})",
            source=f"{f.path}:{','.join(columns)}",
            hint="the file may be corrupt or truncated; re-export it",
        ) from exc


def _timestamps(arr: pa.Array, source: str) -> tuple[np.ndarray, int | None, int | None]:
    """Epoch seconds (floored) per row, ``NO_TS`` for nulls, and the min/max known value."""
    values, nulls = epoch_seconds(arr, source=source)
    if nulls is not None:
        values[nulls] = K.NO_TS
        known = values[~nulls]
    else:
        known = values
    if known.shape[0] == 0:
        return values, None, None
    return values, int(known.min()), int(known.max())


def _prefetch(batches: Iterator[_Batch], depth: int) -> Iterator[_Batch]:
    """Run ``batches`` in a background thread, ``depth`` items ahead of the consumer."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for b in batches:
                if not put(("item", b)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(("error", exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # release the parquet file now, in this thread

    thread = threading.Thread(target=produce, name="adrank-stats-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "item":
                yield item
            elif kind == "end":
                return
            else:
                raise item
    finally:
        stop.set()
        thread.join()


def _observe_column(
    sketch: FeatureSketch, col: FeatureColumn, batch: _Batch, path: os.PathLike[str]
) -> float:
    """Feed one column of a batch to its sketch; return the seconds spent.

    Raises:
        InputError: The column's values cannot be converted to id keys.
    """
    t0 = time.perf_counter()
    arr = batch.data.column(col.name)
    n = batch.data.num_rows
    try:
        if col.multi_hot:
            values = pc.list_flatten(arr)
            parents = np.asarray(
                pc.list_parent_indices(arr).to_numpy(zero_copy_only=False), dtype=np.int64
            )
            keys, valid, dict_keys, dict_values = _id_keys(values, col.id_kind)
            lengths = np.bincount(parents if valid is None else parents[valid], minlength=n)
            sketch.add_list_rows(n, lengths, batch.ts_min, batch.ts_max)
            sketch.observe(keys, valid, parents, batch.ts)
        else:
            keys, valid, dict_keys, dict_values = _id_keys(arr, col.id_kind)
            present = n if valid is None else int(np.count_nonzero(valid))
            sketch.add_rows(n, present, batch.ts_min, batch.ts_max)
            sketch.observe(keys, valid, None, batch.ts)
        if dict_keys is not None and dict_values is not None:
            sketch.capture_raw(dict_keys, dict_values)
    except (pa.ArrowException, TypeError) as exc:
        raise InputError(
            f"cannot convert column {col.name!r} ({col.arrow_type}) to id keys: {exc}",
            source=f"{path}:{col.name}",
            hint="sparse ids must be integers or strings, or lists of them",
        ) from exc
    return time.perf_counter() - t0


def _id_keys(
    arr: pa.Array, kind: IdKind
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, pa.Array | None]:
    """(keys, valid mask or None if all valid, dictionary keys, dictionary strings) of flat ids."""
    if kind is IdKind.INT:
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if pa.types.is_uint64(arr.type):
            arr = arr.view(pa.int64())  # ids >= 2**63 keep their bits (a safe cast would fail)
        if arr.null_count == 0 and pa.types.is_int64(arr.type):
            return np.ascontiguousarray(arr.to_numpy(zero_copy_only=True)), None, None, None
        int_keys, int_valid = id_keys_from_arrow(arr)
        return int_keys, (int_valid if arr.null_count else None), None, None
    if pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_string())
    encoded = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    dictionary = encoded.dictionary
    if pa.types.is_string_view(dictionary.type):
        dictionary = dictionary.cast(pa.large_string())
    dict_keys, dict_valid = id_keys_from_arrow(dictionary)
    indices = np.asarray(
        pc.fill_null(encoded.indices, 0).cast(pa.int64()).to_numpy(zero_copy_only=False),
        dtype=np.int64,
    )
    if dict_keys.shape[0] == 0:
        keys = np.zeros(indices.shape[0], dtype=np.int64)
    else:
        keys = dict_keys[indices]
    valid: np.ndarray | None = None
    if encoded.null_count or not dict_valid.all():
        valid = np.asarray(encoded.is_valid().to_numpy(zero_copy_only=False))
        if dict_keys.shape[0]:
            valid = valid & dict_valid[indices]
    return keys, valid, dict_keys, dictionary
