"""The lookup path in one process: FBGEMM kernels per precision, the sharded decomposition
(routing, partial sums, column slices) against the unsharded reference and a numpy oracle,
request-level reuse, pruning remaps and input validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adrank.errors import InputError
from adrank.types import PoolingType, Precision, ShardingType
from embed_store.batch import JaggedIds, LookupBatch
from embed_store.layout import LookupLayout
from embed_store.local_lookup import LocalLookup
from embed_store.quantize import TbeTable, build_tbe, dequantize
from tests.plan_builders import feature, make_plan, mixed_plan, table

ROWS = {"f_tw": 100, "f_rw": 60, "f_rw_user": 60, "f_cw": 50, "f_twrw": 41}


def _weights(plan, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        t.name: rng.standard_normal((t.num_rows, t.dim)).astype(np.float32) for t in plan.tables
    }


def _reader(weights):
    return lambda t, r0, r1, c0, c1: weights[t][r0:r1, c0:c1]


def _oracle(plan, weights, feature_name: str, bags: list[list[int]], remaps=None) -> np.ndarray:
    """Pooled output by the definition: dequantized rows summed (or averaged) per bag."""
    t, _ = plan.table_of_feature(feature_name)
    w = dequantize(torch.from_numpy(weights[t.name]), t.precision).numpy()
    out = np.zeros((len(bags), t.dim), dtype=np.float64)
    for i, bag in enumerate(bags):
        rows = [int(remaps[t.name][h]) if remaps and t.name in remaps else h for h in bag]
        rows = [t.fallback_row if r < 0 and t.fallback_row is not None else r for r in rows]
        for r in rows:
            if r >= 0:
                out[i] += w[r]
        if t.pooling is PoolingType.MEAN and bag:
            out[i] /= len(bag)
    return out


@pytest.mark.parametrize("precision", list(Precision))
def test_kernel_reads_what_dequantize_says(precision: Precision) -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((40, 8)).astype(np.float32)
    tbe = build_tbe([TbeTable("t", 40, 8, precision)], [w])
    idx = torch.tensor([3, 7, 7, 39, 0, -1], dtype=torch.int64)
    off = torch.tensor([0, 3, 4, 6], dtype=torch.int64)
    got = tbe(idx, off).numpy()
    dq = dequantize(torch.from_numpy(w), precision).numpy()
    want = np.stack([dq[[3, 7, 7]].sum(0), dq[[39]].sum(0), dq[[0]].sum(0)])  # -1 is skipped
    np.testing.assert_allclose(got, want, atol=1e-5)
    if precision is Precision.FP32:
        assert np.array_equal(dq, w)
    else:
        assert 0 < np.abs(dq - w).max() < 1.0


def test_layout_covers_every_column_and_marks_row_splits() -> None:
    plan = mixed_plan()
    layout = LookupLayout.from_plan(plan, threads_per_rank=2)
    assert layout.features == ("f_cw", "f_rw", "f_rw_user", "f_tw", "f_twrw")
    assert layout.total_cols == 16 + 8 + 8 + 8 + 4
    assert layout.overlapping  # row-wise shards add partial sums
    cols = torch.cat([r.out_cols for r in layout.ranks]).tolist()
    assert sorted(set(cols)) == list(range(layout.total_cols))
    # rank 0 holds rw[0:30], cw[:, 8:16], twrw[0:21]: fp32 units share one torch embedding_bag
    # group (it threads inside a call); quantized units split over FBGEMM kernel groups.
    assert [len(g.units) for g in layout.ranks[0].groups] == [3]
    int8 = LookupLayout.from_plan(mixed_plan(precision=Precision.INT8), threads_per_rank=2)
    assert sorted(len(g.units) for g in int8.ranks[0].groups) == [1, 2]
    single = LookupLayout.single_device(plan)
    assert single.world_size == 1 and not single.overlapping
    assert all(u.covers_all_rows for g in single.ranks[0].groups for u in g.units)


def _random_batch(rng: np.random.Generator, n_cand: int, n_req: int) -> LookupBatch:
    cand = {
        f: [list(rng.integers(0, ROWS[f], rng.integers(0, 5))) for _ in range(n_cand)]
        for f in ("f_twrw", "f_tw", "f_cw", "f_rw")
    }
    req = {"f_rw_user": [list(rng.integers(0, 60, rng.integers(0, 6))) for _ in range(n_req)]}
    cr = torch.from_numpy(rng.integers(0, n_req, n_cand)) if n_req else None
    return LookupBatch(
        candidates=JaggedIds.from_lists(cand),
        requests=JaggedIds.from_lists(req) if n_req else None,
        candidate_request=cr,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_cand=st.integers(0, 12),
    n_req=st.integers(0, 3),
    threads=st.integers(1, 3),
)
def test_sharded_decomposition_equals_unsharded_and_the_oracle(
    seed: int, n_cand: int, n_req: int, threads: int
) -> None:
    plan = mixed_plan()
    weights = _weights(plan)
    rng = np.random.default_rng(seed)
    batch = _random_batch(rng, n_cand, n_req)
    sharded = LocalLookup(
        plan, LookupLayout.from_plan(plan, threads_per_rank=threads), _reader(weights)
    )
    single = LocalLookup.single_device(plan, _reader(weights), threads=threads)
    a, b = sharded.lookup(batch), single.lookup(batch)
    assert a.candidates.keys() == ["f_twrw", "f_tw", "f_cw", "f_rw"]
    assert torch.allclose(a.candidates.values(), b.candidates.values(), atol=1e-6, rtol=0)
    per_feature = a.candidates.to_dict()
    for f in a.candidates.keys():  # noqa: SIM118 (KeyedTensor is not a dict)
        bags = _bags(batch.candidates, f)
        np.testing.assert_allclose(
            per_feature[f].numpy(), _oracle(plan, weights, f, bags), atol=1e-5
        )
    if n_req:
        assert a.requests is not None and a.requests.values().shape == (n_req, 8)
        assert torch.allclose(a.requests.values(), b.requests.values(), atol=1e-6, rtol=0)
        want = _oracle(plan, weights, "f_rw_user", _bags(batch.requests, "f_rw_user"))
        np.testing.assert_allclose(a.requests.values().numpy(), want, atol=1e-5)
        broadcast = a.request_for_candidates()
        assert broadcast is not None
        assert torch.equal(broadcast.values(), a.requests.values()[batch.candidate_request])
    sharded.close()
    single.close()


def _bags(ids: JaggedIds, f: str) -> list[list[int]]:
    k = ids.features.index(f)
    lengths = ids.lengths.view(len(ids.features), ids.batch_size)
    start = int(lengths[:k].sum())
    out = []
    for n in lengths[k].tolist():
        out.append(ids.values[start : start + n].tolist())
        start += n
    return out


def test_request_features_are_looked_up_once_per_request_not_per_candidate() -> None:
    plan = mixed_plan()
    lookup = LocalLookup(plan, LookupLayout.from_plan(plan), _reader(_weights(plan)))
    cand = JaggedIds.from_lists({"f_tw": [[1]] * 500})
    req = JaggedIds.from_lists({"f_rw_user": [[1, 2, 3, 4]]})
    wire = lookup.frontend.encode(LookupBatch(cand, req))
    # 500 candidate ids + 4 user ids travel, not 500 x 4 user ids
    assert wire.rows.numel() == 504
    fi = lookup.layout.feature_index()["f_rw_user"]
    assert wire.lengths.view(-1, wire.batch)[fi].tolist() == [4] + [0] * 499
    result = lookup.lookup(LookupBatch(cand, req))
    assert result.requests is not None and result.requests.values().shape == (1, 8)
    expanded = result.request_for_candidates()
    assert expanded is not None and expanded.values().shape == (500, 8)
    assert expanded.values().stride(0) == 0  # a broadcast view, not 500 copies


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.INT8, Precision.INT4])
def test_quantized_tables_match_unsharded_and_stay_near_fp32(precision: Precision) -> None:
    plan = mixed_plan(precision=precision)
    fp32 = mixed_plan()
    weights = _weights(plan, seed=3)
    batch = _random_batch(np.random.default_rng(7), 16, 2)
    sharded = LocalLookup(plan, LookupLayout.from_plan(plan), _reader(weights)).lookup(batch)
    single = LocalLookup.single_device(plan, _reader(weights)).lookup(batch)
    exact = LocalLookup.single_device(fp32, _reader(weights)).lookup(batch)
    bound = {Precision.FP16: 1e-3, Precision.INT8: 2e-2, Precision.INT4: 0.3}[precision]
    got, one, ref = (r.candidates.to_dict() for r in (sharded, single, exact))
    for f in got:
        if f == "f_cw" and precision.is_quantized:
            # Each column shard is quantized row-wise over its own columns (its own scale and
            # bias), so it differs from the whole-row quantization by quantization error only.
            assert float((got[f] - one[f]).norm() / one[f].norm()) < bound
        else:  # same stored values; only the order of row-wise partial sums differs
            assert torch.allclose(got[f], one[f], atol=1e-5), f
        rel = float((got[f] - ref[f]).norm() / ref[f].norm())
        assert 0 < rel < bound, (f, rel)


def test_pruned_ids_read_the_fallback_row_or_nothing(tmp_path: Path) -> None:
    remap = np.array([0, -1, 1, -1, 2, 3], dtype=np.int64)  # 6 hashed ids -> 4 rows
    t_fb = table(
        "t_fb",
        [feature("f_fb", 1, 6)],
        4,
        4,
        ShardingType.ROW_WISE,
        [(0, 0, 2, 0, 4), (1, 2, 2, 0, 4)],
        hashed_rows=6,
        fallback_row=3,
    )
    t_none = table(
        "t_none",
        [feature("f_none", 2, 6)],
        4,
        4,
        ShardingType.TABLE_WISE,
        [(1, 0, 4, 0, 4)],
        hashed_rows=6,
    )
    plan = make_plan([t_fb, t_none], 2)
    weights = _weights(plan, seed=5)
    remaps = {"t_fb": remap, "t_none": remap}
    batch = LookupBatch(JaggedIds.from_lists({"f_fb": [[1, 2], [3]], "f_none": [[1, 2], [3]]}))
    for lookup in (
        LocalLookup(plan, LookupLayout.from_plan(plan), _reader(weights), remaps),
        LocalLookup.single_device(plan, _reader(weights), remaps),
    ):
        out = lookup.lookup(batch).candidates.to_dict()
        w_fb, w_none = weights["t_fb"], weights["t_none"]
        np.testing.assert_allclose(out["f_fb"].numpy(), [w_fb[3] + w_fb[1], w_fb[3]], atol=1e-6)
        np.testing.assert_allclose(out["f_none"].numpy(), [w_none[1], np.zeros(4)], atol=1e-6)


def test_bad_batches_name_the_field_and_compute_nothing() -> None:
    plan = mixed_plan()
    lookup = LocalLookup.single_device(plan, _reader(_weights(plan)))
    cases = [
        (LookupBatch(JaggedIds.from_lists({"nope": [[1]]})), "nope"),
        (LookupBatch(JaggedIds.from_lists({"f_tw": [[100]]})), "f_tw"),
        (LookupBatch(JaggedIds.from_lists({"f_cw": [[-1]]})), "f_cw"),
        (
            LookupBatch(JaggedIds(("f_tw",), torch.tensor([1, 2]), torch.tensor([1]), 1)),
            "candidates.values",
        ),
        (
            LookupBatch(
                JaggedIds.from_lists({"f_tw": [[1]]}),
                JaggedIds.from_lists({"f_tw": [[2]]}),
            ),
            "both per candidate and per request",
        ),
        (
            LookupBatch(
                JaggedIds.from_lists({"f_tw": [[1], [2]]}),
                JaggedIds.from_lists({"f_rw_user": [[2]]}),
                torch.tensor([0, 1]),
            ),
            "candidate_request",
        ),
    ]
    for batch, culprit in cases:
        with pytest.raises(InputError) as info:
            lookup.lookup(batch)
        assert culprit in str(info.value)
        assert info.value.exit_code == 2


def _sequence_batch(rng: np.random.Generator, n_req: int, n_cand: int) -> LookupBatch:
    rows = {"hist_ads": 70, "hist_cats": 20, "hist_geo": 12, "hist_ads_cand": 70, "f_pool": 30}
    req = {
        f: [list(rng.integers(0, rows[f], rng.integers(0, 7))) for _ in range(n_req)]
        for f in ("hist_ads", "hist_cats", "hist_geo")
    }
    cand = {
        f: [list(rng.integers(0, rows[f], rng.integers(0, 4))) for _ in range(n_cand)]
        for f in ("f_pool", "hist_ads_cand")
    }
    return LookupBatch(JaggedIds.from_lists(cand), JaggedIds.from_lists(req))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequence_lookups_return_one_row_per_id_sharded_or_not(seed: int) -> None:
    from tests.plan_builders import sequence_plan

    plan = sequence_plan()
    weights = _weights(plan, seed=seed)
    batch = _sequence_batch(np.random.default_rng(seed), 3, 5)
    sharded = LocalLookup(plan, LookupLayout.from_plan(plan), _reader(weights)).lookup(batch)
    single = LocalLookup.single_device(plan, _reader(weights)).lookup(batch)
    assert sorted(sharded.sequences) == ["hist_ads", "hist_ads_cand", "hist_cats", "hist_geo"]
    assert sharded.candidates.keys() == ["f_pool"]  # sequence features are not pooled columns
    for f, jt in sharded.sequences.items():
        table_name = plan.table_of_feature(f)[0].name
        source = (
            batch.requests if f.startswith("hist_") and f != "hist_ads_cand" else batch.candidates
        )
        ids = [i for bag in _bags(source, f) for i in bag]
        assert jt.values().shape == (len(ids), plan.table(table_name).dim)
        np.testing.assert_array_equal(jt.values().numpy(), weights[table_name][ids])
        assert jt.lengths().tolist() == [len(b) for b in _bags(source, f)]
        assert torch.equal(jt.values(), single.sequences[f].values())
