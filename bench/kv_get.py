"""``python -m bench kv_get``: online feature reads over gRPC on loopback, side by side with Feast.

Workload (issue 5): one ranking request = 1 user + ``candidates`` (500) ads, ``features`` (32)
features per group, read in ONE GetRequestFeatures call through :class:`FeatureClient` against
``adrank serve-features`` running in a subprocess (its own interpreter, as in production), the
client in this process. Each group's 32 features mix float32 and int64 scalars, two float32[8]
vectors and two variable-length int64 lists. Requests draw a uniform user and distinct uniform
ads (seeded); every call's latency is measured end to end in the client: building the request,
the round trip and decoding the frames into numpy. Warm-up calls come first. Also measured:
GetFeatures for the 500 ads alone, and throughput with ``concurrency`` client threads.

Side by side, in the same run and on the same data and requests: Feast's ``get_online_features``
(SQLite online store, file offline store, materialized from the same parquet files) in a
subprocess with ``.venv-peers/bin/python`` (``make peers``) running ``bench/peers/feast_online.py``;
one call per request with the user id repeated per ad, as a Feast user serves a ranking request.
Feast runs in process (no RPC), so the comparison favours it. The first request's values are
cross-checked between the two.

``--smoke`` runs a tiny size with the server in this process (threads) so the unit test needs no
server subprocess; the Feast part is skipped, with the reason in the notes, when ``.venv-peers`` is
absent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import BenchResult, concurrent_throughput, measure_peak_rss_bytes, percentiles_ms

__all__ = ["DEFAULT_CONFIG", "run", "feature_names", "make_tables", "make_requests"]

REPO = Path(__file__).resolve().parents[1]
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "feast_online.py"

DEFAULT_CONFIG: dict[str, Any] = {
    "users": 10_000,
    "ads": 100_000,
    "features": 32,
    "candidates": 500,
    "requests": 2000,
    "warmup": 200,
    "concurrency": 4,
    "throughput_requests": 1000,
    "timeout_s": 2.0,
    "seed": 0,
    "feast": True,
    "feast_requests": 200,
    "feast_warmup": 10,
    "peers_python": str(REPO / ".venv-peers" / "bin" / "python"),
    "target_p50_ms": 3.0,
    "target_p99_ms": 10.0,
    "target_ratio_vs_feast": 20.0,
    "smoke_users": 50,
    "smoke_ads": 500,
    "smoke_candidates": 40,
    "smoke_requests": 20,
    "smoke_warmup": 3,
    "smoke_throughput_requests": 8,
    "smoke_feast_requests": 3,
}

_EVENT_END_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
_EVENT_SPAN_US = 30 * 86_400 * 1_000_000
_VECTOR_DIM = 8
_MAX_LIST = 10
_USER_GROUP, _AD_GROUP = "users", "ads"


def _kind(i: int) -> str:
    """Feature i's type: two vectors and two lists per 32, a quarter int64, the rest float32."""
    if i % 16 == 14:
        return "float32_vector"
    if i % 16 == 15:
        return "int64_list"
    return "int64" if i % 4 == 0 else "float32"


def feature_names(prefix: str, n: int) -> list[str]:
    """Feature names of a group: ``{prefix}_f00`` ... (distinct across groups, as Feast needs)."""
    return [f"{prefix}_f{i:02d}" for i in range(n)]


