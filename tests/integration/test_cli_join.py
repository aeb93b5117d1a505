"""``adrank join`` end to end through main(): synthetic logs and snapshots, ingest, join, summary,
values checked against the store's own as-of reads, and bad input (exit 2, no partial output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from adrank.cli import main
from adrank.data import SynthConfig
from adrank.data.synth import synthesize
from feature_service import FeatureStore, ingest_parquet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Small synthetic logs; users (TTL 1 day) and ads snapshots ingested into a store."""
    root = tmp_path_factory.mktemp("join")
    logs = root / "logs"
    synthesize(
        logs,
        SynthConfig(num_rows=6000, num_days=4, ad_vocab=4000, user_vocab=600, num_categories=50),
    )
    store = root / "store"
    with FeatureStore.open(store) as s:
        for group, file, col, ttl in (
            ("user", "users", "user_id", 86_400),
            ("ad", "ads", "ad_id", None),
        ):
            ingest_parquet(
                s,
                [logs / "snapshots" / f"{file}.parquet"],
                group=group,
                entity_column=col,
                timestamp_column="event_ts",
                created_column="created_ts",
                ttl_s=ttl,
                scan_snapshot=False,  # these tests exercise the RocksDB scan and --snapshot-dir
            )
    return logs / "impressions.parquet", store


