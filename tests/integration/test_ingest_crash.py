"""A SIGKILLed ingest leaves the store consistent: it reopens, every committed batch is fully
present, no uncommitted row is visible, and re-running the ingest ends with exactly the expected
rows."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_service import FeatureStore, ingest_parquet

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROWS = 300_000
BATCH_ROWS = 2_000
MARK_AFTER_BATCHES = 5
NULL_EVERY = 997  # rows with a null entity id: rejected and counted

_CHILD = """
import sys
from pathlib import Path
from feature_service import FeatureStore, ingest_parquet

store_path, snap, marker, batch_rows, mark_after = sys.argv[1:6]
seen = []

def progress(n):
    seen.append(n)
    if len(seen) == int(mark_after):
        Path(marker).write_text("committed")

with FeatureStore.open(store_path) as store:
    ingest_parquet(store, [snap], group="ads", entity_column="ad_id", timestamp_column="ts",
                   batch_rows=int(batch_rows), progress=progress)
Path(marker + ".done").write_text("finished")
"""


def _snapshot(path: Path) -> np.ndarray:
    ids = np.arange(ROWS, dtype=np.int64)
    valid = ids % NULL_EVERY != 3
    table = pa.table(
        {
            "ad_id": pa.array(ids, mask=~valid),
            "ts": pa.array(1_700_000_000 + ids // 100),
            "ctr": pa.array((ids % 1000).astype(np.float32) / 1000),
            "row": pa.array(ids),
        }
    )
    pq.write_table(table, path)  # one row group: batches are exactly BATCH_ROWS rows
    return valid


def test_sigkill_mid_ingest_leaves_a_consistent_resumable_store(tmp_path: Path) -> None:
    snap = tmp_path / "ads.parquet"
    valid = _snapshot(snap)
    store_path = tmp_path / "store"
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(store_path),
            str(snap),
            str(marker),
            str(BATCH_ROWS),
            str(MARK_AFTER_BATCHES),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the child never committed a batch"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)  # mid-ingest: more batches are being built and written
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not Path(str(marker) + ".done").exists()

    with FeatureStore.open(store_path) as store:  # opens: the lock died with the process
        (cp,) = store.checkpoints("ads")
        assert not cp.done
        assert MARK_AFTER_BATCHES <= cp.batches_committed < ROWS // BATCH_ROWS
        consumed = cp.rows_written + cp.rows_rejected
        assert consumed == cp.batches_committed * BATCH_ROWS
        committed = np.arange(ROWS) < consumed
        assert cp.rows_written == int((valid & committed).sum())
        # Every row of a committed batch is present and no row of any other batch is.
        frame = store.get_latest("ads", np.arange(ROWS), features=["row"])
        np.testing.assert_array_equal(frame.found, valid & committed)
        np.testing.assert_array_equal(
            frame["row"].values[frame.found], np.flatnonzero(valid & committed)
        )
        (stats,) = store.stats()
        assert stats.versions == stats.entities == cp.rows_written

        report = ingest_parquet(
            store,
            [snap],
            group="ads",
            entity_column="ad_id",
            timestamp_column="ts",
            batch_rows=BATCH_ROWS,
        )
        (r,) = report.files
        assert r.batches_skipped == cp.batches_committed
        assert r.rows_written == int(valid.sum()) - cp.rows_written
        assert (r.total_rows_written, r.total_rows_rejected) == (
            int(valid.sum()),
            int((~valid).sum()),
        )
        (stats,) = store.stats()
        assert stats.versions == stats.entities == int(valid.sum())
        assert store.get_latest("ads", np.arange(ROWS), features=["row"]).found.sum() == valid.sum()