def make_tables(
    config: dict[str, Any], users: int, ads: int, rng: np.random.Generator
) -> dict[str, Any]:
    """The users and ads snapshots as Arrow tables: id, ``event_ts`` (timestamp us UTC), features.

    Returns:
        ``{"users": table, "ads": table}``.
    """
    import pyarrow as pa

    out = {}
    for group, prefix, key, n in (
        (_USER_GROUP, "u", "user_id", users),
        (_AD_GROUP, "a", "ad_id", ads),
    ):
        cols: dict[str, Any] = {
            key: pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "event_ts": pa.array(
                _EVENT_END_US - rng.integers(0, _EVENT_SPAN_US, n), pa.timestamp("us", tz="UTC")
            ),
        }
        for i, name in enumerate(feature_names(prefix, int(config["features"]))):
            kind = _kind(i)
            if kind == "float32":
                cols[name] = pa.array(rng.random(n, dtype=np.float32))
            elif kind == "int64":
                cols[name] = pa.array(rng.integers(0, 1_000_000, n))
            elif kind == "float32_vector":
                flat = pa.array(rng.standard_normal(n * _VECTOR_DIM, dtype=np.float32))
                cols[name] = pa.FixedSizeListArray.from_arrays(flat, _VECTOR_DIM)
            else:
                lengths = rng.integers(0, _MAX_LIST + 1, n)
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
                values = pa.array(rng.integers(0, 1_000_000, int(offsets[-1])))
                cols[name] = pa.ListArray.from_arrays(pa.array(offsets), values)
        out[group] = pa.table(cols)
    return out


def make_requests(
    users: int, ads: int, candidates: int, count: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """``count`` requests: a uniform user id and ``candidates`` distinct uniform ad ids."""
    return [
        {
            "user": int(rng.integers(1, users + 1)),
            "ads": (rng.choice(ads, size=candidates, replace=False) + 1).tolist(),
        }
        for _ in range(count)
    ]


def _feast_table(table: Any) -> Any:
    """The same table with fixed-size lists as plain lists (Feast's type mapping lacks them)."""
    import pyarrow as pa

    fields = []
    arrays = []
    for f, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_fixed_size_list(f.type):
            col = col.cast(pa.list_(f.type.value_type))
        fields.append(pa.field(f.name, col.type))
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _feast_type(kind: str) -> str:
    return {"float32_vector": "float32_list"}.get(kind, kind)


# ---------------------------------------------------------------------- the adrank side


class _SubprocessServer:
    """``python -m adrank serve-features`` on port 0; the bound port comes from --port-file."""

    def __init__(self, store: Path, workdir: Path) -> None:
        port_file = workdir / "port"
        self._log = open(workdir / "server.log", "w+", encoding="utf-8")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adrank",
                "serve-features",
                "--store",
                str(store),
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "-q",
            ],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                self._log.seek(0)
                raise RuntimeError(f"feature server did not start:\n{self._log.read()}")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


class _InProcessServer:
    def __init__(self, store: Path) -> None:
        from feature_service import ServerConfig, build_server

        self._server = build_server(ServerConfig(store_path=str(store), port=0))
        self._server.start()
        self.address = self._server.address

    def stop(self) -> None:
        self._server.stop()


def _timed(fn: Callable[[dict[str, Any]], Any], requests: list[dict[str, Any]]) -> list[float]:
    samples = []
    for req in requests:
        t0 = time.perf_counter()
        fn(req)
        samples.append(time.perf_counter() - t0)
    return samples


def _adrank_side(
    address: str,
    requests: list[dict[str, Any]],
    warmup: list[dict[str, Any]],
    throughput_requests: list[dict[str, Any]],
    config: dict[str, Any],
) -> dict[str, Any]:
    from feature_service import FeatureClient

    with FeatureClient(address, timeout_s=float(config["timeout_s"])) as client:
        client.wait_ready(60.0)

        def combined(req: dict[str, Any]) -> Any:
            return client.get_request(
                user_group=_USER_GROUP,
                user_id=req["user"],
                candidate_group=_AD_GROUP,
                candidate_ids=req["ads"],
            )

        def ads_only(req: dict[str, Any]) -> Any:
            return client.get_features(_AD_GROUP, req["ads"])

        _timed(combined, warmup)
        _timed(ads_only, warmup)
        combined_s = _timed(combined, requests)
        ads_only_s = _timed(ads_only, requests)
        qps = concurrent_throughput(combined, throughput_requests, int(config["concurrency"]))
        first = combined(requests[0])
    return {
        "combined_s": combined_s,
        "ads_only_s": ads_only_s,
        "qps_concurrent": qps,
        "first": first,
    }


# ---------------------------------------------------------------------- the Feast side


