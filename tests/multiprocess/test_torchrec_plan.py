"""An adrank plan drives TorchRec: 2 gloo ranks shard an EmbeddingBagCollection by the converted
plan under DistributedModelParallel; the shards TorchRec reports are the plan's, and pooled outputs
equal an unsharded collection with the same weights.

One spawn runs every sharding type at once (table_wise on each rank, row_wise with a shard-less
rank, column_wise with uneven widths on reversed ranks, table_row_wise), which is cheaper than a
spawn per case.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(180)]

WORLD_SIZE = 2
HUNG_AFTER_S = 150.0
BATCH = 8
MAX_ABS_DIFF = 1e-6


def _plan():
    from adrank.types import PoolingType, ShardingType
    from tests.plan_builders import feature, make_plan, table

    st = ShardingType
    mean = PoolingType.MEAN
    return make_plan(
        [
            table("t_tw0", [feature("f_tw0", 1, 10)], 10, 8, st.TABLE_WISE, [(0, 0, 10, 0, 8)]),
            table(
                "t_tw1",
                [feature("f_tw1", 2, 7, pooling=mean)],
                7,
                4,
                st.TABLE_WISE,
                [(1, 0, 7, 0, 4)],
                pooling=mean,
            ),
            # TorchRec's even row-wise layout: ceil(11 / 2) = 6 rows on rank 0, 5 on rank 1.
            table(
                "t_rw",
                [feature("f_rw_a", 3, 11), feature("f_rw_b", 4, 11)],
                11,
                8,
                st.ROW_WISE,
                [(0, 0, 6, 0, 8), (1, 6, 5, 0, 8)],
            ),
            # One row: rank 1's row-wise shard is empty (TorchRec keeps a zero-size shard there).
            table("t_rw1", [feature("f_rw1", 5, 1)], 1, 8, st.ROW_WISE, [(0, 0, 1, 0, 8)]),
            # Uneven column blocks, the first on rank 1.
            table(
                "t_cw",
                [feature("f_cw", 6, 9)],
                9,
                12,
                st.COLUMN_WISE,
                [(1, 0, 9, 0, 8), (0, 0, 9, 8, 4)],
            ),
            table(
                "t_twrw",
                [feature("f_twrw", 7, 5)],
                5,
                4,
                st.TABLE_ROW_WISE,
                [(0, 0, 3, 0, 4), (1, 3, 2, 0, 4)],
            ),
        ],
        WORLD_SIZE,
    )


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    """One rank: shard by the plan, compare with an unsharded collection, write results."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(WORLD_SIZE),  # two-level types need it; mp.spawn does not set it
    )
    import torch
    import torch.distributed as dist
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from embed_store import (
        build_sharded_ebc,
        embedding_bag_configs,
        load_full_weights,
        sharded_placements,
    )

    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    plan = _plan()  # deterministic: every rank builds the same plan
    torch.manual_seed(0)  # same unsharded weights on every rank
    reference = EmbeddingBagCollection(tables=embedding_bag_configs(plan), device="cpu")
    model = build_sharded_ebc(plan, device=torch.device("cpu"))
    full = {k.split(".")[1]: v for k, v in reference.state_dict().items() if k.endswith(".weight")}
    load_full_weights(model, full)

    # This rank's batch: every table's last row appears (shard boundaries), bags of 0..3 ids.
    g = torch.Generator().manual_seed(1000 + rank)
    keys, lengths, values = [], [], []
    for t in plan.tables:
        for f in t.features:
            keys.append(f.name)
            for b in range(BATCH):
                n = int(torch.randint(0, 4, (1,), generator=g))
                ids = torch.randint(0, t.num_rows, (n,), generator=g)
                if b == 0:
                    ids = torch.cat([ids, torch.tensor([t.num_rows - 1])])
                lengths.append(len(ids))
                values.append(ids)
    kjt = KeyedJaggedTensor(
        keys=keys, values=torch.cat(values), lengths=torch.tensor(lengths, dtype=torch.int64)
    )
    with torch.no_grad():
        got = model(kjt).to_dict()
        want = reference(kjt).to_dict()
    diffs = {k: float((got[k] - want[k]).abs().max()) for k in want}

    local = []
    for key, value in model.state_dict().items():
        for shard in value.local_shards():
            rows, cols = (int(x) for x in shard.metadata.shard_sizes)
            if rows and cols:
                r0, c0 = (int(x) for x in shard.metadata.shard_offsets)
                local.append([key.split(".")[1], r0, rows, c0, cols])
    result = {
        "diffs": diffs,
        "keys_out": sorted(got),
        "placements": {
            t: [[s.rank, s.row_offset, s.num_rows, s.col_offset, s.num_cols] for s in shards]
            for t, shards in sharded_placements(model).items()
        },
        "local": sorted(local),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    # Clean exit (FACTS.md): without this a non-zero rank aborts in ~1 of 10 runs.
    dist.barrier()
    del model
    gc.collect()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchrec_runs_the_adrank_plan(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    ctx = mp.start_processes(
        _rank_main,
        args=(_free_port(), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + HUNG_AFTER_S
    while not ctx.join(timeout=1.0):  # raises if a rank failed
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"ranks did not finish within {HUNG_AFTER_S} s (hung collective?)")

    plan = _plan()
    want_placements = {
        t.name: sorted(
            [s.rank, s.row_offset, s.num_rows, s.col_offset, s.num_cols] for s in t.shards
        )
        for t in plan.tables
    }
    features = sorted(f.name for t in plan.tables for f in t.features)
    for rank in range(WORLD_SIZE):
        res = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # What TorchRec reports holding equals the plan, table by table (ranks, offsets, sizes).
        got = {t: sorted(v) for t, v in res["placements"].items()}
        assert got == want_placements, rank
        # This rank holds exactly the plan's shards for this rank.
        want_local = sorted(
            [t.name, s.row_offset, s.num_rows, s.col_offset, s.num_cols]
            for t in plan.tables
            for s in t.shards
            if s.rank == rank
        )
        assert res["local"] == want_local, rank
        # Pooled outputs equal the unsharded collection's, for every feature.
        assert res["keys_out"] == features
        worst = max(res["diffs"].items(), key=lambda kv: kv[1])
        assert worst[1] <= MAX_ABS_DIFF, f"rank {rank}: feature {worst[0]} differs by {worst[1]}"
