"""The ranker's training side on a small synthetic pipeline: requests streamed and joined
point-in-time, plan embeddings as TorchRec modules, training, and the trained tables served by the
embed_store runtime with the same numbers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from adrank.cli import main
from adrank.idmap import id_keys_to_rows, load_dedicated_keys
from adrank.planfile import read_plan
from adrank.types import Precision
from feature_service import FeatureStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ranker_pipeline")
    logs = root / "logs"
    steps = [
        ["synth", "-o", str(logs), "--rows", "6000"],
        [
            "stats",
            str(logs / "impressions.parquet"),
            str(logs / "requests.parquet"),
            "-o",
            str(root / "stats.json"),
        ],
        [
            "plan",
            "--stats",
            str(root / "stats.json"),
            "--devices",
            "2",
            "--device-memory",
            "64MiB",
            "--memory-budget",
            "4MiB",
            "--dim",
            "16",
            "--sequence-features",
            "user_clicked_ads,user_clicked_categories",
            "-o",
            str(root / "plan"),
        ],
        [
            "prune",
            "--plan",
            str(root / "plan"),
            "--holdout-days",
            "1",
            str(logs / "impressions.parquet"),
            str(logs / "requests.parquet"),
        ],
    ]
    for group in ("user", "ad"):
        steps.append(
            [
                "ingest",
                "--store",
                str(root / "store"),
                "--group",
                group,
                "--entity-column",
                f"{group}_id",
                "--timestamp-column",
                "event_ts",
                "--created-column",
                "created_ts",
                str(logs / "snapshots" / f"{group}s.parquet"),
            ]
        )
    for args in steps:
        assert main(["-q", *args]) == 0, args
    return root


def _roles(root: Path, store: FeatureStore):  # type: ignore[no-untyped-def]
    from ranker.train import infer_roles

    return infer_roles(root / "logs", read_plan(root / "plan"), store)


def test_request_batches_cover_every_request_once_with_point_in_time_features(
    pipeline: Path,
) -> None:
    from ranker.data import iter_request_batches, time_split

    logs = pipeline / "logs"
    cut = time_split(logs / "requests.parquet", 1.0)
    with FeatureStore.open(pipeline / "store", read_only=True) as store:
        roles = _roles(pipeline, store)
        assert roles.sequences == ("user_clicked_ads", "user_clicked_categories")
        assert "ad_id" in roles.candidate_sparse and "user_id" in roles.request_sparse
        # Ad attributes come from the ad group as of the request time, as serving reads them;
        # the ad's dense values too (not the impression log's copies).
        assert {"advertiser_id", "category"} <= set(roles.candidate_from_store)
        assert "ad_id" not in roles.candidate_from_store
        assert "bid" not in roles.candidate_dense and "ad__bid" in roles.candidate_dense
        before = list(iter_request_batches(logs, store, roles, requests_per_batch=16, stop_s=cut))
        after = list(iter_request_batches(logs, store, roles, requests_per_batch=16, start_s=cut))
    reqs = pq.read_table(logs / "requests.parquet")
    imps = pq.read_table(logs / "impressions.parquet")
    ids = np.concatenate([b.request_ids for b in before + after])
    assert np.array_equal(ids, reqs.column("request_id").to_numpy())  # once each, in order
    assert all(b.ts_s.max() < cut for b in before) and all(b.ts_s.min() >= cut for b in after)
    labels = np.concatenate([b.labels for b in before + after])
    assert np.array_equal(labels, imps.column("label").to_numpy().astype(np.float32))
    ads = np.concatenate([b.candidate_sparse["ad_id"].values for b in before + after])
    assert np.array_equal(ads, imps.column("ad_id").to_numpy())
    # Point in time: a request's user__ctr_7d is the newest user snapshot at or before it.
    users = pq.read_table(logs / "snapshots" / "users.parquet").to_pandas()
    users["t"] = users["event_ts"].astype("int64") // 10**9
    b = before[-1]
    j = roles.request_dense.index("user__ctr_7d")
    for row in range(b.num_requests):
        uid = int(b.request_sparse["user_id"].values[row])
        seen = users[(users.user_id == uid) & (users.t <= b.ts_s[row])]
        if seen.empty:
            assert b.request_dense[row, j] == 0.0
            continue
        newest = seen.sort_values(["t", "created_ts"]).iloc[-1]["ctr_7d"]
        assert b.request_dense[row, j] == pytest.approx(np.sign(newest) * np.log1p(abs(newest)))


def test_training_tables_are_what_the_runtime_serves(pipeline: Path, tmp_path: Path) -> None:
    from embed_store import JaggedIds, LocalLookup, LookupBatch, load_remaps, open_checkpoint
    from ranker.data import Jagged, iter_request_batches
    from ranker.embeddings import PlanEmbeddings
    from ranker.train import TrainConfig, train

    plan = read_plan(pipeline / "plan")
    with FeatureStore.open(pipeline / "store", read_only=True) as store:
        result = train(
            pipeline / "logs",
            store,
            plan,
            pipeline / "plan",
            tmp_path / "model",
            TrainConfig(requests_per_batch=16),
        )
        roles = _roles(pipeline, store)
        batch = next(iter_request_batches(pipeline / "logs", store, roles, requests_per_batch=8))
    m = result.metrics
    assert set(m["tiers"]) == {"small", "medium", "large"} and m["steps"] > 0
    assert 0.0 <= m["routed"]["relative_cost"] <= 1.0 and sum(
        m["routed"]["tier_mix"].values()
    ) == pytest.approx(1.0)
    # Rebuild the training module from the checkpoint and compare with the serving runtime.
    ckpt = open_checkpoint(tmp_path / "model" / "checkpoint")
    ckpt.check_plan(plan)
    emb = PlanEmbeddings(plan, pipeline / "plan", roles, max_sequence_len=64)
    with torch.no_grad():
        for name, module in emb.ebc.embedding_bags.items():
            module.weight.copy_(torch.from_numpy(ckpt.read_table(name)))
        assert emb.ec is not None
        for name, module in emb.ec.embeddings.items():
            module.weight.copy_(torch.from_numpy(ckpt.read_table(name)))
        trained = emb(batch)
    # Served at fp32 so the comparison is exact up to summation order (the plan's fp16 would
    # add its rounding).
    fp32 = dataclasses.replace(
        plan,
        tables=tuple(dataclasses.replace(t, precision=Precision.FP32) for t in plan.tables),
    )
    runtime = LocalLookup.single_device(fp32, ckpt.read_block, load_remaps(plan, pipeline / "plan"))

    def bags(feature: str, j: Jagged) -> list[list[int]]:
        hashed = emb.hasher.hashed(feature, j.values).tolist()
        ends = np.cumsum(j.lengths).tolist()
        return [hashed[e - n : e] for n, e in zip(j.lengths.tolist(), ends, strict=True)]

    cand = {f: bags(f, batch.candidate_sparse[f]) for f in roles.candidate_sparse}
    req = {f: bags(f, batch.request_sparse[f]) for f in roles.request_sparse}
    served = runtime.lookup(
        LookupBatch(
            JaggedIds.from_lists(cand),
            JaggedIds.from_lists(req),
            torch.from_numpy(batch.candidate_request),
        )
    )
    got_c = torch.cat([served.candidates.to_dict()[f] for f in roles.candidate_sparse], dim=1)
    assert served.requests is not None
    got_r = torch.cat([served.requests.to_dict()[f] for f in roles.request_sparse], dim=1)
    assert torch.allclose(got_c, trained.candidate_pooled, atol=1e-5)
    assert torch.allclose(got_r, trained.request_pooled, atol=1e-5)


def test_hasher_rows_follow_the_plan_mapping(pipeline: Path) -> None:
    from ranker.data import Jagged
    from ranker.embeddings import FeatureHasher

    plan = read_plan(pipeline / "plan")
    hasher = FeatureHasher(plan, pipeline / "plan")
    keys = pc.unique(
        pq.read_table(pipeline / "logs" / "impressions.parquet").column("ad_id")
    ).to_numpy()[:500]
    table, slot = plan.table_of_feature("ad_id")
    remap = None
    if table.remap_file:
        remap = np.load(pipeline / "plan" / table.remap_file)
    want = id_keys_to_rows(
        table, "ad_id", keys, load_dedicated_keys(pipeline / "plan", slot), remap
    )
    got = hasher.rows("ad_id", Jagged(keys.astype(np.int64), np.ones(len(keys), dtype=np.int64)))
    kept = want >= 0
    assert np.array_equal(got.values, want[kept] if table.fallback_row is None else want)
    assert got.lengths.sum() == len(got.values)


@pytest.mark.multiprocess
def test_training_on_two_ranks_shards_the_tables_as_planned(pipeline: Path, tmp_path: Path) -> None:
    """`adrank train --devices 2`: DMP shards the tables by the plan; rank 0 gathers them."""
    from embed_store import open_checkpoint
    from ranker.train import TrainConfig, train

    plan = read_plan(pipeline / "plan")
    assert len(plan.devices) == 2
    with FeatureStore.open(pipeline / "store", read_only=True) as store:
        result = train(
            pipeline / "logs",
            store,
            plan,
            pipeline / "plan",
            tmp_path / "model",
            TrainConfig(requests_per_batch=16, devices=2),
        )
    m = result.metrics
    assert m["steps"] > 0 and m["requests"]["train"] >= 2 * m["steps"]
    assert all(0.0 <= t["auc"] <= 1.0 for t in m["tiers"].values())
    ckpt = open_checkpoint(tmp_path / "model" / "checkpoint")
    ckpt.check_plan(plan)
    # Trained rows moved away from the initial uniform(+-0.1/sqrt(dim)) range somewhere.
    moved = [
        float(np.abs(ckpt.read_table(t.name)).max()) > 0.1 / np.sqrt(t.dim) + 1e-6
        for t in plan.tables
    ]
    assert any(moved)
