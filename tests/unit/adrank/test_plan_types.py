"""The plan contract: row bytes, JSON round trip, validation errors, id-space converters."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from adrank.errors import InputError, PlanError, PlanErrorKind
from adrank.hashing import murmur3_64
from adrank.idmap import hashed_to_rows, id_keys_to_hashed, id_keys_to_rows, rows_to_local_rows
from adrank.planfile import (
    plan_to_json,
    read_plan,
    read_precision_errors,
    validate_plan,
    write_plan,
    write_precision_errors,
)
from adrank.types import (
    DevicePlan,
    FeatureSlot,
    OptimizerStateKind,
    PlanMode,
    PoolingType,
    Precision,
    PruningAction,
    PruningPolicy,
    ShardingType,
    ShardPlan,
    ShardSpec,
    TablePlan,
    shard_memory_bytes,
)


@pytest.mark.parametrize(
    ("precision", "dim", "align", "expected"),
    [
        (Precision.FP32, 64, 16, 256),
        (Precision.FP16, 64, 16, 128),
        (Precision.INT8, 64, 16, 80),  # 64 + 4 scale/bias = 68 -> 80
        (Precision.INT4, 64, 16, 48),  # 32 + 4 = 36 -> 48
        (Precision.INT8, 64, 1, 68),
        (Precision.INT4, 128, 1, 68),
        (Precision.FP16, 3, 16, 16),
    ],
)
def test_row_bytes_follow_fbgemm_layout(
    precision: Precision, dim: int, align: int, expected: int
) -> None:
    assert precision.row_bytes(dim, align) == expected


@pytest.mark.parametrize(
    ("precision", "bad", "good"),
    [
        (Precision.INT4, 6, 8),
        (Precision.INT4, 7, 4),
        (Precision.INT8, 7, 6),
        (Precision.FP16, 0, 7),
    ],
)
def test_quantized_precisions_refuse_dims_fbgemm_cannot_store(
    precision: Precision, bad: int, good: int
) -> None:
    assert precision.supports_dim(good) and not precision.supports_dim(bad)
    with pytest.raises(ValueError, match="multiple of|>= 1"):
        precision.row_bytes(bad)
    assert precision.row_bytes(good) > 0


def test_optimizer_state_bytes() -> None:
    assert (
        shard_memory_bytes(Precision.FP32, 10, 8, OptimizerStateKind.ROWWISE_ADAGRAD, 1)
        == 10 * 32 + 40
    )
    assert shard_memory_bytes(Precision.FP32, 10, 8, OptimizerStateKind.ADAGRAD, 1) == 2 * 10 * 32


def _plan(tmp_rows: int = 100) -> ShardPlan:
    """Two tables on two ranks: a row-wise pruned table and a table-wise unified table."""
    t1 = TablePlan(
        name="t_ad",
        features=(
            FeatureSlot(
                "ad_id",
                seed=11,
                hash_size=98,
                num_dedicated_rows=2,
                dedicated_row_offset=98,
                dedicated_keys_file="dedicated/ad_id.npy",
                traffic_share=0.5,
            ),
        ),
        num_rows=tmp_rows - 20,
        dim=8,
        precision=Precision.FP16,
        pooling=PoolingType.SUM,
        sharding_type=ShardingType.ROW_WISE,
        shards=(ShardSpec(0, 0, 40, 0, 8), ShardSpec(1, 40, tmp_rows - 60, 0, 8)),
        hashed_rows=tmp_rows,
        fallback_row=tmp_rows - 21,
        pruning=PruningPolicy(PruningAction.DROP_DEAD, 86_400, 0, 21, 0.01),
    )
    t2 = TablePlan(
        name="t_shared",
        features=(
            FeatureSlot("a", seed=1, hash_size=50, traffic_share=0.25),
            FeatureSlot("b", seed=2, hash_size=50, traffic_share=0.25),
        ),
        num_rows=50,
        dim=4,
        precision=Precision.INT8,
        pooling=PoolingType.SUM,
        sharding_type=ShardingType.TABLE_WISE,
        shards=(ShardSpec(1, 0, 50, 0, 4),),
        hashed_rows=50,
    )
    used0 = 40 * 16
    used1 = (tmp_rows - 60) * 16 + 50 * 16
    return ShardPlan(
        mode=PlanMode.INFERENCE,
        tables=(t1, t2),
        devices=(DevicePlan(0, "h0", 10_000, used0, 0.1), DevicePlan(1, "h0", 10_000, used1, 0.2)),
        inputs_fingerprint="sha256:abc",
    )


def test_plan_round_trips_through_json(tmp_path: Path) -> None:
    plan = _plan()
    path = tmp_path / "plan.json"
    write_plan(plan, path)
    doc = json.loads(path.read_text())
    assert doc["kind"] == "adrank.plan" and doc["format_version"] == 1
    assert doc["tables"][0]["shards"][1] == {
        "rank": 1,
        "row_offset": 40,
        "rows": 40,
        "col_offset": 0,
        "cols": 8,
    }
    assert doc["devices"][0] == {
        "rank": 0,
        "host": "h0",
        "memory_bytes": 10_000,
        "used_bytes": 640,
        "est_cost_ms": 0.1,
    }
    assert read_plan(path) == plan
    assert read_plan(tmp_path) == plan  # the directory works too


def test_read_plan_refuses_other_fingerprint(tmp_path: Path) -> None:
    write_plan(_plan(), tmp_path / "plan.json")
    with pytest.raises(PlanError) as err:
        read_plan(tmp_path / "plan.json", expected_fingerprint="sha256:other")
    assert err.value.kind is PlanErrorKind.PLAN_MISMATCH
    assert "sha256:abc" in str(err.value)


def test_read_plan_names_malformed_field(tmp_path: Path) -> None:
    write_plan(_plan(), tmp_path / "plan.json")
    doc = json.loads((tmp_path / "plan.json").read_text())
    doc["tables"][1]["shards"][0]["rows"] = "fifty"
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        read_plan(tmp_path / "plan.json")
    assert "tables[1].shards[0].rows" in str(err.value)
    assert err.value.exit_code == 2


def _replace_table(plan: ShardPlan, i: int, **changes: object) -> ShardPlan:
    tables = list(plan.tables)
    tables[i] = dataclasses.replace(tables[i], **changes)
    return dataclasses.replace(plan, tables=tuple(tables))


def test_validate_flags_gap_in_shards() -> None:
    plan = _replace_table(
        _plan(), 0, shards=(ShardSpec(0, 0, 39, 0, 8), ShardSpec(1, 40, 40, 0, 8))
    )
    with pytest.raises(PlanError) as err:
        validate_plan(plan)
    assert err.value.kind is PlanErrorKind.PLAN_MISMATCH
    assert "'t_ad'" in str(err.value)


def test_validate_flags_overlapping_shards() -> None:
    plan = _replace_table(
        _plan(),
        1,
        sharding_type=ShardingType.COLUMN_WISE,
        shards=(ShardSpec(0, 0, 50, 0, 3), ShardSpec(1, 0, 50, 1, 1)),
    )
    with pytest.raises(PlanError, match="exactly once"):
        validate_plan(plan)


def test_validate_flags_feature_in_two_tables() -> None:
    plan = _plan()
    dup = dataclasses.replace(
        plan.tables[1],
        features=(
            plan.tables[1].features[0],
            dataclasses.replace(
                plan.tables[0].features[0],
                dedicated_keys_file=None,
                num_dedicated_rows=0,
                hash_size=50,
            ),
        ),
    )
    with pytest.raises(PlanError, match="'ad_id' is in tables 't_ad' and 't_shared'"):
        validate_plan(_replace_table(plan, 1, features=dup.features))


def test_validate_flags_device_over_capacity_as_constraint_conflict() -> None:
    plan = _plan()
    devices = (plan.devices[0], dataclasses.replace(plan.devices[1], memory_bytes=100))
    with pytest.raises(PlanError) as err:
        validate_plan(dataclasses.replace(plan, devices=devices))
    assert err.value.kind is PlanErrorKind.CONSTRAINT_CONFLICT
    assert "rank 1" in str(err.value)


def test_validate_flags_wrong_used_bytes_and_int_training() -> None:
    plan = _plan()
    devices = (dataclasses.replace(plan.devices[0], used_bytes=1), plan.devices[1])
    bad = dataclasses.replace(plan, devices=devices, mode=PlanMode.TRAINING)
    with pytest.raises(PlanError) as err:
        validate_plan(bad)
    msg = str(err.value)
    assert "rank 0: used_bytes is 1" in msg and "'t_shared' has precision int8" in msg


def test_validate_require_remaps() -> None:
    validate_plan(_plan())
    with pytest.raises(PlanError, match="no remap_file"):
        validate_plan(_plan(), require_remaps=True)


def test_validate_table_row_wise_must_stay_on_one_host() -> None:
    plan = _replace_table(_plan(), 0, sharding_type=ShardingType.TABLE_ROW_WISE)
    validate_plan(plan)
    devices = (plan.devices[0], dataclasses.replace(plan.devices[1], host="h1"))
    with pytest.raises(PlanError, match="one host"):
        validate_plan(dataclasses.replace(plan, devices=devices))


def test_id_keys_to_rows_dedicated_hashed_and_pruned() -> None:
    table = _plan().tables[0]
    slot = table.features[0]
    dedicated = np.array([-5, 42], dtype=np.int64)
    keys = np.array([42, -5, 7, 123456789], dtype=np.int64)
    hashed = id_keys_to_hashed(slot, keys, dedicated)
    expected_tail = (murmur3_64(keys[2:], 11) % np.uint64(98)).astype(np.int64)
    assert hashed.tolist() == [99, 98] + expected_tail.tolist()
    remap = np.arange(100, dtype=np.int64) % 79
    remap[expected_tail[0]] = -1
    rows = id_keys_to_rows(table, "ad_id", keys, dedicated, remap)
    assert rows[2] == table.fallback_row
    assert rows[0] == 99 % 79
    assert hashed_to_rows(np.array([expected_tail[0]]), remap).tolist() == [-1]
    with pytest.raises(ValueError, match="pass its remap"):
        id_keys_to_rows(table, "ad_id", keys, dedicated)


def test_rows_to_local_rows() -> None:
    table = _plan().tables[0]
    shard, local = rows_to_local_rows(table, np.array([0, 39, 40, 79]))
    assert shard.tolist() == [0, 0, 1, 1] and local.tolist() == [0, 39, 0, 39]


def test_precision_errors_round_trip_and_bare_form(tmp_path: Path) -> None:
    errors = {"ad_id": {Precision.FP16: 0.001, Precision.INT8: 0.01}}
    write_precision_errors(errors, tmp_path / "e.json")
    assert read_precision_errors(tmp_path / "e.json") == errors
    (tmp_path / "bare.json").write_text('{"t": {"int4": 0.2}}')
    assert read_precision_errors(tmp_path / "bare.json") == {"t": {Precision.INT4: 0.2}}
    (tmp_path / "bad.json").write_text('{"t": {"int3": 0.2, "fp16": -1}}')
    with pytest.raises(InputError) as err:
        read_precision_errors(tmp_path / "bad.json")
    assert "t.int3" in str(err.value) and "t.fp16" in str(err.value)


def test_plan_to_json_has_issue_fields() -> None:
    doc = plan_to_json(_plan())
    t = doc["tables"][0]
    assert {"name", "features", "rows", "dim", "precision", "shards"} <= set(t)
    assert {"rank", "memory_bytes", "used_bytes"} <= set(doc["devices"][0])
