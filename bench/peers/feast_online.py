"""Feast's online read, timed on the kv_get benchmark's data (runs in .venv-peers, not adrank's).

Self-contained: imports only Feast, pandas and the standard library, because it runs with
``.venv-peers/bin/python`` (Feast pulls protobuf 7 and its own pandas, which must not meet adrank's
pinned set). Usage::

    .venv-peers/bin/python bench/peers/feast_online.py SPEC.json

SPEC.json::

    {"repo_dir": "/tmp/x",                       # empty directory for the Feast repo
     "groups": [{"name": "users", "entity": "user_id", "path": "users.parquet",
                 "timestamp_column": "event_ts",
                 "features": [{"name": "u_f0", "type": "float32"}, ...]}, ...],
     "requests_path": "requests.json",           # [{"user": 7, "ads": [1, 2, ...]}, ...]
     "user_group": "users", "candidate_group": "ads",
     "warmup": 10, "requests": 100, "check_rows": 3}

Feature types: float32, float64, int64, float32_list, int64_list. A Feast repo is built in
``repo_dir`` (file offline store over the parquet files, SQLite online store), the groups are
materialized, and each request -- one user and its candidate ads -- is one
``get_online_features`` call with columnar entity rows (the user id repeated per ad), as a Feast
user serves a ranking request. Prints one JSON object: per-call latencies in seconds, both for the
call alone and with ``to_dict()``, materialization time, and the values of the first request's
first rows for a cross-check.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_YAML = """project: kv_get_bench
registry: {repo}/registry.db
provider: local
online_store:
  type: sqlite
  path: {repo}/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def _feast_type(name: str) -> Any:
    from feast.types import Array, Float32, Float64, Int64

    return {
        "float32": Float32,
        "float64": Float64,
        "int64": Int64,
        "float32_list": Array(Float32),
        "int64_list": Array(Int64),
    }[name]


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a Feast value (numpy scalars and arrays to Python)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def main(spec_path: str) -> dict[str, Any]:
    spec = json.loads(Path(spec_path).read_text())
    t0 = time.perf_counter()
    import feast
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.value_type import ValueType

    import_s = time.perf_counter() - t0
    repo = Path(spec["repo_dir"])
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(_YAML.format(repo=repo))
    store = FeatureStore(repo_path=str(repo))
    objects: list[Any] = []
    names: dict[str, list[str]] = {}
    entity_of: dict[str, str] = {}
    for g in spec["groups"]:
        entity = Entity(
            name=g["name"] + "_entity", join_keys=[g["entity"]], value_type=ValueType.INT64
        )
        source = FileSource(
            name=g["name"] + "_source", path=g["path"], timestamp_field=g["timestamp_column"]
        )
        view = FeatureView(
            name=g["name"],
            entities=[entity],
            ttl=timedelta(days=3650),
            schema=[Field(name=f["name"], dtype=_feast_type(f["type"])) for f in g["features"]],
            source=source,
            online=True,
        )
        objects += [entity, view]
        names[g["name"]] = [f["name"] for f in g["features"]]
        entity_of[g["name"]] = g["entity"]
    store.apply(objects)
    t0 = time.perf_counter()
    store.materialize(
        start_date=datetime(1970, 1, 2, tzinfo=UTC), end_date=datetime.now(UTC) + timedelta(days=1)
    )
    materialize_s = time.perf_counter() - t0

    user_group, cand_group = spec["user_group"], spec["candidate_group"]
    features = [f"{user_group}:{n}" for n in names[user_group]] + [
        f"{cand_group}:{n}" for n in names[cand_group]
    ]
    requests = json.loads(Path(spec["requests_path"]).read_text())
    user_key, cand_key = entity_of[user_group], entity_of[cand_group]

    def rows(req: dict[str, Any]) -> dict[str, list[int]]:
        return {user_key: [req["user"]] * len(req["ads"]), cand_key: list(req["ads"])}

    warmup, count = int(spec["warmup"]), int(spec["requests"])
    for i in range(warmup):
        store.get_online_features(features=features, entity_rows=rows(requests[i % len(requests)]))
    call_s: list[float] = []
    total_s: list[float] = []
    for i in range(count):
        entity_rows = rows(requests[i % len(requests)])
        a = time.perf_counter()
        response = store.get_online_features(features=features, entity_rows=entity_rows)
        b = time.perf_counter()
        response.to_dict()
        c = time.perf_counter()
        call_s.append(b - a)
        total_s.append(c - a)
    k = int(spec.get("check_rows", 3))
    first = store.get_online_features(features=features, entity_rows=rows(requests[0])).to_dict()
    check = {name: _plain(values[:k]) for name, values in first.items()}
    return {
        "feast_version": feast.__version__,
        "import_s": import_s,
        "materialize_s": materialize_s,
        "features_per_call": len(features),
        "call_s": call_s,
        "call_to_dict_s": total_s,
        "check": check,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