def join_args(store: Path, examples: Path, out: Path, *extra: str) -> list[str]:
    return [
        "join",
        "--store",
        str(store),
        "--examples",
        str(examples),
        "--timestamp-column",
        "ts",
        "-o",
        str(out),
        "-q",
        *extra,
    ]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_join_keeps_every_impression_and_matches_the_stores_as_of_reads(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    impressions, store = world
    out = tmp_path / "joined.parquet"
    rc = main(join_args(store, impressions, out, "--groups", "user=user_id,ad=ad_id", "--event-ts"))
    assert rc == 0
    text = capsys.readouterr().out
    assert "joined 6,000 example rows with 2 group(s)" in text
    assert "user on user_id -> user__*" in text and "ad on ad_id -> ad__*" in text
    src = pq.read_table(impressions)
    got = pq.read_table(out)
    # A left join: every impression, in order, with all its columns unchanged.
    assert got.select(src.column_names).equals(src)
    user_cols = [f"user__{c}" for c in ("age_bucket", "segment", "activity_7d", "ctr_7d")]
    ad_cols = [f"ad__{c}" for c in ("advertiser_id", "bid", "ctr_estimate")]
    for c in user_cols + ad_cols + ["user__event_ts", "ad__event_ts"]:
        assert c in got.column_names, c
    # Never a feature from the future.
    ts = got.column("ts").cast(pa.timestamp("us", tz="UTC"))
    for c in ("user__event_ts", "ad__event_ts"):
        assert pc.all(pc.less_equal(got.column(c), ts)).as_py() is not False
    # Every row's values equal the store's own point-in-time read (same TTL rule).
    ts_us = ts.cast(pa.int64()).to_numpy()
    with FeatureStore.open(store, read_only=True) as s:
        for group, col, feature in (("user", "user_id", "ctr_7d"), ("ad", "ad_id", "bid")):
            ids = got.column(col).to_numpy()
            frame = s.get_as_of(group, ids, ts_us, [feature])
            assert got.column(f"{group}__{feature}").to_pylist() == frame[feature].to_pylist()
            summary = next(line for line in text.splitlines() if f"{group} on {col}" in line)
            assert f"{int(frame.found.sum()):,} matched" in summary
    # Snapshots start at a day's start plus up to 6 h, so early requests find no user row yet.
    assert "only future rows" in text
    assert leftovers(tmp_path) == []


def test_default_entity_column_prefixes_and_separator(
    world: tuple[Path, Path], tmp_path: Path
) -> None:
    impressions, store = world
    out = tmp_path / "joined.parquet"
    # The user group twice: on the impression's user and (as a stand-in second key) on its
    # position, each with its own prefix; seek strategy.
    rc = main(
        join_args(
            store,
            impressions,
            out,
            "--groups",
            "user:u,user=position:p",
            "--entity-column",
            "user_id",
            "--separator",
            ".",
            "--strategy",
            "seek",
        )
    )
    assert rc == 0
    names = pq.read_schema(out).names
    assert "u.ctr_7d" in names and "p.ctr_7d" in names
    assert not any(n.startswith("user") and "." in n for n in names)


def test_malformed_groups_are_exit_2_each_named(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    impressions, store = world
    out = tmp_path / "joined.parquet"
    rc = main(join_args(store, impressions, out, "--groups", "user=,=ad_id,ad=ad_id:"))
    assert rc == 2
    err = capsys.readouterr().err
    assert "3 problems" in err
    for item in ("'user='", "'=ad_id'", "'ad=ad_id:'"):
        assert item in err, item
    rc = main(join_args(store, impressions, out, "--groups", "user=user_id,user=user_id"))
    assert rc == 2 and "collides" in capsys.readouterr().err
    assert not out.exists()


def test_missing_example_column_is_exit_2_naming_it_and_writes_nothing(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    impressions, store = world
    out = tmp_path / "joined.parquet"
    rc = main(join_args(store, impressions, out, "--groups", "user=uid"))
    assert rc == 2
    err = capsys.readouterr().err
    assert "'uid'" in err and str(impressions) in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_unknown_group_is_exit_2_naming_it_and_leaves_existing_output(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    impressions, store = world
    out = tmp_path / "joined.parquet"
    out.write_bytes(b"previous result")
    rc = main(join_args(store, impressions, out, "--groups", "user=user_id,campaign=campaign_id"))
    assert rc == 2
    err = capsys.readouterr().err
    assert "'campaign'" in err and "registered groups: ad, user" in err
    assert out.read_bytes() == b"previous result" and leftovers(tmp_path) == []


def test_group_without_a_column_and_missing_store_are_exit_2(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    impressions, store = world
    out = tmp_path / "joined.parquet"
    assert main(join_args(store, impressions, out, "--groups", "user")) == 2
    assert "--entity-column" in capsys.readouterr().err
    assert main(join_args(tmp_path / "nostore", impressions, out, "--groups", "user=user_id")) == 2
    assert "no feature store" in capsys.readouterr().err
    assert not out.exists()


def test_failure_mid_stream_leaves_no_partial_output(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _impressions, store = world
    # Integer seconds; the second row group holds a time beyond int64 microseconds.
    ts = np.full(300, 1_767_300_000, dtype=np.int64)
    ts[250] = 10**17
    examples = tmp_path / "ex.parquet"
    pq.write_table(
        pa.table({"user_id": np.arange(300, dtype=np.int64), "ts": ts}),
        examples,
        row_group_size=100,
    )
    out = tmp_path / "joined.parquet"
    out.write_bytes(b"previous result")
    rc = main(join_args(store, examples, out, "--groups", "user=user_id", "--batch-rows", "100"))
    assert rc == 2
    assert "'ts', row 250" in capsys.readouterr().err
    assert out.read_bytes() == b"previous result" and leftovers(tmp_path) == []


def test_snapshot_dir_makes_a_second_join_load_instead_of_scan(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    impressions, store = world
    snaps = tmp_path / "snaps"
    outs = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for out, how in zip(outs, ("(scan)", "(snapshot)"), strict=True):
        rc = main(
            join_args(
                store,
                impressions,
                out,
                "--groups",
                "user=user_id,ad=ad_id",
                "--snapshot-dir",
                str(snaps),
                "--strategy",
                "scan",
            )
        )
        assert rc == 0
        text = capsys.readouterr().out
        assert f"user on user_id -> user__* {how}" in text and f"ad on ad_id -> ad__* {how}" in text
    assert pq.read_table(outs[0]).equals(pq.read_table(outs[1]))
    assert sorted(p.parent.name for p in snaps.glob("*/*/meta.json")) == ["ad", "user"]
