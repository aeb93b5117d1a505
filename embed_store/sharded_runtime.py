"""The multi-process sharded lookup runtime: rank 0 takes lookups, every rank computes its shards.

Per batch: rank 0 validates and encodes the batch (:class:`~embed_store.frontend.LookupFrontend`),
hands the wire batch to the data transport, broadcasts a header, computes its own shards while the
other ranks compute theirs, and after one all-reduce (every rank's output is written, or one
failed) combines the partial outputs. Workers loop on the header until told to stop.

Start it with :func:`launch_local` (adrank spawns the other ranks on this host) or, under
``torchrun`` (several hosts), call :func:`start_from_env` on every rank: rank 0 gets the
:class:`ShardedLookup`, the others serve until rank 0 stops.

Failure handling: every collective has the runtime's ``timeout_s``; a rank that dies or stops
answering makes the next lookup raise :class:`~adrank.errors.RankFailedError` within that time
(naming the rank and, when adrank launched it, its exit code) and the runtime refuses further
lookups. While idle, rank 0 sends a keep-alive header every ``timeout_s / 3`` so workers can tell
an idle rank 0 from a dead one. Shutdown: a STOP header, a final agreement, the process group
dropped before exit (no abort at exit).
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import logging
import multiprocessing.process
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adrank.errors import AdrankError, InputError, RankFailedError
from adrank.planfile import read_plan
from adrank.remap import read_remap_file
from adrank.types import ShardPlan
from embed_store.batch import LookupBatch, LookupResult
from embed_store.checkpoint import open_checkpoint
from embed_store.frontend import LookupFrontend
from embed_store.layout import LookupLayout
from embed_store.rank_compute import RankCompute, ids_per_feature, split_rank_output
from embed_store.transport import (
    Control,
    Header,
    LocalSignals,
    Op,
    ProcessGroupData,
    SharedMemoryData,
    SignalControl,
    all_on_one_host,
)

__all__ = [
    "RuntimeConfig",
    "output_sizes",
    "ShardedLookup",
    "launch_local",
    "load_remaps",
    "start_from_env",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """How to run the sharded lookup runtime.

    Attributes:
        plan_path: ``plan.json`` or its directory.
        checkpoint_path: Checkpoint directory written under that plan.
        threads_per_rank: Cores each rank's kernels use (kernel groups per rank).
        timeout_s: Longest wait for any rank in any lookup step, in seconds.
        start_timeout_s: Longest wait for the ranks to start and load their shards, in seconds.
        transport: ``"auto"`` (shared memory when all ranks share a host), ``"shm"`` or
            ``"process_group"`` (gloo collectives).
    """

    plan_path: str
    checkpoint_path: str
    threads_per_rank: int = 1
    timeout_s: float = 30.0
    start_timeout_s: float = 300.0
    transport: str = "auto"

    def __post_init__(self) -> None:
        if self.transport not in ("auto", "shm", "process_group"):
            raise InputError(
                f"transport must be auto, shm or process_group, got {self.transport!r}",
                source="transport",
            )
        if self.threads_per_rank < 1 or self.timeout_s <= 0:
            raise InputError(
                f"threads_per_rank >= 1 and timeout_s > 0 needed, got {self.threads_per_rank}, "
                f"{self.timeout_s}",
                source="RuntimeConfig",
            )


def load_remaps(plan: ShardPlan, plan_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The pruning remaps a plan names (``remap_file``, relative to the plan directory)."""
    base = Path(plan_path)
    base = base if base.is_dir() else base.parent
    return {t.name: read_remap_file(base / t.remap_file) for t in plan.tables if t.remap_file}


@dataclasses.dataclass
class _Rank:
    """What every rank holds once started."""

    plan: ShardPlan
    layout: LookupLayout
    compute: RankCompute
    control: Control | SignalControl
    data: SharedMemoryData | ProcessGroupData
    startup: Control | None = None
    """The gloo control plane the ranks started on (kept alive while semaphores take over)."""


