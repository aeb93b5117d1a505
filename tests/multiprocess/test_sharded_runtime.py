"""The multi-process sharded lookup runtime (2 gloo ranks on this host) against one device.

Parity for every sharding type the planner emits (table-wise, row-wise with MEAN pooling,
column-wise, uneven table-row-wise, in one plan), through both data transports, fp32 exact and
quantized within the quantization error; plus the failure contract: a killed rank is reported
within the timeout (never a hang), a rank that cannot load stops the start with its reason, and a
clean stop leaves no process and no shared-memory file behind.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from adrank.errors import PlanError, RankFailedError
from adrank.planfile import write_plan
from adrank.types import Precision
from embed_store.batch import JaggedIds, LookupBatch
from embed_store.checkpoint import init_checkpoint, open_checkpoint
from embed_store.local_lookup import LocalLookup
from embed_store.sharded_runtime import RuntimeConfig, launch_local
from tests.plan_builders import mixed_plan

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(240)]

ROWS = {"f_tw": 100, "f_rw": 60, "f_rw_user": 60, "f_cw": 50, "f_twrw": 41}


def _setup(tmp_path: Path, precision: Precision = Precision.FP32) -> tuple[Path, Path]:
    plan = mixed_plan(precision=precision)
    write_plan(plan, tmp_path / "plan.json")
    init_checkpoint(tmp_path / "ckpt", plan, seed=11)
    return tmp_path, tmp_path / "ckpt"


def _batches(n: int, seed: int = 0) -> list[LookupBatch]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        n_cand, n_req = int(rng.integers(1, 40)), int(rng.integers(1, 4))
        cand = {
            f: [list(rng.integers(0, ROWS[f], rng.integers(0, 6))) for _ in range(n_cand)]
            for f in ("f_tw", "f_rw", "f_cw", "f_twrw")
        }
        req = {"f_rw_user": [list(rng.integers(0, 60, rng.integers(1, 8))) for _ in range(n_req)]}
        out.append(
            LookupBatch(
                JaggedIds.from_lists(cand),
                JaggedIds.from_lists(req),
                torch.from_numpy(rng.integers(0, n_req, n_cand)),
            )
        )
    return out


def _single(plan_dir: Path, ckpt_dir: Path) -> LocalLookup:
    from adrank.planfile import read_plan

    plan = read_plan(plan_dir)
    return LocalLookup.single_device(plan, open_checkpoint(ckpt_dir).read_block)


def _shm_files(prefix: str = "adrank-") -> set[str]:
    d = Path("/dev/shm")
    return {p.name for p in d.iterdir() if p.name.startswith(prefix)} if d.is_dir() else set()


@pytest.mark.parametrize("transport", ["shm", "process_group"])
def test_two_ranks_equal_one_device_for_every_sharding_type(tmp_path: Path, transport: str) -> None:
    plan_dir, ckpt_dir = _setup(tmp_path)
    single = _single(plan_dir, ckpt_dir)
    before = _shm_files()
    with launch_local(
        RuntimeConfig(str(plan_dir), str(ckpt_dir), transport=transport, timeout_s=60), 2
    ) as rt:
        assert rt.world_size == 2
        for batch in _batches(6):
            a, b = rt.lookup(batch), single.lookup(batch)
            assert a.candidates.keys() == b.candidates.keys()
            assert float((a.candidates.values() - b.candidates.values()).abs().max()) <= 1e-6
            assert a.requests is not None and b.requests is not None
            assert float((a.requests.values() - b.requests.values()).abs().max()) <= 1e-6
        processes = list(rt._processes)
    assert [p.exitcode for p in processes] == [0]
    assert _shm_files() == before


def test_quantized_two_ranks_stay_within_quantization_error(tmp_path: Path) -> None:
    plan_dir, ckpt_dir = _setup(tmp_path, Precision.INT8)
    single = _single(plan_dir, ckpt_dir)
    with launch_local(RuntimeConfig(str(plan_dir), str(ckpt_dir), timeout_s=60), 2) as rt:
        for batch in _batches(3, seed=5):
            a = rt.lookup(batch).candidates.to_dict()
            b = single.lookup(batch).candidates.to_dict()
            for f in a:
                rel = float((a[f] - b[f]).norm() / b[f].norm())
                # exact up to summation order, except column shards quantized on their own
                assert rel < (2e-2 if f == "f_cw" else 1e-6), (f, rel)


def test_a_killed_rank_is_reported_within_the_timeout(tmp_path: Path) -> None:
    plan_dir, ckpt_dir = _setup(tmp_path)
    pids: list[int] = []
    rt = launch_local(
        RuntimeConfig(str(plan_dir), str(ckpt_dir), timeout_s=5), 2, on_started=pids.append
    )
    try:
        batch = _batches(1)[0]
        rt.lookup(batch)
        os.kill(pids[0], signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(RankFailedError) as info:
            rt.lookup(batch)
        assert time.monotonic() - t0 < 5 + 5
        assert "rank 1" in str(info.value) and str(-signal.SIGKILL) in str(info.value)
        with pytest.raises(RankFailedError, match="failed earlier"):
            rt.lookup(batch)
    finally:
        rt.close()
    # The killed rank could not remove its shared-memory segment; rank 0 removed it on close.
    assert not [n for n in _shm_files() if n.startswith(f"adrank-{os.getpid()}-")]


def test_a_rank_that_cannot_load_stops_the_start_with_its_reason(tmp_path: Path) -> None:
    plan_dir, ckpt_dir = _setup(tmp_path)
    # A checkpoint written for another plan: every rank refuses it, rank 0 says why.
    other = mixed_plan()
    import dataclasses

    other = dataclasses.replace(other, inputs_fingerprint="sha256:another-plan")
    init_checkpoint(tmp_path / "other_ckpt", other, seed=1)
    with pytest.raises(PlanError) as info:
        launch_local(RuntimeConfig(str(plan_dir), str(tmp_path / "other_ckpt"), timeout_s=20), 2)
    assert "another-plan" in str(info.value) and "reshard" in str(info.value)


def test_world_size_must_match_the_plan(tmp_path: Path) -> None:
    from adrank.errors import InputError

    plan_dir, ckpt_dir = _setup(tmp_path)
    with pytest.raises(InputError, match="2 devices"):
        launch_local(RuntimeConfig(str(plan_dir), str(ckpt_dir)), 3)


def test_idle_runtime_stays_up_past_the_timeout(tmp_path: Path) -> None:
    """Keep-alive headers stop idle workers from timing out on rank 0's silence."""
    plan_dir, ckpt_dir = _setup(tmp_path)
    with launch_local(RuntimeConfig(str(plan_dir), str(ckpt_dir), timeout_s=1.5), 2) as rt:
        batch = _batches(1)[0]
        rt.lookup(batch)
        time.sleep(4.0)  # well past the 1.5 s collective timeout
        rt.lookup(batch)
        processes = list(rt._processes)
    assert [p.exitcode for p in processes] == [0]


