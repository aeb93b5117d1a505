"""Precision calibration: error ordering, exact fp32, determinism, pooling kinds, odd dims,
per-feature entries, the gathered-rows shortcut, and the errors file the planner reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adrank.errors import InputError, PlanError, PlanErrorKind
from adrank.planfile import read_precision_errors
from adrank.types import PoolingType, Precision, ShardingType
from embed_store.calibrate import calibrate, write_calibration
from embed_store.checkpoint import init_checkpoint, save_checkpoint
from embed_store.quantize import TbeTable, build_tbe
from sharding_planner.precision import choose_precision
from sharding_planner.types import PlannerConfig
from tests.plan_builders import feature, make_plan, table

ST = ShardingType
P = Precision
ALL = (P.FP32, P.FP16, P.INT8, P.INT4)


def _plan(fingerprint: str = "sha256:cal"):
    return make_plan(
        [
            table(
                "t_ads",
                [
                    feature("ad", 1, 5000, pooling_factor=4.0, traffic_share=0.6),
                    feature("campaign", 2, 5000, pooling_factor=1.0, traffic_share=0.3),
                    feature("never", 3, 5000, pooling_factor=2.0, traffic_share=0.0),
                ],
                5000,
                16,
                ST.ROW_WISE,
                [(0, 0, 2500, 0, 16), (1, 2500, 2500, 0, 16)],
            ),
            table(
                "t_user",
                [feature("user", 1, 300, pooling=PoolingType.MEAN, pooling_factor=3.0)],
                300,
                8,
                ST.COLUMN_WISE,
                [(0, 0, 300, 0, 4), (1, 0, 300, 4, 4)],
                pooling=PoolingType.MEAN,
            ),
        ],
        2,
        fingerprint=fingerprint,
    )


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory):
    return init_checkpoint(tmp_path_factory.mktemp("cal") / "ckpt", _plan(), seed=3)


def test_errors_grow_as_bits_shrink_and_fp32_is_exact(ckpt) -> None:
    result = calibrate(ckpt, _plan(), precisions=ALL, num_bags=512)
    for name in ("t_ads", "t_user"):
        e = result.errors[name]
        assert e[P.FP32] == 0.0
        assert e[P.INT4] > e[P.INT8] > e[P.FP16] > 0
        # Orders of magnitude expected from the number formats on uniform weights.
        assert e[P.FP16] < 1e-3 and e[P.INT8] < 2e-2 and e[P.INT4] < 0.2
        assert set(result.timings_ms[name]) == set(ALL)
        assert all(ms > 0 for ms in result.timings_ms[name].values())
    assert (result.num_bags, result.seed, result.plan_fingerprint) == (512, 0, "sha256:cal")


def test_same_seed_same_errors_other_seed_other_errors(ckpt) -> None:
    a = calibrate(ckpt, _plan(), num_bags=256, seed=11)
    b = calibrate(ckpt, _plan(), num_bags=256, seed=11)
    c = calibrate(ckpt, _plan(), num_bags=256, seed=12)
    assert a.errors == b.errors and a.feature_errors == b.feature_errors
    assert a.errors != c.errors
    assert set(a.errors["t_ads"]) == {P.FP16, P.INT8, P.INT4}  # the defaults, no fp32


def test_per_feature_errors_and_a_feature_without_traffic(ckpt) -> None:
    result = calibrate(ckpt, _plan(), num_bags=512)
    fe = result.feature_errors
    assert set(fe) == {"ad", "campaign", "never", "user"}
    # "never" has no traffic, so it gets no bags and inherits its table's errors.
    assert fe["never"] == result.errors["t_ads"]
    assert fe["ad"] != result.errors["t_ads"] and fe["campaign"] != fe["ad"]
    # A single-feature table: the feature's bags are the table's.
    assert fe["user"] == result.errors["t_user"]


def test_bags_of_one_id_give_the_same_error_for_sum_mean_and_sequence(tmp_path: Path) -> None:
    def plan(pooling: PoolingType):
        f = feature("f", 1, 400, pooling=pooling, pooling_factor=1e-9)
        return make_plan(
            [table("t", [f], 400, 8, ST.TABLE_WISE, [(0, 0, 400, 0, 8)], pooling=pooling)], 1
        )

    results = []
    for pooling in (PoolingType.SUM, PoolingType.MEAN, PoolingType.NONE):
        ck = init_checkpoint(tmp_path / pooling.value, plan(pooling), seed=1)
        results.append(calibrate(ck, plan(pooling), num_bags=300, seed=5).errors["t"])
    assert results[0] == results[1] == results[2]
    assert results[0][P.INT8] > 0


def test_mean_pooling_differs_from_sum_on_longer_bags(tmp_path: Path) -> None:
    def plan(pooling: PoolingType):
        f = feature("f", 1, 400, pooling=pooling, pooling_factor=6.0)
        return make_plan(
            [table("t", [f], 400, 8, ST.TABLE_WISE, [(0, 0, 400, 0, 8)], pooling=pooling)], 1
        )

    weights = {"t": np.random.default_rng(0).uniform(-1, 1, (400, 8)).astype(np.float32)}
    errs = {}
    for pooling in (PoolingType.SUM, PoolingType.MEAN):
        ck = save_checkpoint(tmp_path / pooling.value, plan(pooling), weights)
        errs[pooling] = calibrate(ck, plan(pooling), num_bags=300).errors["t"][P.INT8]
    # MEAN divides each bag by its length, which reweights bags in the Frobenius norm.
    assert errs[PoolingType.SUM] != errs[PoolingType.MEAN]
    assert 0.5 < errs[PoolingType.SUM] / errs[PoolingType.MEAN] < 2


@pytest.mark.parametrize(
    ("dim", "measured"),
    [(6, {P.FP32, P.FP16, P.INT8}), (5, {P.FP32, P.FP16}), (12, set(ALL))],
)
def test_precisions_fbgemm_cannot_store_are_left_out(
    tmp_path: Path, dim: int, measured: set[Precision]
) -> None:
    plan = make_plan(
        [table("t", [feature("f", 1, 50)], 50, dim, ST.TABLE_WISE, [(0, 0, 50, 0, dim)])], 1
    )
    ck = init_checkpoint(tmp_path / "c", plan)
    result = calibrate(ck, plan, precisions=ALL, num_bags=64)
    assert set(result.errors["t"]) == measured


def test_gathered_rows_give_the_full_tables_pooled_values() -> None:
    # The calibration's shortcut: quantization is row-wise, so a kernel over the sampled rows
    # (ids re-indexed) pools exactly what a kernel over the whole table pools.
    rng = np.random.default_rng(4)
    weights = rng.standard_normal((1000, 16)).astype(np.float32)
    ids = rng.integers(0, 1000, size=200)
    offsets = torch.tensor([0, 3, 3 + 50, 120, 200])
    rows, local = np.unique(ids, return_inverse=True)
    for p in ALL:
        full = build_tbe([TbeTable("t", 1000, 16, p)], [weights])(torch.from_numpy(ids), offsets)
        small = build_tbe([TbeTable("t", len(rows), 16, p)], [weights[rows]])(
            torch.from_numpy(local.reshape(-1).astype(np.int64)), offsets
        )
        assert torch.equal(full, small), p


def test_refuses_a_checkpoint_of_another_plan(ckpt) -> None:
    with pytest.raises(PlanError) as e:
        calibrate(ckpt, _plan(fingerprint="sha256:other"))
    assert e.value.kind is PlanErrorKind.PLAN_MISMATCH
    assert "sha256:cal" in str(e.value) and "sha256:other" in str(e.value)


def test_bad_arguments_are_reported_together(ckpt) -> None:
    with pytest.raises(InputError) as e:
        calibrate(ckpt, _plan(), num_bags=0, seed=-1, precisions=())
    msg = str(e.value)
    assert "3 problems" in msg and "num_bags" in msg and "seed" in msg and "precisions" in msg


def test_errors_file_round_trips_and_the_planner_uses_it(ckpt, tmp_path: Path) -> None:
    result = calibrate(ckpt, _plan(), num_bags=512)
    path = tmp_path / "errors.json"
    write_calibration(result, path)
    assert json.loads(path.read_text())["kind"] == "adrank.precision_errors"
    read = read_precision_errors(path)
    assert read == {**result.feature_errors, **result.errors}
    e = result.errors["t_ads"]
    threshold = (e[P.INT8] + e[P.INT4]) / 2
    config = PlannerConfig(max_precision_error=threshold)
    # By the table's entry, and, for a table named otherwise (a re-plan may rename or merge
    # tables), by its features' entries.
    assert choose_precision("t_ads", ["ad"], 16, read, config).precision is P.INT8
    by_features = choose_precision("renamed", ["ad", "campaign"], 16, read, config)
    assert by_features.precision is P.INT8 and by_features.measured_error is not None


def test_a_table_entry_wins_over_a_feature_of_the_same_name(ckpt, tmp_path: Path) -> None:
    result = calibrate(ckpt, _plan(), num_bags=128)
    clash = type(result)(
        errors=result.errors,
        feature_errors={**result.feature_errors, "t_user": {P.FP16: 0.5}},
        timings_ms=result.timings_ms,
        num_bags=result.num_bags,
        seed=result.seed,
        plan_fingerprint=result.plan_fingerprint,
    )
    write_calibration(clash, tmp_path / "e.json")
    assert read_precision_errors(tmp_path / "e.json")["t_user"] == result.errors["t_user"]
