"""Planner inputs: sizes, topology files, tables files, importance weights, stats conversion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adrank.errors import InputError, NotFoundError
from adrank.types import PoolingType
from sharding_planner.inputs import (
    features_from_stats,
    features_from_tables,
    read_importance,
    read_tables_file,
)
from sharding_planner.stats import compute_stats
from sharding_planner.topology import parse_bandwidth, parse_size_bytes, read_topology
from sharding_planner.types import StatsConfig


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16GiB", 16 << 30),
        ("16G", 16 << 30),
        ("16GB", 16 * 10**9),
        ("512MiB", 512 << 20),
        ("1024", 1024),
        (" 1.5 KiB ", 1536),
        (2048, 2048),
    ],
)
def test_parse_size_bytes(text: str | int, expected: int) -> None:
    assert parse_size_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "16XB", "-1G", "0", "0.5"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InputError, match="--device-memory"):
        parse_size_bytes(text, source="--device-memory")


def test_parse_bandwidth() -> None:
    assert parse_bandwidth("900GB/s") == 900e9
    assert parse_bandwidth(12.5e9) == 12.5e9


def test_topology_hosts_form(tmp_path: Path) -> None:
    path = tmp_path / "topo.yaml"
    path.write_text(
        "inter_host_bandwidth: 25GB/s\n"
        "hosts:\n"
        "  - {name: a, devices: 2, device_memory: 16GiB, memory_bandwidth: 900GB/s}\n"
        "  - name: b\n"
        "    devices: [{memory: 8GiB}, {memory: 4GiB, comm_bandwidth: 100GB/s}]\n"
    )
    topo = read_topology(path)
    assert [(d.rank, d.host, d.memory_bytes) for d in topo.devices] == [
        (0, "a", 16 << 30),
        (1, "a", 16 << 30),
        (2, "b", 8 << 30),
        (3, "b", 4 << 30),
    ]
    assert topo.devices[0].memory_bandwidth_bytes_per_s == 900e9
    assert topo.devices[3].comm_bandwidth_bytes_per_s == 100e9
    assert topo.inter_host_bandwidth_bytes_per_s == 25e9
    assert topo.hosts == ("a", "b") and topo.ranks_on("b") == (2, 3)


def test_topology_flat_json_form(tmp_path: Path) -> None:
    path = tmp_path / "topo.json"
    path.write_text(json.dumps({"devices": [{"host": "x", "memory": "1GiB"}, {"memory": 1024}]}))
    topo = read_topology(path)
    assert [(d.host, d.memory_bytes) for d in topo.devices] == [("x", 1 << 30), ("host0", 1024)]


def test_topology_errors_name_every_key_path(tmp_path: Path) -> None:
    path = tmp_path / "topo.yaml"
    path.write_text("hosts:\n  - {name: a, devices: 2, device_memory: lots, colour: red}\n")
    with pytest.raises(InputError) as err:
        read_topology(path)
    msg = str(err.value)
    assert "hosts[0].colour" in msg and "hosts[0].device_memory" in msg and str(path) in msg
    with pytest.raises(NotFoundError):
        read_topology(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("hosts: [unclosed\n")
    with pytest.raises(InputError, match="bad.yaml"):
        read_topology(tmp_path / "bad.yaml")


def test_tables_file_round_trip_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "tables.json"
    good.write_text(
        json.dumps(
            [
                {"name": "C1", "num_embeddings": 1460, "dim": 16, "pooling_factor": 1},
                {"name": "C2", "num_embeddings": 10, "pooling_factor": 2.5, "pooling": "mean"},
            ]
        )
    )
    entries = read_tables_file(good)
    inputs = features_from_tables(
        entries, default_dim=64, dim_overrides={"C2": 32}, source=str(good)
    )
    c1, c2 = inputs.features
    assert (c1.dim, c1.num_ids, c1.live_ids, c1.pooling_factor) == (16, 1460, 1460, 1.0)
    assert (c2.dim, c2.pooling) == (32, PoolingType.MEAN)
    assert not c1.from_stats and inputs.recent_window_s is None
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [
                {"name": "C1", "num_embeddings": 0, "pooling_factor": 1},
                {"name": "C1", "num_embeddings": 5, "pooling_factor": -1, "colour": 1},
            ]
        )
    )
    with pytest.raises(InputError) as err:
        read_tables_file(bad)
    msg = str(err.value)
    for where in (
        "tables[0].num_embeddings",
        "tables[1].name",
        "tables[1].pooling_factor",
        "tables[1]",
    ):
        assert where in msg
    with pytest.raises(InputError, match="--dim-override"):
        features_from_tables(entries, default_dim=64, dim_overrides={"nope": 8})


def test_importance_file(tmp_path: Path) -> None:
    p = tmp_path / "imp.json"
    p.write_text('{"a": 2, "b": 0}')
    with pytest.raises(InputError, match="imp.json:b"):
        read_importance(p)
    p.write_text('{"a": 2}')
    assert read_importance(p) == {"a": 2.0}


def test_features_from_stats(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # ids 1..4; id 1 only at t=0 (dead for a 10 s window ending at t=100), 2 very frequent.
    ids = [1] + [2] * 6 + [3, 4, 3]
    ts = [0] + [95] * 6 + [96, 97, 98]
    pq.write_table(
        pa.table(
            {
                "f": pa.array(ids, pa.int64()),
                "ts": pa.array([t * 1000 for t in ts], pa.timestamp("ms", "UTC")),
            }
        ),
        tmp_path / "log.parquet",
    )
    report = compute_stats(
        [tmp_path / "log.parquet"],
        StatsConfig(features=("f",), timestamp_column="ts", recent_window_s=10),
    )
    inputs = features_from_stats(report, default_dim=8, importance={"f": 3.0})
    (f,) = inputs.features
    assert (f.num_ids, f.live_ids, f.importance, f.dim) == (4, 3, 3.0, 8)
    assert f.pooling_factor == 1.0 and inputs.recent_window_s == 10
    # Live heavy hitters only, most frequent first, with their share of the lookups.
    assert f.heavy_hitters[0] == (2, 0.6)
    assert 1 not in [k for k, _ in f.heavy_hitters]
