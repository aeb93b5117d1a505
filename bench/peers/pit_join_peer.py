"""Peer half of ``python -m bench pit_join``: polars ``join_asof`` or Feast
``get_historical_features`` on the benchmark's parquet files. Runs in ``.venv-peers`` (Feast pulls
protobuf 7 and its own pandas), so it imports nothing from adrank.

Usage: ``.venv-peers/bin/python bench/peers/pit_join_peer.py SPEC.json``. The spec names the peer,
the examples file, one entry per feature group (its parquet file, entity column, features and their
types, TTL) and where to write the joined table (parquet, columns ``row_id`` and
``<group>__<feature>``). One JSON object goes to stdout: the peer, its version, the parquet read
time, the join time of each repeat (seconds) and the rows it returned.

polars: the feature files must already be deduplicated to the newest ``created_ts`` per (entity,
``event_ts``): ``join_asof`` has no created-time tie-break. TTL is its ``tolerance``. Examples are
sorted by time for the join (part of the timed work) and back to ``row_id`` order afterwards.

Feast: a local repo in ``repo_dir`` (file offline store, SQLite online store unused), one entity and
one feature view per group over the raw files, with ``created_timestamp_column`` and ``ttl``
(``timedelta(0)``: no TTL). The timed work is ``get_historical_features(...).to_arrow()``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

_YAML = """project: pit_join_bench
registry: {repo}/registry.db
provider: local
online_store:
  type: sqlite
  path: {repo}/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def _polars(spec: dict[str, Any]) -> dict[str, Any]:
    import polars as pl

    ts = spec["timestamp_column"]
    t0 = time.perf_counter()
    examples = pl.read_parquet(spec["examples"])
    features = {g["name"]: pl.read_parquet(g["file"]) for g in spec["groups"]}
    read_s = time.perf_counter() - t0
    times = []
    out = None
    for _ in range(int(spec.get("repeats", 1))):
        t0 = time.perf_counter()
        left = examples.with_columns(pl.col(ts).cast(pl.Datetime("us", "UTC"))).sort(ts)
        for g in spec["groups"]:
            name, col = g["name"], g["entity_column"]
            event = f"{name}__event_ts"
            right = (
                features[name]
                .select(
                    [pl.col(col), pl.col("event_ts").cast(pl.Datetime("us", "UTC")).alias(event)]
                    + [pl.col(f).alias(f"{name}__{f}") for f in g["features"]]
                )
                .sort(event)
            )
            ttl = g.get("ttl_s")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sortedness within `by` groups cannot be checked
                left = left.join_asof(
                    right,
                    left_on=ts,
                    right_on=event,
                    by=col,
                    strategy="backward",
                    tolerance=None if ttl is None else timedelta(seconds=int(ttl)),
                    check_sortedness=False,
                ).drop(event)
        out = left.sort("row_id")
        times.append(time.perf_counter() - t0)
    assert out is not None
    cols = ["row_id"] + [f"{g['name']}__{f}" for g in spec["groups"] for f in g["features"]]
    out.select(cols).write_parquet(spec["out"])
    return {"version": pl.__version__, "read_s": read_s, "join_s": times, "rows": out.height}


def _feast_type(name: str) -> Any:
    from feast.types import Float32, Float64, Int64, String

    return {"int64": Int64, "float32": Float32, "float64": Float64, "string": String}[name]


def _feast(spec: dict[str, Any]) -> dict[str, Any]:
    import feast
    import pyarrow.parquet as pq
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType

    repo = Path(spec["repo_dir"])
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(_YAML.format(repo=repo))
    objects: list[Any] = []
    refs = []
    for g in spec["groups"]:
        entity = Entity(name=g["name"], join_keys=[g["entity_column"]], value_type=ValueType.INT64)
        source = FileSource(
            name=f"{g['name']}_source",
            path=str(Path(g["file"]).resolve()),
            timestamp_field="event_ts",
            created_timestamp_column="created_ts",
        )
        view = FeatureView(
            name=g["name"],
            entities=[entity],
            ttl=timedelta(seconds=int(g["ttl_s"] or 0)),
            schema=[Field(name=f, dtype=_feast_type(g["dtypes"][f])) for f in g["features"]],
            source=source,
            online=False,
        )
        objects += [entity, view]
        refs += [f"{g['name']}:{f}" for f in g["features"]]
    store = FeatureStore(repo_path=str(repo))
    store.apply(objects)
    t0 = time.perf_counter()
    entity_df = pq.read_table(spec["examples"]).to_pandas()
    entity_df = entity_df.rename(columns={spec["timestamp_column"]: "event_timestamp"})
    read_s = time.perf_counter() - t0
    times = []
    table = None
    for _ in range(int(spec.get("repeats", 1))):
        t0 = time.perf_counter()
        job = store.get_historical_features(
            entity_df=entity_df, features=refs, full_feature_names=True
        )
        table = job.to_arrow()
        times.append(time.perf_counter() - t0)
    assert table is not None
    cols = ["row_id"] + [f"{g['name']}__{f}" for g in spec["groups"] for f in g["features"]]
    pq.write_table(table.select(cols), spec["out"])
    return {"version": feast.__version__, "read_s": read_s, "join_s": times, "rows": table.num_rows}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    runner = {"polars": _polars, "feast": _feast}[spec["peer"]]
    result = runner(spec)
    result["peer"] = spec["peer"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
