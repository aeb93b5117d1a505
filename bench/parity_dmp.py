"""The stock TorchRec side of ``bench parity``: ``DistributedModelParallel`` over gloo, same plan.

N processes (spawned, gloo on 127.0.0.1, ``cores / N`` threads each) shard an
``EmbeddingBagCollection`` by the same adrank plan (via :func:`embed_store.build_sharded_ebc`) and
run forwards on the same batches: each rank takes its ``1/N`` of every batch's bags, as DMP's data
parallel input expects, so a step looks up the same ids in total as one single-device batch. Rank
0 reports the step times. Not part of the runtime: it is the baseline the issue measured (0.23x).
"""

from __future__ import annotations

import gc
import os
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["torchrec_dmp_step_times"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(
    rank: int,
    world: int,
    port: int,
    plan_path: str,
    batches: list[Any],
    steps: int,
    warmup: int,
    threads: int,
    out: str,
) -> None:
    import torch
    import torch.distributed as dist
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from adrank.planfile import read_plan
    from embed_store.sharded_ebc import build_sharded_ebc

    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = build_sharded_ebc(read_plan(plan_path))
    local = []
    for keys, values, lengths, b in batches:
        per = b // world
        lens = lengths.view(len(keys), b)
        starts = torch.cumsum(lens.sum(dim=1), 0) - lens.sum(dim=1)
        vals, ls = [], []
        for k in range(len(keys)):
            row_lens = lens[k]
            offs = torch.cumsum(row_lens, 0) - row_lens
            lo = int(starts[k] + offs[rank * per])
            hi = int(starts[k] + offs[(rank + 1) * per - 1] + row_lens[(rank + 1) * per - 1])
            vals.append(values[lo:hi])
            ls.append(row_lens[rank * per : (rank + 1) * per])
        local.append(
            KeyedJaggedTensor.from_lengths_sync(
                keys=list(keys), values=torch.cat(vals), lengths=torch.cat(ls)
            )
        )
    times = []
    with torch.no_grad():
        for i in range(warmup + steps):
            dist.barrier()
            t0 = time.perf_counter()
            model(local[i % len(local)]).values()
            dist.barrier()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(" ".join(repr(t) for t in times))
    dist.barrier()
    del model
    gc.collect()
    dist.destroy_process_group()


def torchrec_dmp_step_times(
    plan_path: str, batches: list[Any], world: int, threads: int, steps: int, warmup: int
) -> list[float]:
    """Seconds per step of stock DMP on ``world`` gloo ranks (forward, no grad, barrier-timed).

    Args:
        plan_path: The plan file.
        batches: ``(keys, values, lengths, batch)`` tuples (each rank takes its slice).
        world: Ranks.
        threads: Torch threads per rank.
        steps: Timed steps.
        warmup: Untimed steps first.
    """
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.txt")
        mp.start_processes(
            _rank_main,
            args=(world, _free_port(), plan_path, batches, steps, warmup, threads, out),
            nprocs=world,
            start_method="spawn",
        )
        return [float(x) for x in Path(out).read_text().split()]
