"""Each public module's ``__all__`` lists exactly its public names, and every listed name exists
(httpx's check). Public names are read from the source: top-level defs, classes and assignments,
plus, in a package ``__init__``, the names it imports to re-export."""

import ast
import importlib
from pathlib import Path

import pytest

PUBLIC_MODULES = (
    "adrank",
    "adrank.data",
    "adrank.config",
    "adrank.errors",
    "adrank.formats",
    "adrank.hashing",
    "adrank.idmap",
    "adrank.planfile",
    "adrank.timecols",
    "adrank.units",
    "adrank.types",
    "adrank.rpc",
    "sharding_planner",
    "pruning",
    "embed_store",
    "embed_store.checkpoint",
    "embed_store.calibrate",
    "embed_store.batch",
    "embed_store.frontend",
    "embed_store.layout",
    "embed_store.local_lookup",
    "embed_store.quantize",
    "embed_store.rank_compute",
    "embed_store.sharded_runtime",
    "embed_store.transport",
    "embed_store.convert",
    "embed_store.server",
    "embed_store.client",
    "feature_service",
    "ranker",
    "ranker.inputs",
    "ranker.layers",
    "ranker.base",
    "ranker.small",
    "ranker.medium",
    "ranker.large",
    "ranker.tiers",
    "ranker.serving",
    "ranker.server",
    "ranker.client",
    "ranker.metrics_export",
    "ranker.data",
    "ranker.embeddings",
    "ranker.metrics",
    "ranker.router",
    "ranker.train",
    "ranker.replay",
    "ranker.train_distributed",
)
_NOT_EXPORTS = {"annotations", "logger"}


def _public_names(path: Path, is_package: bool) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.value is not None
        ):
            names.add(node.target.id)
        elif is_package and isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names.update(a.asname or a.name for a in node.names)
    return {n for n in names if not n.startswith("_") and n not in _NOT_EXPORTS}


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_matches_public_names(name: str) -> None:
    module = importlib.import_module(name)
    declared = set(module.__all__)
    missing = sorted(n for n in declared if not hasattr(module, n))
    assert not missing, f"{name}.__all__ names undefined {missing}"
    path = Path(module.__file__ or "")
    public = _public_names(path, path.name == "__init__.py")
    undeclared = sorted(public - declared)
    assert not undeclared, f"{name} exposes {undeclared} without listing them in __all__"


@pytest.mark.parametrize(
    "name", ["adrank", "sharding_planner", "pruning", "embed_store", "feature_service", "ranker"]
)
def test_package_has_role_docstring(name: str) -> None:
    doc = importlib.import_module(name).__doc__
    assert doc and len(doc.split()) >= 8, f"{name}/__init__.py needs a docstring stating its role"
