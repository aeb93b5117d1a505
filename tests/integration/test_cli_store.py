"""``adrank store stats|compact`` through main(): counts, TTL compaction, snapshot refresh and
errors."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adrank.cli import main

pytestmark = pytest.mark.integration


def users(path: Path, ids: np.ndarray, event_s: np.ndarray) -> Path:
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(ids),
                "event_ts": pa.array(event_s * 1000, pa.timestamp("ms", tz="UTC")),
                "ctr": pa.array(ids.astype(np.float32) / 1000),
            }
        ),
        path,
    )
    return path


def ingest(store: Path, f: Path) -> int:
    return main(
        ["ingest", "--store", str(store), "--group", "users", "--entity-column", "user_id"]
        + ["--timestamp-column", "event_ts", "--ttl", "1h", "-q", str(f)]
    )


def stats(store: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["store", "stats", "--store", str(store), "--json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)["groups"]
    return dict(group)


def test_stats_and_compaction_that_refreshes_the_scan_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    ids = np.arange(1000, dtype=np.int64)
    assert ingest(store, users(tmp_path / "a.parquet", ids, ids)) == 0
    # A newer version (event +5000 s) of users 0..99.
    assert ingest(store, users(tmp_path / "b.parquet", ids[:100], ids[:100] + 5000)) == 0
    capsys.readouterr()
    before = stats(store, capsys)
    assert (before["entities"], before["versions"]) == (1000, 1100)
    assert (before["ttl_s"], before["scan_snapshot"]) == (3600, "current")
    assert (before["oldest_event_us"], before["newest_event_us"]) == (0, 5099 * 1_000_000)

    # Reads at or after 1970-01-01T01:00:00Z: the TTL cutoff is 0 s, nothing is older. Unchanged.
    assert main(["store", "compact", "--store", str(store), "--now", "3600000000"]) == 0
    assert "0 deleted" in capsys.readouterr().out
    assert stats(store, capsys)["scan_snapshot"] == "current"

    # A day later every old version is expired: the 100 shadowed ones go, newest versions stay.
    assert main(["store", "compact", "--store", str(store), "--now", "1970-01-02"]) == 0
    out = capsys.readouterr().out
    assert "users: 1,100 versions scanned, 100 deleted, 0 entities dropped" in out
    assert "users: scan snapshot written" in out
    after = stats(store, capsys)
    assert (after["entities"], after["versions"], after["scan_snapshot"]) == (1000, 1000, "current")

    # --drop-expired removes the entities whose newest version is expired too.
    assert (
        main(["store", "compact", "--store", str(store), "--now", "1970-01-02", "--drop-expired"])
        == 0
    )
    assert "1,000 entities dropped" in capsys.readouterr().out
    assert stats(store, capsys)["entities"] == 0

    text_rc = main(["store", "stats", "--store", str(store)])
    assert text_rc == 0 and "users (entity user, 1 features" in capsys.readouterr().out


def test_bad_arguments_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    ids = np.arange(10, dtype=np.int64)
    assert ingest(store, users(tmp_path / "a.parquet", ids, ids)) == 0
    capsys.readouterr()
    assert main(["store", "compact", "--store", str(store), "--now", "yesterday"]) == 2
    assert "'yesterday'" in capsys.readouterr().err
    assert main(["store", "compact", "--store", str(store), "--groups", "nope"]) != 0
    assert "nope" in capsys.readouterr().err
    assert main(["store", "stats", "--store", str(tmp_path / "missing")]) != 0
    assert "no feature store" in capsys.readouterr().err
