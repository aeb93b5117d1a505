"""How a lookup's ids reach the ranks and their partial outputs come back.

Control always goes through a gloo process group (``ProcessGroupGloo`` built directly on a store,
so a runtime needs no global ``init_process_group`` and several can live in one process): rank 0
broadcasts a small header per batch, and an all-reduce of a status word says every rank has
written its output (or that one failed). Gloo's timeout turns a dead or stuck rank into an error
instead of a hang.

Data goes one of two ways:

* :class:`SharedMemoryData` (ranks on one host): the wire batch and every rank's partial output
  live in files under ``/dev/shm`` mapped by all ranks. Nothing is serialised or sent over
  loopback TCP; a batch costs two small collectives plus the copies into the mappings. Segment
  sizes are a deterministic function of the batch (next power of two of the bytes needed), so a
  rank that grows its segment and the ranks that read it agree on the file name without talking.
* :class:`ProcessGroupData` (ranks on several hosts): gloo broadcast of the wire batch and gather
  of the outputs (padded to the widest rank).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import (  # the public aliases are not re-exported in 2.13
    AllreduceOptions,
    BroadcastOptions,
    GatherOptions,
    ProcessGroupGloo,
    ReduceOp,
)

__all__ = [
    "HEADER_FIELDS",
    "Control",
    "Header",
    "LocalSignals",
    "Op",
    "SignalControl",
    "ProcessGroupData",
    "SharedMemoryData",
    "all_on_one_host",
]

logger = logging.getLogger(__name__)

HEADER_FIELDS = 6


class Op:
    """Header operation codes."""

    LOOKUP = 1
    KEEPALIVE = 2
    STOP = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    """What rank 0 tells every rank about the next step.

    Attributes:
        op: One of :class:`Op`.
        seq: Batch sequence number (for error messages).
        batch: Bags per wire feature.
        num_values: Wire ids.
        num_features: Wire features.
    """

    op: int
    seq: int = 0
    batch: int = 0
    num_values: int = 0
    num_features: int = 0

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor(
            [self.op, self.seq, self.batch, self.num_values, self.num_features, 0],
            dtype=torch.int64,
        )

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> Header:
        v = t.tolist()
        return cls(op=v[0], seq=v[1], batch=v[2], num_values=v[3], num_features=v[4])


class Control:
    """The gloo control plane of one runtime.

    Args:
        store: Rendezvous store shared by the ranks (a ``TCPStore``; prefixed per runtime).
        rank: This rank.
        world_size: Ranks.
        timeout_s: Longest wait for any collective once started; a rank that does not answer
            within it is reported as failed.
        start_timeout_s: Longest wait while the ranks start (spawning, importing torch and
            loading shards take longer than a lookup step); :meth:`started` switches to
            ``timeout_s``.
    """

    def __init__(
        self,
        store: dist.Store,
        rank: int,
        world_size: int,
        timeout_s: float,
        start_timeout_s: float | None = None,
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.timeout_s = timeout_s
        self.pg = ProcessGroupGloo(
            dist.PrefixStore("adrank-control", store),
            rank,
            world_size,
            datetime.timedelta(seconds=max(timeout_s, start_timeout_s or 0.0)),
        )
        self._header = torch.zeros(HEADER_FIELDS, dtype=torch.int64)
        self._status = torch.zeros(1, dtype=torch.int64)

    def started(self) -> None:
        """From now on every collective waits at most ``timeout_s``."""
        self.pg.set_timeout(datetime.timedelta(seconds=self.timeout_s))

    def broadcast_header(self, header: Header | None = None) -> Header:
        """Rank 0 sends ``header``; the others receive and return it."""
        if self.rank == 0:
            assert header is not None
            self._header.copy_(header.to_tensor())
        opts = BroadcastOptions()
        opts.rootRank = 0
        self.pg.broadcast(  # type: ignore[attr-defined]
            [self._header], opts
        ).wait()
        return Header.from_tensor(self._header)

    def agree(self, failed: bool) -> bool:
        """All ranks report; True when every rank succeeded (also a barrier)."""
        self._status.fill_(1 if failed else 0)
        opts = AllreduceOptions()
        opts.reduceOp = ReduceOp.MAX  # type: ignore[assignment]
        self.pg.allreduce(  # type: ignore[attr-defined]
            [self._status], opts
        ).wait()
        return int(self._status.item()) == 0


class LocalSignals:
    """Semaphores and a shared header for ranks that adrank started on this host.

    Created by the launcher before it spawns the ranks (they inherit the handles), so no rank
    discovers them at run time. See :class:`SignalControl`.

    Args:
        world_size: Ranks.
        context: The multiprocessing context the ranks are spawned with.
    """

    def __init__(self, world_size: int, context: Any) -> None:
        self.world_size = world_size
        self.go = [context.Semaphore(0) for _ in range(world_size)]
        self.done = [context.Semaphore(0) for _ in range(world_size)]
        self.header = context.Array("q", HEADER_FIELDS, lock=False)
        self.status = context.Array("q", world_size, lock=False)


class SignalControl:
    """The per-batch control plane over POSIX semaphores (ranks adrank started on one host).

    Same interface as :class:`Control` for the lookup loop: rank 0 writes the header into shared
    memory and posts each rank's ``go`` semaphore; a rank posts ``done`` with its status when its
    output is written. A semaphore wake-up costs tens of microseconds where a gloo broadcast plus
    all-reduce over loopback cost 0.6-2 ms per batch here, and a waiting rank sleeps instead of
    polling. Failure detection: rank 0 waits in short slices and checks that each rank's process
    is alive (a killed rank is reported at once), up to ``timeout_s``; a rank whose parent (rank 0)
    is gone exits.

    Args:
        signals: The shared semaphores and header.
        rank: This rank.
        timeout_s: Longest wait for a rank's ``done``.
        processes: Rank 0 only: the spawned ranks' processes, by rank - 1.
    """

    _SLICE_S = 0.05

    def __init__(
        self,
        signals: LocalSignals,
        rank: int,
        timeout_s: float,
        processes: Sequence[Any] = (),
    ) -> None:
        self.signals = signals
        self.rank = rank
        self.world_size = signals.world_size
        self.timeout_s = timeout_s
        self.processes = list(processes)
        self._parent = os.getppid()

    def started(self) -> None:
        """Nothing to switch: the timeout applies from the start."""

    def broadcast_header(self, header: Header | None = None) -> Header:
        """Rank 0 publishes ``header`` and wakes every rank; the others wait for it."""
        sig = self.signals
        if self.rank == 0:
            assert header is not None
            values = header.to_tensor().tolist()
            for i, v in enumerate(values):
                sig.header[i] = v
            for r in range(1, self.world_size):
                sig.go[r].release()
            return header
        while not sig.go[self.rank].acquire(timeout=0.5):
            if os.getppid() != self._parent:
                raise RuntimeError(f"rank 0 (pid {self._parent}) is gone")
        return Header.from_tensor(torch.tensor(list(sig.header), dtype=torch.int64))

    def agree(self, failed: bool) -> bool:
        """Ranks report their status; rank 0 waits for all and returns True when all succeeded.

        Raises:
            RuntimeError: Rank 0 only: a rank died or did not report within ``timeout_s``.
        """
        sig = self.signals
        if self.rank != 0:
            sig.status[self.rank] = 1 if failed else 0
            sig.done[self.rank].release()
            return not failed
        ok = not failed
        deadline = time.monotonic() + self.timeout_s
        for r in range(1, self.world_size):
            while not sig.done[r].acquire(timeout=self._SLICE_S):
                proc = self.processes[r - 1] if r - 1 < len(self.processes) else None
                if proc is not None and not proc.is_alive():
                    raise RuntimeError(f"rank {r} exited with code {proc.exitcode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rank {r} did not answer within {self.timeout_s:g} s")
            ok &= sig.status[r] == 0
        return ok


def all_on_one_host(store: dist.Store, rank: int, world_size: int, key: str) -> bool:
    """True when every rank reports the same host name (so shared memory reaches them all)."""
    store.set(f"{key}/host/{rank}", socket.gethostname())
    hosts = {store.get(f"{key}/host/{r}").decode() for r in range(world_size)}
    return len(hosts) == 1


def _shm_dir() -> Path:
    d = Path("/dev/shm")
    return d if d.is_dir() and os.access(d, os.W_OK) else Path(tempfile.gettempdir())


def _capacity(nbytes: int) -> int:
    """Segment size for ``nbytes``: the next power of two, at least 1 MiB."""
    return max(1 << 20, 1 << max(nbytes - 1, 1).bit_length())


class _Segment:
    """A file in shared memory mapped as bytes; recreated larger when a batch needs more."""

    def __init__(self, prefix: str, name: str, owner: bool) -> None:
        self.prefix = prefix
        self.name = name
        self.owner = owner
        self.capacity = 0
        self.path: Path | None = None
        self.buffer: torch.Tensor | None = None

    def ensure(self, nbytes: int) -> torch.Tensor:
        """Bytes view of at least ``nbytes`` (creating or attaching the right-sized file)."""
        cap = _capacity(nbytes)
        if cap > self.capacity:
            path = _shm_dir() / f"{self.prefix}-{self.name}-{cap}"
            if self.owner:
                with open(path, "wb") as f:
                    f.truncate(cap)
            self.buffer = torch.from_file(str(path), shared=True, size=cap, dtype=torch.uint8)
            if self.owner and self.path is not None:
                self.path.unlink(missing_ok=True)  # readers keep their mapping of the old file
            self.path = path
            self.capacity = cap
        assert self.buffer is not None
        return self.buffer

    def close(self) -> None:
        self.buffer = None
        if self.owner and self.path is not None:
            self.path.unlink(missing_ok=True)
        self.path = None
        self.capacity = 0


class SharedMemoryData:
    """Wire batch and partial outputs in shared memory (ranks on one host).

    Every rank's output is a flat float32 array whose size (``sizes[rank]``) all ranks compute
    from the wire's lengths.

    Args:
        prefix: Unique file-name prefix of this runtime (same on every rank).
        rank: This rank.
        world_size: Ranks.
    """

    def __init__(self, prefix: str, rank: int, world_size: int) -> None:
        self.rank = rank
        self.prefix = prefix
        self._input = _Segment(prefix, "in", owner=rank == 0)
        self._outputs = [_Segment(prefix, f"out{r}", owner=r == rank) for r in range(world_size)]

    def send_batch(self, rows: torch.Tensor, lengths: torch.Tensor) -> None:
        """Rank 0: put the wire batch where the other ranks read it (before the header)."""
        buf = self._input.ensure((lengths.numel() + rows.numel()) * 8)
        view = buf[: (lengths.numel() + rows.numel()) * 8].view(torch.int64)
        view[: lengths.numel()].copy_(lengths)
        view[lengths.numel() :].copy_(rows)

    def receive_batch(self, header: Header) -> tuple[torch.Tensor, torch.Tensor]:
        """Other ranks: the wire ``(rows, lengths)`` of the batch ``header`` announced."""
        n_len = header.batch * header.num_features
        buf = self._input.ensure((n_len + header.num_values) * 8)
        view = buf[: (n_len + header.num_values) * 8].view(torch.int64)
        return view[n_len:], view[:n_len]

    def output_buffer(self, sizes: list[int]) -> torch.Tensor:
        """This rank's flat output (``sizes[rank]`` float32 values) in its shared segment."""
        n = sizes[self.rank]
        return self._outputs[self.rank].ensure(n * 4)[: n * 4].view(torch.float32)

    def send_output(self, out: torch.Tensor) -> None:
        """Nothing to send: rank 0 reads the segment after the agreement."""

    def gather_outputs(self, own: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
        """Rank 0, after every rank agreed: all flat outputs (views of the segments)."""
        outs = []
        for r, n in enumerate(sizes):
            if r == self.rank:
                outs.append(own)
            else:
                outs.append(self._outputs[r].ensure(n * 4)[: n * 4].view(torch.float32))
        return outs

    def close(self) -> None:
        """Unmap and remove the segments this rank created; rank 0 also removes what a rank
        that died left behind (every file of this runtime's prefix)."""
        self._input.close()
        for s in self._outputs:
            s.close()
        if self.rank == 0:
            for path in _shm_dir().glob(f"{self.prefix}-*"):
                path.unlink(missing_ok=True)


class ProcessGroupData:
    """Wire batch and partial outputs through gloo collectives (ranks on several hosts).

    Args:
        control: The runtime's control plane (its process group carries the data too).
    """

    def __init__(self, control: Control) -> None:
        self.control = control
        self.rank = control.rank
        self._padded = torch.zeros(0, dtype=torch.float32)

    def send_batch(self, rows: torch.Tensor, lengths: torch.Tensor) -> None:
        """Rank 0: broadcast the wire batch (after the header)."""
        self._broadcast(torch.cat([lengths, rows]))

    def receive_batch(self, header: Header) -> tuple[torch.Tensor, torch.Tensor]:
        """Other ranks: receive the wire batch."""
        n_len = header.batch * header.num_features
        buf = torch.empty(n_len + header.num_values, dtype=torch.int64)
        self._broadcast(buf)
        return buf[n_len:], buf[:n_len]

    def _broadcast(self, t: torch.Tensor) -> None:
        opts = BroadcastOptions()
        opts.rootRank = 0
        self.control.pg.broadcast(  # type: ignore[attr-defined]
            [t], opts
        ).wait()

    def output_buffer(self, sizes: list[int]) -> torch.Tensor:
        """This rank's flat output: the head of a buffer padded to the largest rank's size
        (gloo's gather needs equal sizes)."""
        self._padded = torch.zeros(max(sizes), dtype=torch.float32)
        return self._padded[: sizes[self.rank]]

    def send_output(self, out: torch.Tensor) -> None:
        """Other ranks: send ``out`` (from :meth:`output_buffer`) to rank 0, padded."""
        assert out.data_ptr() == self._padded.data_ptr()
        self._gather(self._padded, None)

    def gather_outputs(self, own: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
        """Rank 0: every rank's flat output."""
        full = torch.zeros(max(sizes), dtype=torch.float32)
        full[: own.numel()].copy_(own)
        recv = [torch.empty_like(full) for _ in sizes]
        self._gather(full, recv)
        return [recv[r][:n] for r, n in enumerate(sizes)]

    def _gather(self, t: torch.Tensor, recv: list[torch.Tensor] | None) -> None:
        opts = GatherOptions()
        opts.rootRank = 0
        outputs = [recv] if recv is not None else []
        self.control.pg.gather(  # type: ignore[attr-defined]
            outputs, [t.contiguous()], opts
        ).wait()

    def close(self) -> None:
        """Nothing to release (the process group belongs to the control plane)."""