def _feast_side(
    config: dict[str, Any],
    tmp: Path,
    tables: dict[str, Any],
    requests: list[dict[str, Any]],
    count: int,
) -> dict[str, Any] | str:
    """Run the peer script; return its JSON, or the reason it was skipped."""
    import pyarrow.parquet as pq

    python = Path(config["peers_python"])
    if not config["feast"]:
        return "disabled in the config (feast: false)"
    if not python.exists():
        return f"{python} is absent (run `make peers` to build .venv-peers with Feast)"
    groups = []
    for group, prefix, key in ((_USER_GROUP, "u", "user_id"), (_AD_GROUP, "a", "ad_id")):
        path = tmp / f"feast_{group}.parquet"
        pq.write_table(_feast_table(tables[group]), path)
        names = feature_names(prefix, int(config["features"]))
        groups.append(
            {
                "name": group,
                "entity": key,
                "path": str(path),
                "timestamp_column": "event_ts",
                "features": [
                    {"name": n, "type": _feast_type(_kind(i))} for i, n in enumerate(names)
                ],
            }
        )
    requests_path = tmp / "requests.json"
    requests_path.write_text(json.dumps(requests))
    spec = {
        "repo_dir": str(tmp / "feast_repo"),
        "groups": groups,
        "requests_path": str(requests_path),
        "user_group": _USER_GROUP,
        "candidate_group": _AD_GROUP,
        "warmup": int(config["feast_warmup"]),
        "requests": count,
        "check_rows": 3,
    }
    spec_path = tmp / "feast_spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(python), str(PEER_SCRIPT), str(spec_path)],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        cwd=tmp,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"Feast peer failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _cross_check(first: Any, check: dict[str, list[Any]]) -> list[str]:
    """Differences between adrank's and Feast's values for the first request's first rows."""
    problems = []
    for frame in (first.user, first.candidates):
        for name, col in frame.columns.items():
            if name not in check:
                problems.append(f"{name}: missing from Feast's answer")
                continue
            feast_values = check[name]
            ours = col.to_pylist()
            if frame is first.user:
                ours = ours * len(feast_values)  # Feast repeats the user per ad row
            for i, fv in enumerate(feast_values):
                ov = ours[i]
                if col.spec.dtype.value == "float32":
                    same = np.array_equal(
                        np.asarray(fv, dtype=np.float32), np.asarray(ov, dtype=np.float32)
                    )
                else:
                    same = fv == ov
                if not same:
                    problems.append(f"{name} row {i}: adrank {ov!r}, Feast {fv!r}")
    return problems


# ---------------------------------------------------------------------- run