def _start_rank(
    config: RuntimeConfig,
    store: dist.Store,
    rank: int,
    world: int,
    signals: LocalSignals | None = None,
    processes: Sequence[multiprocessing.process.BaseProcess] = (),
) -> _Rank:
    """Load this rank's shards and join the control plane; all ranks agree that all loaded.

    Raises:
        RankFailedError: Some rank failed to load (its error text is read from the store).
        AdrankError: This rank's own load failed (plan, checkpoint or mismatch).
    """
    control = Control(store, rank, world, config.timeout_s, config.start_timeout_s)
    error: BaseException | None = None
    state: _Rank | None = None
    try:
        plan = read_plan(config.plan_path, require_remaps=True)
        if len(plan.devices) != world:
            raise InputError(
                f"the plan places shards on {len(plan.devices)} devices but {world} ranks started",
                source=config.plan_path,
                hint=f"start {len(plan.devices)} ranks (--devices {len(plan.devices)}) or re-plan",
            )
        ckpt = open_checkpoint(config.checkpoint_path)
        ckpt.check_plan(plan, source=config.checkpoint_path)
        layout = LookupLayout.from_plan(plan, threads_per_rank=config.threads_per_rank)
        compute = RankCompute(layout.ranks[rank], len(layout.features), ckpt.read_block)
        use_shm = config.transport == "shm" or (
            config.transport == "auto" and all_on_one_host(store, rank, world, "adrank-hosts")
        )
        if use_shm:
            prefix = _session_prefix(store, rank)
            data: SharedMemoryData | ProcessGroupData = SharedMemoryData(prefix, rank, world)
        else:
            data = ProcessGroupData(control)
        state = _Rank(plan=plan, layout=layout, compute=compute, control=control, data=data)
    except Exception as exc:  # reported to every rank below, then re-raised here
        error = exc
        store.set(f"adrank-start-error/{rank}", f"{type(exc).__name__}: {exc}")
    ok = control.agree(failed=error is not None)
    if error is not None:
        raise error
    if not ok:
        assert state is not None
        state.data.close()
        state.compute.close()
        raise RankFailedError(
            "the sharded runtime did not start: " + _start_errors(store, world),
            source=config.checkpoint_path,
        )
    assert state is not None
    control.started()
    if signals is not None and isinstance(state.data, SharedMemoryData):
        # Ranks adrank started on this host: per-batch control over semaphores (see
        # SignalControl); gloo stays for the start-up agreement above.
        state.startup = control
        state.control = SignalControl(signals, rank, config.timeout_s, processes)
    return state


def output_sizes(layout: LookupLayout, lengths: torch.Tensor, batch: int) -> list[int]:
    """float32 values of every rank's flat output for a wire batch (pooled + sequence parts)."""
    ids = ids_per_feature(lengths, len(layout.features), batch)
    return [batch * r.num_cols + r.sequence_elems(ids) for r in layout.ranks]


def _start_errors(store: dist.Store, world: int) -> str:
    parts = []
    for r in range(world):
        key = f"adrank-start-error/{r}"
        if store.check([key]):
            parts.append(f"rank {r}: {store.get(key).decode()}")
    return "; ".join(parts) or "a rank failed without a message"


