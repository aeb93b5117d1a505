"""STYLE.md §5: the committed gRPC stubs are exactly what scripts/gen_protos.py generates with the
pinned grpcio-tools, the pb/ packages hold nothing else, and the stubs import through the
package path (no patched imports)."""

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.meta_rules import REPO


def _gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_current(tmp_path: Path) -> None:
    gen = _gen_protos()
    written = gen.generate(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in written) == gen.expected_files()
    stale = [
        rel
        for rel in gen.expected_files()
        if not (REPO / rel).exists() or (REPO / rel).read_bytes() != (tmp_path / rel).read_bytes()
    ]
    assert not stale, f"stale generated files {stale}: run `python scripts/gen_protos.py`"


def test_every_proto_is_compiled() -> None:
    gen = _gen_protos()
    protos = sorted(str(p.relative_to(REPO / "protos")) for p in (REPO / "protos").rglob("*.proto"))
    assert protos == sorted(gen.PROTO_FILES)


@pytest.mark.parametrize("package", ["feature_service", "embed_store"])
def test_pb_packages_hold_generated_files_only(package: str) -> None:
    gen = _gen_protos()
    expected = {rel for rel in gen.expected_files() if rel.startswith(f"{package}/pb/")}
    assert expected, f"no proto generates into {package}/pb/"
    found = {
        str(p.relative_to(REPO))
        for p in (REPO / package / "pb").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert found == expected, f"hand-made files in {package}/pb/: {sorted(found - expected)}"


def test_stubs_import_through_the_package_path() -> None:
    text = (REPO / "feature_service/pb/v1/feature_store_pb2_grpc.py").read_text()
    assert "from feature_service.pb.v1 import feature_store_pb2 as" in text
    from feature_service.pb.v1 import feature_store_pb2

    assert feature_store_pb2.DESCRIPTOR.name == "feature_service/pb/v1/feature_store.proto"


def test_grpcio_floor_is_not_below_the_generator() -> None:
    gen = _gen_protos()
    pyproject = (REPO / "pyproject.toml").read_text()
    floor = re.search(r'"grpcio>=([0-9.]+)"', pyproject)
    assert floor is not None, "pyproject.toml must set a grpcio floor"
    as_tuple = [
        tuple(int(x) for x in v.split(".")) for v in (floor.group(1), gen.PINNED_GRPCIO_TOOLS)
    ]
    assert as_tuple[0] >= as_tuple[1], "the stubs refuse grpcio older than their generator"
