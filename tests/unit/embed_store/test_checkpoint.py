"""The embedding checkpoint: save/open round trips, block reads across shards, deterministic init
across layouts, resharding, plan checks, and refusal of corrupt directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embed_store.checkpoint as ckmod
from adrank.errors import InputError, NotFoundError, PlanError, PlanErrorKind
from adrank.types import PoolingType, Precision, ShardingType, ShardSpec
from embed_store.checkpoint import (
    CHECKPOINT_KIND,
    MANIFEST_FILE_NAME,
    init_checkpoint,
    open_checkpoint,
    reshard_checkpoint,
    save_checkpoint,
)
from tests.plan_builders import feature, make_plan, table

ST = ShardingType


def _plan_a(fingerprint: str = "sha256:plan-a", rows: int = 10_000):
    """Row-wise "big" (split at an offset that is not a multiple of the init block), column-wise
    "wide", table-wise "small"."""
    cut = rows // 3
    return make_plan(
        [
            table(
                "big",
                [feature("f_big", 1, rows)],
                rows,
                8,
                ST.ROW_WISE,
                [(0, 0, cut, 0, 8), (1, cut, rows - cut, 0, 8)],
                precision=Precision.INT8,
            ),
            table(
                "wide",
                [feature("f_wide", 1, 30, pooling=PoolingType.MEAN)],
                30,
                12,
                ST.COLUMN_WISE,
                [(1, 0, 30, 0, 5), (0, 0, 30, 5, 7)],
                pooling=PoolingType.MEAN,
            ),
            table("small", [feature("f_small", 1, 7)], 7, 4, ST.TABLE_WISE, [(1, 0, 7, 0, 4)]),
        ],
        2,
        fingerprint=fingerprint,
    )


def _plan_b(fingerprint: str = "sha256:plan-b", rows: int = 10_000):
    """Same tables as :func:`_plan_a`, other shards (3 ranks)."""
    return make_plan(
        [
            table("big", [feature("f_big", 1, rows)], rows, 8, ST.TABLE_WISE, [(2, 0, rows, 0, 8)]),
            table(
                "wide",
                [feature("f_wide", 1, 30, pooling=PoolingType.MEAN)],
                30,
                12,
                ST.ROW_WISE,
                [(0, 0, 11, 0, 12), (1, 11, 11, 0, 12), (2, 22, 8, 0, 12)],
                pooling=PoolingType.MEAN,
            ),
            table(
                "small",
                [feature("f_small", 1, 7)],
                7,
                4,
                ST.COLUMN_WISE,
                [(0, 0, 7, 0, 2), (1, 0, 7, 2, 2)],
            ),
        ],
        3,
        fingerprint=fingerprint,
    )


def _weights(plan, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        t.name: rng.standard_normal((t.num_rows, t.dim)).astype(np.float32) for t in plan.tables
    }


@pytest.fixture()
def saved(tmp_path: Path):
    plan = _plan_a()
    weights = _weights(plan)
    return save_checkpoint(tmp_path / "ckpt", plan, weights), plan, weights


def test_save_writes_manifest_and_one_mappable_file_per_shard(saved) -> None:
    ckpt, plan, weights = saved
    doc = json.loads((ckpt.directory / MANIFEST_FILE_NAME).read_text())
    assert doc["kind"] == CHECKPOINT_KIND and doc["format_version"] == 1
    assert doc["plan_fingerprint"] == "sha256:plan-a" == ckpt.plan_fingerprint
    assert [t["name"] for t in doc["tables"]] == ["big", "small", "wide"]
    big = doc["tables"][0]
    assert (big["num_rows"], big["dim"], big["dtype"], big["precision"], big["pooling"]) == (
        10_000,
        8,
        "float32",
        "int8",
        "SUM",
    )
    assert [s["file"] for s in big["shards"]] == [
        "tables/big/r0_c0.npy",
        "tables/big/r3333_c0.npy",
    ]
    for t in plan.tables:
        for s in t.shards:
            arr = np.load(
                ckpt.directory / f"tables/{t.name}/r{s.row_offset}_c{s.col_offset}.npy",
                mmap_mode="r",
            )
            assert isinstance(arr, np.memmap) and arr.dtype == np.float32
            assert arr.shape == (s.num_rows, s.num_cols) and arr.flags.c_contiguous
            expected = weights[t.name][
                s.row_offset : s.row_offset + s.num_rows, s.col_offset : s.col_offset + s.num_cols
            ]
            np.testing.assert_array_equal(arr, expected)
    assert ckpt.nbytes == sum(p.stat().st_size for p in ckpt.directory.rglob("*.npy"))
    open_checkpoint(ckpt.directory, verify=True)  # the recorded hashes are the files'


def test_open_round_trip_reads_tables_shapes_and_shards(saved) -> None:
    _, plan, weights = saved
    ckpt = open_checkpoint(saved[0].directory)
    assert ckpt.table_names == ("big", "small", "wide")
    assert ckpt.table_shape("wide") == (30, 12)
    assert ckpt.table("wide").pooling is PoolingType.MEAN
    for name, w in weights.items():
        np.testing.assert_array_equal(ckpt.read_table(name), w)
    other = _plan_b()
    for t in other.tables:  # shards of another layout are assembled from the stored ones
        for s in t.shards:
            np.testing.assert_array_equal(
                ckpt.read_shard(t.name, s),
                weights[t.name][
                    s.row_offset : s.row_offset + s.num_rows,
                    s.col_offset : s.col_offset + s.num_cols,
                ],
            )
    ckpt.check_plan(plan)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_read_block_and_rows_match_the_full_table(saved, data: st.DataObject) -> None:
    ckpt, _, weights = saved
    name = data.draw(st.sampled_from(["big", "wide", "small"]))
    rows, dim = ckpt.table_shape(name)
    r0 = data.draw(st.integers(0, rows))
    r1 = data.draw(st.integers(r0, min(rows, r0 + 5000)))
    c0 = data.draw(st.integers(0, dim))
    c1 = data.draw(st.integers(c0, dim))
    block = ckpt.read_block(name, r0, r1, c0, c1)
    assert block.dtype == np.float32 and block.flags.c_contiguous
    np.testing.assert_array_equal(block, weights[name][r0:r1, c0:c1])
    picks = np.array(data.draw(st.lists(st.integers(0, rows - 1), max_size=40)), dtype=np.int64)
    np.testing.assert_array_equal(ckpt.read_rows(name, picks), weights[name][picks])


def test_reads_outside_the_table_or_of_unknown_tables_are_refused(saved) -> None:
    ckpt = saved[0]
    with pytest.raises(InputError, match="'small'"):
        ckpt.read_block("small", 0, 8, 0, 4)
    with pytest.raises(InputError, match=r"\[0, 7\)"):
        ckpt.read_rows("small", np.array([0, 7]))
    with pytest.raises(NotFoundError, match="'nope'") as e:
        ckpt.read_table("nope")
    assert e.value.exit_code == 2


def test_save_accepts_tensors_of_any_float_dtype(tmp_path: Path) -> None:
    plan = _plan_a(rows=50)
    weights = _weights(plan)
    tensors = {
        "big": torch.from_numpy(weights["big"]).requires_grad_(),
        "wide": torch.from_numpy(weights["wide"]).double(),
        "small": weights["small"].astype(np.float16),
    }
    ckpt = save_checkpoint(tmp_path / "c", plan, tensors)
    np.testing.assert_array_equal(ckpt.read_table("big"), weights["big"])
    np.testing.assert_array_equal(ckpt.read_table("wide"), weights["wide"])
    np.testing.assert_array_equal(
        ckpt.read_table("small"), weights["small"].astype(np.float16).astype(np.float32)
    )


def test_save_reports_every_bad_table_at_once_and_writes_nothing(tmp_path: Path) -> None:
    plan = _plan_a(rows=50)
    weights = _weights(plan)
    weights["wide"] = weights["wide"][:, :11]
    weights["big"][3, 2] = np.nan
    del weights["small"]
    weights["ghost"] = np.zeros((2, 2), np.float32)
    with pytest.raises(InputError) as e:
        save_checkpoint(tmp_path / "c", plan, weights)
    msg = str(e.value)
    assert "4 problems" in msg
    assert "'wide'" in msg and "(30, 12)" in msg and "(30, 11)" in msg
    assert "'big'" in msg and "NaN" in msg
    assert "'small'" in msg and "'ghost'" in msg
    assert e.value.exit_code == 2
    assert not (tmp_path / "c").exists() and list(tmp_path.iterdir()) == []


def test_save_refuses_integer_weights_and_float64_overflow(tmp_path: Path) -> None:
    plan = _plan_a(rows=50)
    weights = _weights(plan)
    weights["small"] = np.ones((7, 4), dtype=np.int64)
    weights["wide"] = np.full((30, 12), 1e300)  # finite as float64, inf as float32
    with pytest.raises(InputError) as e:
        save_checkpoint(tmp_path / "c", plan, weights)
    assert "'small'" in str(e.value) and "int64" in str(e.value)
    assert "'wide'" in str(e.value) and "360 weights" in str(e.value)


def test_a_failed_write_leaves_the_previous_checkpoint_whole(
    saved, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, plan, weights = saved
    before = {p: p.read_bytes() for p in ckpt.directory.rglob("*") if p.is_file()}
    calls = []
    real = ckmod._write_npy

    def failing(path, shape, blocks):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(path, shape, blocks)

    monkeypatch.setattr(ckmod, "_write_npy", failing)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(ckpt.directory, plan, _weights(plan, seed=1))
    after = {p: p.read_bytes() for p in ckpt.directory.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in ckpt.directory.parent.iterdir()] == ["ckpt"]  # no temp leftovers
    np.testing.assert_array_equal(open_checkpoint(ckpt.directory).read_table("big"), weights["big"])


def test_init_gives_the_same_values_whatever_the_layout(tmp_path: Path) -> None:
    a = init_checkpoint(tmp_path / "a", _plan_a(), seed=7)
    b = init_checkpoint(tmp_path / "b", _plan_b(), seed=7)
    other_seed = init_checkpoint(tmp_path / "c", _plan_a(), seed=8)
    for name in a.table_names:
        np.testing.assert_array_equal(a.read_table(name), b.read_table(name))
        assert not np.array_equal(a.read_table(name), other_seed.read_table(name))
    big = a.read_table("big")
    bound = 1 / np.sqrt(8)
    assert -bound <= big.min() < -0.99 * bound and 0.99 * bound < big.max() < bound
    assert abs(float(big.mean())) < 0.01
    # Rows of different blocks are not copies of each other.
    assert not np.array_equal(big[:4096], big[4096:8192])


def test_init_scale_progress_and_validation(tmp_path: Path) -> None:
    plan = _plan_a(rows=9000)
    seen: list[int] = []
    ckpt = init_checkpoint(tmp_path / "a", plan, seed=1, scale=0.5, progress=seen.append)
    assert sum(seen) == sum(s.num_rows for t in plan.tables for s in t.shards)
    assert 0.49 < float(np.abs(ckpt.read_table("big")).max()) < 0.5
    with pytest.raises(InputError) as e:
        init_checkpoint(tmp_path / "b", plan, seed=-1, scale=0.0)
    assert "seed" in str(e.value) and "scale" in str(e.value)
    assert not (tmp_path / "b").exists()


def test_reshard_copies_values_into_the_target_layout(saved, tmp_path: Path) -> None:
    src, _, weights = saved
    target = _plan_b()
    seen: list[int] = []
    out = reshard_checkpoint(src, target, tmp_path / "out", progress=seen.append)
    assert out.plan_fingerprint == "sha256:plan-b"
    for t in target.tables:
        assert tuple(s.spec for s in out.table(t.name).shards) == t.shards
        np.testing.assert_array_equal(out.read_table(t.name), weights[t.name])
    assert sum(seen) == sum(s.num_rows for t in target.tables for s in t.shards)
    out.check_plan(target)
    open_checkpoint(out.directory, verify=True)


def test_reshard_in_place_replaces_the_source_directory(saved) -> None:
    src, _, weights = saved
    out = reshard_checkpoint(src, _plan_b(), src.directory)
    assert out.directory == src.directory
    again = open_checkpoint(src.directory)
    assert again.plan_fingerprint == "sha256:plan-b"
    np.testing.assert_array_equal(again.read_table("wide"), weights["wide"])


def test_reshard_refuses_other_tables_naming_each(saved, tmp_path: Path) -> None:
    src = saved[0]
    target = make_plan(
        [
            table("big", [feature("f_big", 1, 9000)], 9000, 8, ST.TABLE_WISE, [(0, 0, 9000, 0, 8)]),
            table("wide", [feature("f_wide", 1, 30)], 30, 16, ST.TABLE_WISE, [(0, 0, 30, 0, 16)]),
            table("new", [feature("f_new", 1, 3)], 3, 4, ST.TABLE_WISE, [(0, 0, 3, 0, 4)]),
        ],
        1,
    )
    with pytest.raises(PlanError) as e:
        reshard_checkpoint(src, target, tmp_path / "out")
    msg = str(e.value)
    assert e.value.kind is PlanErrorKind.PLAN_MISMATCH and e.value.exit_code == 2
    assert "'big' is 10000 x 8 in the checkpoint but 9000 x 8 in the plan" in msg
    assert "'wide' is 30 x 12 in the checkpoint but 30 x 16 in the plan" in msg
    assert "not in the checkpoint: new" in msg and "not in the plan: small" in msg
    assert not (tmp_path / "out").exists()


def test_check_plan_refuses_another_fingerprint_with_both_and_a_hint(saved) -> None:
    ckpt, plan, _ = saved
    with pytest.raises(PlanError) as e:
        ckpt.check_plan(_plan_a(fingerprint="sha256:other"), source="plans/x")
    assert e.value.kind is PlanErrorKind.PLAN_MISMATCH
    assert "sha256:plan-a" in str(e.value) and "sha256:other" in str(e.value)
    assert e.value.hint is not None
    assert "adrank checkpoint reshard" in e.value.hint and "plans/x" in e.value.hint
    shrunk = _plan_a(rows=9000)  # same fingerprint, other rows
    with pytest.raises(PlanError, match=r"'big' is 10000 x 8 in the checkpoint but 9000 x 8"):
        ckpt.check_plan(shrunk)


# --------------------------------------------------------------------------------------------------
# Corrupt checkpoints
# --------------------------------------------------------------------------------------------------


def _edit_manifest(directory: Path, edit) -> None:
    path = directory / MANIFEST_FILE_NAME
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_missing_directory_or_manifest_is_not_found(tmp_path: Path, saved) -> None:
    with pytest.raises(NotFoundError, match="nowhere"):
        open_checkpoint(tmp_path / "nowhere")
    (saved[0].directory / MANIFEST_FILE_NAME).unlink()
    with pytest.raises(NotFoundError, match=MANIFEST_FILE_NAME):
        open_checkpoint(saved[0].directory)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(kind="adrank.plan"), "kind"),
        (lambda d: d.update(format_version=9), "format_version 9"),
        (lambda d: d["tables"][0].pop("dim"), r"tables\[0\]\.dim"),
        (lambda d: d["tables"][1].update(dtype="float16"), r"tables\[1\]\.dtype"),
        (lambda d: d["tables"][0]["shards"].pop(), r"'big': shards cover 26664 of its 80000"),
        (
            lambda d: d["tables"][0]["shards"][1].update(row_offset=3000),
            "'big': shards overlap",
        ),
        (
            lambda d: d["tables"][2]["shards"][0].update(file="../../etc/x.npy"),
            "not a relative path inside",
        ),
    ],
)
def test_malformed_manifests_name_the_field(saved, edit, expected: str) -> None:
    _edit_manifest(saved[0].directory, edit)
    with pytest.raises(InputError, match=expected) as e:
        open_checkpoint(saved[0].directory)
    assert MANIFEST_FILE_NAME in str(e.value)


def test_missing_shard_files_are_not_found_and_named(saved) -> None:
    d = saved[0].directory
    (d / "tables/big/r3333_c0.npy").unlink()
    (d / "tables/wide/r0_c5.npy").unlink()
    with pytest.raises(NotFoundError) as e:
        open_checkpoint(d)
    assert "r3333_c0.npy" in str(e.value) and "r0_c5.npy" in str(e.value)


def test_shard_files_of_the_wrong_shape_dtype_or_layout_are_named(saved) -> None:
    d = saved[0].directory
    np.save(d / "tables/small/r0_c0.npy", np.zeros((7, 3), np.float32))
    np.save(d / "tables/wide/r0_c0.npy", np.zeros((30, 5), np.float64))
    np.save(d / "tables/wide/r0_c5.npy", np.asfortranarray(np.zeros((30, 7), np.float32)))
    (d / "tables/big/r0_c0.npy").write_bytes(b"not an npy file")
    with pytest.raises(InputError) as e:
        open_checkpoint(d)
    msg = str(e.value)
    assert "4 problems" in msg
    assert "small/r0_c0.npy" in msg and "(7, 3)" in msg
    assert "wide/r0_c0.npy" in msg and "float64" in msg
    assert "wide/r0_c5.npy" in msg and "Fortran" in msg
    assert "big/r0_c0.npy" in msg


def test_verify_catches_changed_bytes_only_when_asked(saved) -> None:
    d = saved[0].directory
    path = d / "tables/small/r0_c0.npy"
    arr = np.load(path)
    arr[0, 0] += 1
    np.save(path, arr)
    open_checkpoint(d)  # shapes are right: opening without verify does not read the data
    with pytest.raises(InputError, match="small/r0_c0.npy") as e:
        open_checkpoint(d, verify=True)
    assert "corrupt" in str(e.value)


def test_table_names_unusable_as_directories_are_refused(tmp_path: Path) -> None:
    plan = make_plan(
        [table("a/b", [feature("f", 1, 3)], 3, 4, ST.TABLE_WISE, [(0, 0, 3, 0, 4)])], 1
    )
    with pytest.raises(InputError, match="'a/b'"):
        init_checkpoint(tmp_path / "c", plan)
    with pytest.raises(InputError, match="'a/b'"):
        save_checkpoint(tmp_path / "c", plan, {"a/b": np.zeros((3, 4), np.float32)})


def test_read_shard_of_a_foreign_spec_outside_the_table_is_refused(saved) -> None:
    with pytest.raises(InputError, match="'small'"):
        saved[0].read_shard("small", ShardSpec(0, 5, 3, 0, 4))


def test_a_checkpoint_is_refused_for_a_plan_pruned_with_another_remap(tmp_path: Path) -> None:
    """Same fingerprint and shapes, other row order: refused, naming both remaps."""
    import dataclasses

    from adrank.errors import PlanError
    from embed_store.checkpoint import init_checkpoint, open_checkpoint
    from tests.plan_builders import mixed_plan

    plan = mixed_plan()
    pruned = dataclasses.replace(
        plan,
        tables=tuple(
            dataclasses.replace(t, remap_file="remaps/t_tw-aaaaaaaaaaaa.npy")
            if t.name == "t_tw"
            else t
            for t in plan.tables
        ),
    )
    init_checkpoint(tmp_path / "ck", pruned, seed=0)
    ckpt = open_checkpoint(tmp_path / "ck")
    assert ckpt.table("t_tw").remap_file == "remaps/t_tw-aaaaaaaaaaaa.npy"
    ckpt.check_plan(pruned)
    repruned = dataclasses.replace(
        pruned,
        tables=tuple(
            dataclasses.replace(t, remap_file="remaps/t_tw-bbbbbbbbbbbb.npy")
            if t.name == "t_tw"
            else t
            for t in pruned.tables
        ),
    )
    with pytest.raises(PlanError) as info:
        ckpt.check_plan(repruned)
    assert "aaaaaaaaaaaa" in str(info.value) and "bbbbbbbbbbbb" in str(info.value)