def run(config: dict[str, Any], smoke: bool) -> BenchResult:
    """Run the benchmark.

    Args:
        config: :data:`DEFAULT_CONFIG` overlaid with the YAML file.
        smoke: Tiny sizes, server in this process (for the unit test).
    """
    import pyarrow.parquet as pq

    from feature_service import FeatureStore, ingest_parquet

    size = {
        k: config[f"smoke_{k}" if smoke else k]
        for k in ("users", "ads", "candidates", "requests", "warmup", "throughput_requests")
    }
    feast_count = int(config["smoke_feast_requests" if smoke else "feast_requests"])
    rng = np.random.default_rng(int(config["seed"]))
    with tempfile.TemporaryDirectory(prefix="bench-kv-get-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        tables = make_tables(config, int(size["users"]), int(size["ads"]), rng)
        requests = make_requests(
            int(size["users"]),
            int(size["ads"]),
            int(size["candidates"]),
            int(size["requests"]),
            rng,
        )
        warmup = requests[: int(size["warmup"])]
        throughput_requests = requests[: int(size["throughput_requests"])]
        store_path = tmp / "store"
        ingested = 0
        with FeatureStore.open(store_path) as store:
            for group, key in ((_USER_GROUP, "user_id"), (_AD_GROUP, "ad_id")):
                path = tmp / f"{group}.parquet"
                pq.write_table(tables[group], path)
                report = ingest_parquet(
                    store,
                    [path],
                    group=group,
                    entity_column=key,
                    timestamp_column="event_ts",
                    scan_snapshot=False,  # online reads only: no join reads it
                )
                ingested += report.rows_written
        setup_s = time.perf_counter() - t0

        server: _InProcessServer | _SubprocessServer = (
            _InProcessServer(store_path) if smoke else _SubprocessServer(store_path, tmp)
        )
        try:
            ours = _adrank_side(server.address, requests, warmup, throughput_requests, config)
        finally:
            server.stop()
        feast = _feast_side(config, tmp, tables, requests, feast_count)

    combined = percentiles_ms(ours["combined_s"])
    ads_only = percentiles_ms(ours["ads_only_s"])
    n = len(ours["combined_s"])
    metrics: dict[str, Any] = {
        "p50_ms": combined["p50_ms"],
        "p90_ms": combined["p90_ms"],
        "p99_ms": combined["p99_ms"],
        "qps": n / sum(ours["combined_s"]),
        "qps_concurrent": ours["qps_concurrent"],
        "get_features_ads_only_p50_ms": ads_only["p50_ms"],
        "get_features_ads_only_p99_ms": ads_only["p99_ms"],
        "requests": n,
        "candidates": int(size["candidates"]),
        "features_per_group": int(config["features"]),
        "store_rows": ingested,
        "setup_s": setup_s,
        "peak_rss_bytes": measure_peak_rss_bytes(),
    }
    targets: dict[str, Any] = {
        "p50_ms": {
            "max": config["target_p50_ms"],
            "measured": combined["p50_ms"],
            "met": combined["p50_ms"] <= config["target_p50_ms"],
        },
        "p99_ms": {
            "max": config["target_p99_ms"],
            "measured": combined["p99_ms"],
            "met": combined["p99_ms"] <= config["target_p99_ms"],
        },
    }
    server_where = "in this process (smoke)" if smoke else "in a subprocess"
    notes = (
        f"1 user + {size['candidates']} ads x {config['features']} features per group in one "
        f"GetRequestFeatures call over gRPC on 127.0.0.1, server {server_where}, one client "
        f"thread; qps_concurrent with {config['concurrency']} client threads. "
    )
    if isinstance(feast, str):
        metrics["feast_skipped"] = feast
        notes += f"Feast part skipped: {feast}."
    else:
        f_call = percentiles_ms(feast["call_s"])
        f_dict = percentiles_ms(feast["call_to_dict_s"])
        ratio = f_call["p50_ms"] / combined["p50_ms"]
        mismatches = _cross_check(ours["first"], feast["check"])
        metrics.update(
            {
                "feast_version": feast["feast_version"],
                "feast_p50_ms": f_call["p50_ms"],
                "feast_p90_ms": f_call["p90_ms"],
                "feast_p99_ms": f_call["p99_ms"],
                "feast_to_dict_p50_ms": f_dict["p50_ms"],
                "feast_requests": len(feast["call_s"]),
                "feast_materialize_s": feast["materialize_s"],
                "ratio_vs_feast_p50": ratio,
                "ratio_vs_feast_p99": f_call["p99_ms"] / combined["p99_ms"],
                "feast_values_match": not mismatches,
            }
        )
        targets["ratio_vs_feast_p50"] = {
            "min": config["target_ratio_vs_feast"],
            "measured": ratio,
            "met": ratio >= config["target_ratio_vs_feast"],
        }
        notes += (
            f"Feast {feast['feast_version']} get_online_features (SQLite online store, in process, "
            f"no RPC; {feast['features_per_call']} features, user id repeated per ad row): p50 "
            f"{f_call['p50_ms']:.1f} ms ({f_dict['p50_ms']:.1f} ms with to_dict()); ratio uses "
            "the call alone. "
        )
        if mismatches:
            notes += f"VALUE MISMATCHES vs Feast: {mismatches[:5]}. "
        else:
            notes += "First request's values match Feast's. "
    return BenchResult(
        name="kv_get", config=dict(config), metrics=metrics, targets=targets, notes=notes.strip()
    )
