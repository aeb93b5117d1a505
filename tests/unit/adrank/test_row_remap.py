"""adrank.remap: the RowRemap value, its .npy + manifest files, and FBGEMM's packed layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adrank.errors import InputError, NotFoundError
from adrank.remap import (
    PRUNED,
    REMAPS_DIR,
    REMAPS_MANIFEST,
    RowRemap,
    fbgemm_index_remappings,
    read_remap_file,
    read_remaps,
    remap_digest,
    remap_file_name,
    write_remaps,
)


def _remap(name: str = "t") -> RowRemap:
    # hashed ids 1 and 4 pruned; fallback row 4 after the 4 kept rows.
    return RowRemap(name, np.array([0, -1, 1, 2, -1, 3], dtype=np.int64), 5, 4, 4, "sha256:p")


def test_rows_for_sends_pruned_ids_to_the_fallback() -> None:
    r = _remap()
    assert r.hashed_rows == 6 and r.num_pruned == 2
    assert r.rows_for(np.array([1, 3, 4, 0])).tolist() == [4, 2, 4, 0]
    no_fallback = RowRemap("t", r.hashed_to_row, 4, 4, None)
    assert no_fallback.rows_for(np.array([1, 3])).tolist() == [PRUNED, 2]


def test_row_to_hashed_inverts_the_kept_part() -> None:
    assert _remap().row_to_hashed().tolist() == [0, 2, 3, 5, -1]


def test_lookup_array_substitutes_fallback_and_casts() -> None:
    a = _remap().lookup_array(np.int32)
    assert a.dtype == np.int32 and a.tolist() == [0, 4, 1, 2, 4, 3]
    with pytest.raises(ValueError, match="int32 or int64"):
        _remap().lookup_array(np.int16)


def test_fbgemm_layout_concatenates_tables_and_skips_unremapped() -> None:
    r0 = _remap("a")
    r2 = RowRemap("c", np.array([-1, 0], dtype=np.int64), 1, 1, None)
    array, offsets = fbgemm_index_remappings([r0, None, r2], np.int64)
    assert offsets.dtype == np.int64 and offsets.tolist() == [0, 6, 6, 8]
    assert array.dtype == np.int64 and array.tolist() == [0, 4, 1, 2, 4, 3, -1, 0]
    empty, off = fbgemm_index_remappings([None, None])
    assert empty.size == 0 and off.tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    ("remap", "fragment"),
    [
        (RowRemap("t", np.array([0, 0], dtype=np.int64), 2, 2, None), "share a row"),
        (RowRemap("t", np.array([0, 5], dtype=np.int64), 2, 2, None), "outside [0, 2)"),
        (RowRemap("t", np.array([0, -1], dtype=np.int64), 2, 2, None), "num_kept is 2"),
        (RowRemap("t", np.array([0, 1], dtype=np.int64), 2, 2, 1), "uses the fallback row"),
        (RowRemap("t", np.array([0, -3], dtype=np.int64), 2, 1, None), "below -1"),
        (RowRemap("t", np.array([0, 1], dtype=np.int32), 2, 2, None), "int64"),
    ],
)
def test_validate_names_the_broken_invariant(remap: RowRemap, fragment: str) -> None:
    with pytest.raises(InputError, match="'t'") as e:
        remap.validate()
    assert fragment in str(e.value) and e.value.exit_code == 2


def test_files_round_trip(tmp_path: Path) -> None:
    remaps = {"t_a": _remap("t_a"), "odd/name": RowRemap("odd/name", np.array([-1, 0]), 2, 1, 1)}
    files = write_remaps(remaps, tmp_path, "sha256:plan")
    digest = remap_digest(remaps["t_a"])
    assert files["t_a"] == f"{REMAPS_DIR}/t_a-{digest[:12]}.npy"
    assert files["odd/name"].startswith(f"{REMAPS_DIR}/") and "/" not in files["odd/name"][7:]
    assert remap_file_name("odd/name", digest) != remap_file_name("odd_name", digest)
    # The name follows the content: another mapping of the same table gets another file.
    other = RowRemap("t_a", np.array([0, 1, -1, 2, -1, 3], dtype=np.int64), 5, 4, 4)
    assert remap_digest(other) != digest
    back = read_remaps(tmp_path, expected_fingerprint="sha256:plan")
    assert sorted(back) == ["odd/name", "t_a"]
    for name, r in remaps.items():
        got = back[name]
        assert np.array_equal(got.hashed_to_row, r.hashed_to_row)
        assert (got.num_rows, got.num_kept, got.fallback_row) == (
            r.num_rows,
            r.num_kept,
            r.fallback_row,
        )
        assert got.inputs_fingerprint == "sha256:plan"
    doc = json.loads((tmp_path / REMAPS_DIR / REMAPS_MANIFEST).read_text())
    assert doc["kind"] == "adrank.remaps" and doc["format_version"] == 1
    # .npy, never pickle: a plain numpy load without pickle support reads the array.
    assert read_remap_file(tmp_path / files["t_a"]).tolist() == [0, -1, 1, 2, -1, 3]


def test_read_refuses_another_plans_remaps(tmp_path: Path) -> None:
    write_remaps({"t": _remap()}, tmp_path, "sha256:old")
    with pytest.raises(InputError, match="another plan") as e:
        read_remaps(tmp_path, expected_fingerprint="sha256:new")
    assert REMAPS_MANIFEST in str(e.value.source)


def test_read_detects_a_changed_file(tmp_path: Path) -> None:
    files = write_remaps({"t": _remap()}, tmp_path, "sha256:p")
    np.save(tmp_path / files["t"], np.array([0, 1, 2, 3, 4, 5], dtype=np.int64))
    with pytest.raises(InputError, match="checksum") as e:
        read_remaps(tmp_path)
    assert str(e.value.source).endswith(files["t"].split("/")[-1])


def test_read_reports_a_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_remaps(tmp_path)


def test_write_refuses_an_invalid_remap(tmp_path: Path) -> None:
    bad = RowRemap("t", np.array([0, 0], dtype=np.int64), 2, 2, None)
    with pytest.raises(InputError, match="share a row"):
        write_remaps({"t": bad}, tmp_path, "sha256:p")
    assert not (tmp_path / REMAPS_DIR / REMAPS_MANIFEST).exists()