@pytest.mark.parametrize("transport", ["shm", "process_group"])
def test_sequence_lookups_across_two_ranks_equal_one_device(tmp_path: Path, transport: str) -> None:
    from tests.plan_builders import sequence_plan

    plan = sequence_plan()
    write_plan(plan, tmp_path / "plan.json")
    init_checkpoint(tmp_path / "ckpt", plan, seed=2)
    single = _single(tmp_path, tmp_path / "ckpt")
    rng = np.random.default_rng(3)
    config = RuntimeConfig(str(tmp_path), str(tmp_path / "ckpt"), transport=transport, timeout_s=60)
    with launch_local(config, 2) as rt:
        for _ in range(3):
            req = {
                "hist_ads": [list(rng.integers(0, 70, rng.integers(0, 30)))],
                "hist_cats": [list(rng.integers(0, 20, rng.integers(0, 30)))],
                "hist_geo": [list(rng.integers(0, 12, rng.integers(0, 5)))],
            }
            n = int(rng.integers(1, 20))
            cand = {
                "f_pool": [list(rng.integers(0, 30, 3)) for _ in range(n)],
                "hist_ads_cand": [list(rng.integers(0, 70, 2)) for _ in range(n)],
            }
            batch = LookupBatch(JaggedIds.from_lists(cand), JaggedIds.from_lists(req))
            a, b = rt.lookup(batch), single.lookup(batch)
            assert sorted(a.sequences) == sorted(b.sequences)
            for f in a.sequences:
                assert torch.equal(a.sequences[f].values(), b.sequences[f].values()), f
                assert torch.equal(a.sequences[f].lengths(), b.sequences[f].lengths()), f
            assert torch.equal(a.candidates.values(), b.candidates.values())


@pytest.mark.parametrize("transport", ["shm", "process_group"])
def test_runtime_started_by_torchrun_equals_one_device(tmp_path: Path, transport: str) -> None:
    """The multi-host launch path (RANK/WORLD_SIZE/MASTER_* from torchrun), on one host."""
    import subprocess
    import sys

    plan_dir, ckpt_dir = _setup(tmp_path)
    torchrun = Path(sys.executable).parent / "torchrun"
    script = Path(__file__).parent / "torchrun_lookup_script.py"
    out = tmp_path / "diff.txt"
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
            str(plan_dir),
            str(ckpt_dir),
            str(out),
            transport,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(out.read_text()) <= 1e-6