def _session_prefix(store: dist.Store, rank: int) -> str:
    if rank == 0:
        store.set("adrank-shm-prefix", f"adrank-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    return store.get("adrank-shm-prefix").decode()


# -------------------------------------------------------------------------------------------------
# Workers
# -------------------------------------------------------------------------------------------------


def _serve_worker(state: _Rank) -> None:
    """Run a non-zero rank until rank 0 says stop (or fails).

    Raises:
        RankFailedError: Rank 0 went away or stopped answering within the timeout.
    """
    control, data, compute = state.control, state.data, state.compute
    try:
        while True:
            try:
                header = control.broadcast_header()
            except RuntimeError as exc:
                raise RankFailedError(
                    f"rank {control.rank} lost rank 0 (no header within {control.timeout_s:g} s): "
                    f"{_first_line(exc)}"
                ) from exc
            if header.op == Op.KEEPALIVE:
                continue
            if header.op == Op.STOP:
                control.agree(failed=False)
                return
            failed = False
            try:
                rows, lengths = data.receive_batch(header)
            except RuntimeError as exc:  # gloo: rank 0 went away mid-batch
                raise RankFailedError(
                    f"rank {control.rank} lost rank 0 during batch {header.seq}: {_first_line(exc)}"
                ) from exc
            out = data.output_buffer(output_sizes(state.layout, lengths, header.batch))
            try:
                compute.compute_flat(rows, lengths, header.batch, out)
            except Exception:
                logger.exception("rank %d failed on batch %d", control.rank, header.seq)
                failed = True
            try:
                data.send_output(out)  # collectives: rank 0 waits for every part, even a failed one
                control.agree(failed=failed)
            except RuntimeError as exc:
                raise RankFailedError(
                    f"rank {control.rank} lost rank 0 during batch {header.seq}: {_first_line(exc)}"
                ) from exc
    finally:
        _release(state)


def _release(state: _Rank) -> None:
    state.data.close()
    state.compute.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# -------------------------------------------------------------------------------------------------
# Rank 0
# -------------------------------------------------------------------------------------------------


class ShardedLookup:
    """Rank 0's handle on a running sharded lookup runtime.

    Thread-safe: concurrent :meth:`lookup` calls run one at a time (a batch uses every rank).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        state: _Rank,
        remaps: dict[str, np.ndarray],
        *,
        processes: Sequence[multiprocessing.process.BaseProcess] | None = None,
        store: dist.Store | None = None,
    ) -> None:
        self._state = state
        self.plan = state.plan
        self.layout = state.layout
        self.frontend = LookupFrontend(state.plan, state.layout, remaps)
        # Without row splits or sequence tables every result column has one writer, so rank 0
        # can write its part in place (one copy less per batch).
        self._direct = not state.layout.overlapping and not any(state.layout.sequence)
        self._processes = list(processes or [])
        self._store = store
        self._lock = threading.Lock()
        self._seq = 0
        self._broken: str | None = None
        self._closed = False
        self._last_step = time.monotonic()
        self._stop_keepalive = threading.Event()
        self._keepalive = threading.Thread(
            target=self._keepalive_loop, name="adrank-keepalive", daemon=True
        )
        self._keepalive.start()

    @property
    def world_size(self) -> int:
        """Ranks serving."""
        return self._state.control.world_size

    def lookup(self, batch: LookupBatch) -> LookupResult:
        """Pooled embeddings of ``batch`` from the sharded tables.

        Raises:
            InputError: A malformed batch (nothing was sent to the ranks).
            RankFailedError: A rank failed or did not answer within ``timeout_s``; the runtime is
                then unusable.
        """
        wire = self.frontend.encode(batch)  # validate before any rank works
        with self._lock:
            self._check_usable()
            self._seq += 1
            st = self._state
            try:
                pg_data = isinstance(st.data, ProcessGroupData)
                if not pg_data:  # shared memory: in place before the header announces it
                    st.data.send_batch(wire.rows, wire.lengths)
                st.control.broadcast_header(
                    Header(
                        op=Op.LOOKUP,
                        seq=self._seq,
                        batch=wire.batch,
                        num_values=wire.rows.numel(),
                        num_features=len(self.layout.features),
                    )
                )
                if pg_data:  # collectives: the workers post the receive after the header
                    st.data.send_batch(wire.rows, wire.lengths)
                sizes = output_sizes(self.layout, wire.lengths, wire.batch)
                direct = self._direct and not pg_data
                if direct:
                    # Rank 0 writes its pairs straight into their columns of the result.
                    final = torch.empty((wire.batch, self.layout.total_cols), dtype=torch.float32)
                    st.compute.compute_groups(
                        wire.rows,
                        wire.lengths,
                        wire.batch,
                        pair_outs=[
                            [final[:, p.out_col : p.out_col + p.num_cols] for p in g.pairs]
                            for g in self.layout.ranks[0].groups
                        ],
                    )
                    own = torch.empty(0, dtype=torch.float32)
                else:
                    own = torch.empty(sizes[0], dtype=torch.float32)
                    st.compute.compute_flat(wire.rows, wire.lengths, wire.batch, own)
                if pg_data:
                    flats = st.data.gather_outputs(own, sizes)
                    ok = st.control.agree(failed=False)
                else:
                    # Shared segments are read after the agreement: by then every rank has
                    # written (and, if it grew, created) its segment.
                    ok = st.control.agree(failed=False)
                    flats = st.data.gather_outputs(own, sizes) if ok else []
            except RuntimeError as exc:
                self._broken = self._describe_failure(exc)
                raise RankFailedError(self._broken) from exc
            finally:
                self._last_step = time.monotonic()
            if not ok:
                self._broken = f"a rank failed computing batch {self._seq} (see its log)"
                raise RankFailedError(self._broken)
            if direct:
                rest = [
                    split_rank_output(rl, flat, [], wire.batch)[0]
                    for rl, flat in zip(self.layout.ranks[1:], flats[1:], strict=True)
                ]
                return self.frontend.combine(wire, [None, *rest], None, out=final)
            ids = ids_per_feature(wire.lengths, len(self.layout.features), wire.batch)
            split = [
                split_rank_output(rl, flat, ids, wire.batch)
                for rl, flat in zip(self.layout.ranks, flats, strict=True)
            ]
            return self.frontend.combine(
                wire,
                [pooled for pooled, _ in split],
                [seq for _, seq in split] if any(self.layout.sequence) else None,
            )

    def _check_usable(self) -> None:
        if self._closed:
            raise RankFailedError("the sharded runtime is closed")
        if self._broken is not None:
            raise RankFailedError(f"the sharded runtime failed earlier: {self._broken}")

    def _describe_failure(self, exc: BaseException) -> str:
        # Give a dying process a moment to be reaped so its exit code can be reported.
        deadline = time.monotonic() + 2.0
        dead = []
        while time.monotonic() < deadline:
            dead = [
                (i + 1, p.exitcode) for i, p in enumerate(self._processes) if p.exitcode is not None
            ]
            if dead or not self._processes:
                break
            time.sleep(0.05)
        who = ", ".join(f"rank {r} exited with code {c}" for r, c in dead)
        return (
            f"batch {self._seq} failed: {who or 'a rank did not answer'} "
            f"(timeout {self._state.control.timeout_s:g} s): {_first_line(exc)}"
        )

    def _keepalive_loop(self) -> None:
        interval = self._state.control.timeout_s / 3
        while not self._stop_keepalive.wait(interval / 4):
            if time.monotonic() - self._last_step < interval:
                continue
            with self._lock:
                if self._closed or self._broken is not None:
                    return
                try:
                    self._state.control.broadcast_header(Header(op=Op.KEEPALIVE))
                except RuntimeError as exc:
                    self._broken = self._describe_failure(exc)
                    logger.error("sharded runtime: %s", self._broken)
                    return
                self._last_step = time.monotonic()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop every rank and release shared memory; safe to call twice."""
        if self._closed:
            return
        self._stop_keepalive.set()
        with self._lock:
            self._closed = True
            if self._broken is None:
                try:
                    self._state.control.broadcast_header(Header(op=Op.STOP))
                    self._state.control.agree(failed=False)
                except RuntimeError as exc:
                    logger.warning(
                        "sharded runtime: a rank did not stop cleanly: %s", _first_line(exc)
                    )
            _release(self._state)
        self._keepalive.join(timeout=5)
        for p in self._processes:
            p.join(timeout=timeout_s)
            if p.exitcode is None:
                logger.warning("rank process %s did not exit; killing it", p.pid)
                p.kill()
                p.join(timeout=5)
        # Drop the process group before interpreter exit (FACTS: avoids the gloo abort at exit).
        del self._state
        gc.collect()

    def __enter__(self) -> ShardedLookup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -------------------------------------------------------------------------------------------------
# Starting
# -------------------------------------------------------------------------------------------------


def _worker_main(
    config: RuntimeConfig, port: int, rank: int, world: int, signals: LocalSignals | None
) -> None:
    torch.set_num_threads(config.threads_per_rank)
    logging.basicConfig(level=logging.WARNING, format=f"rank {rank}: %(levelname)s %(message)s")
    store = dist.TCPStore(
        "127.0.0.1", port, world, False, timeout=datetime.timedelta(seconds=config.start_timeout_s)
    )
    try:
        state = _start_rank(config, store, rank, world, signals)
        _serve_worker(state)
    except AdrankError as exc:
        logger.error("%s", exc)
        os._exit(1)  # no gloo teardown races at interpreter exit
    del store
    gc.collect()
    os._exit(0)


def launch_local(
    config: RuntimeConfig,
    world_size: int,
    *,
    on_started: Callable[[int], None] | None = None,
) -> ShardedLookup:
    """Start ``world_size`` ranks on this host: this process is rank 0, the rest are spawned.

    Args:
        config: Plan, checkpoint and runtime settings.
        world_size: Ranks (must equal the plan's devices).
        on_started: Called with each spawned worker's pid (for tests that kill one).

    Returns:
        The running runtime (close it).

    Raises:
        RankFailedError: A rank failed to start (its message included).
        AdrankError: Rank 0's own plan/checkpoint problem.
    """
    if world_size < 1:
        raise InputError(f"world_size must be >= 1, got {world_size}", source="world_size")
    plan = read_plan(config.plan_path, require_remaps=True)  # fail fast, before spawning anything
    if len(plan.devices) != world_size:
        raise InputError(
            f"the plan places shards on {len(plan.devices)} devices, not {world_size}",
            source=config.plan_path,
            hint=f"use --devices {len(plan.devices)} or re-plan for {world_size} devices",
        )
    remaps = load_remaps(plan, config.plan_path)
    store = dist.TCPStore(
        "127.0.0.1",
        0,
        world_size,
        True,
        timeout=datetime.timedelta(seconds=config.start_timeout_s),
        wait_for_workers=False,
    )
    ctx = mp.get_context("spawn")
    signals = LocalSignals(world_size, ctx)
    processes = []
    for rank in range(1, world_size):
        p = ctx.Process(
            target=_worker_main,
            args=(config, store.port, rank, world_size, signals),
            name=f"adrank-rank{rank}",
            daemon=True,
        )
        p.start()
        processes.append(p)
        if on_started is not None and p.pid is not None:
            on_started(p.pid)
    try:
        state = _start_rank(config, store, 0, world_size, signals, processes)
    except BaseException:
        for p in processes:
            p.join(timeout=config.start_timeout_s)
            if p.exitcode is None:
                p.kill()
        raise
    return ShardedLookup(state, remaps, processes=processes, store=store)


def start_from_env(config: RuntimeConfig) -> ShardedLookup | None:
    """Join a runtime launched by ``torchrun`` (RANK, WORLD_SIZE, MASTER_ADDR/PORT set).

    Returns:
        On rank 0, the running :class:`ShardedLookup`; on other ranks, None after serving until
        rank 0 stopped.

    Raises:
        InputError: The torchrun environment variables are missing.
        RankFailedError: A rank failed to start, or rank 0 went away.
    """
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise InputError(
            f"not started by torchrun: {', '.join(missing)} unset",
            hint="launch with `torchrun --nproc-per-node N adrank serve-embeddings ...` or use "
            "--devices N to let adrank start the ranks",
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store, _, _ = next(
        dist.rendezvous(
            "env://", rank, world, timeout=datetime.timedelta(seconds=config.start_timeout_s)
        )
    )
    store = dist.PrefixStore("adrank-embeddings", store)
    torch.set_num_threads(config.threads_per_rank)
    state = _start_rank(config, store, rank, world)
    if rank == 0:
        plan = state.plan
        return ShardedLookup(state, load_remaps(plan, config.plan_path), store=store)
    _serve_worker(state)
    return None
