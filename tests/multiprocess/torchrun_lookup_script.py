"""Run under ``torchrun --nproc-per-node 2``: every rank joins the sharded runtime from the
environment; rank 0 looks a batch up and writes the max abs difference to one device (argv[3])."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main() -> None:
    from adrank.planfile import read_plan
    from embed_store import JaggedIds, LocalLookup, LookupBatch, open_checkpoint
    from embed_store.sharded_runtime import RuntimeConfig, start_from_env

    plan_dir, ckpt_dir, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    config = RuntimeConfig(plan_dir, ckpt_dir, timeout_s=60, transport=sys.argv[4])
    runtime = start_from_env(config)
    if runtime is None:  # a non-zero rank: it served until rank 0 stopped
        return
    rng = np.random.default_rng(0)
    rows = {"f_tw": 100, "f_rw": 60, "f_cw": 50, "f_twrw": 41}
    batch = LookupBatch(
        JaggedIds.from_lists(
            {f: [list(rng.integers(0, n, 3)) for _ in range(7)] for f, n in rows.items()}
        )
    )
    with runtime:
        sharded = runtime.lookup(batch).candidates.values()
    single = LocalLookup.single_device(read_plan(plan_dir), open_checkpoint(ckpt_dir).read_block)
    diff = float((sharded - single.lookup(batch).candidates.values()).abs().max())
    out.write_text(repr(diff))


if __name__ == "__main__":
    main()
