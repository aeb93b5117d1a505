"""The dependency rules of STYLE.md §1, as data shared by the meta-tests."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LIBRARY_PACKAGES = (
    "adrank",
    "sharding_planner",
    "pruning",
    "embed_store",
    "feature_service",
    "ranker",
)

_TORCH_STACK = {"torch", "torchrec", "fbgemm_gpu"}
_SIBLINGS = set(LIBRARY_PACKAGES) - {"adrank"}

# package -> top-level modules it must never import ("adrank.cli" is matched as a dotted prefix).
FORBIDDEN_IMPORTS: dict[str, set[str]] = {
    "adrank": _TORCH_STACK | _SIBLINGS | {"grpc", "rocksdict", "adrank.cli"},
    "sharding_planner": _TORCH_STACK
    | (_SIBLINGS - {"sharding_planner"})
    | {"grpc", "rocksdict", "adrank.cli"},
    "pruning": _TORCH_STACK
    | (_SIBLINGS - {"pruning", "sharding_planner"})
    | {"grpc", "rocksdict", "adrank.cli"},
    "feature_service": _TORCH_STACK | (_SIBLINGS - {"feature_service"}) | {"adrank.cli"},
    "embed_store": (_SIBLINGS - {"embed_store"}) | {"rocksdict", "adrank.cli"},
    "ranker": {"sharding_planner", "pruning", "rocksdict", "adrank.cli"},
}

# Files allowed to import some of their package's forbidden modules: adrank/rpc.py is the gRPC
# plumbing shared by the servers and clients (nothing else in adrank imports it, so `import adrank`
# stays grpc-free; tests/integration/test_import_isolation.py checks sys.modules).
FILE_ALLOWANCES: dict[str, set[str]] = {
    "adrank/rpc.py": {"grpc"},
}


def forbidden_imports(package: str, path: Path) -> set[str]:
    """Modules ``path`` (a file of ``package``) must not import."""
    rel = path.relative_to(REPO).as_posix()
    return FORBIDDEN_IMPORTS[package] - FILE_ALLOWANCES.get(rel, set())


# Third-party modules whose exceptions must be converted to adrank errors where they are caught.
THIRD_PARTY_ROOTS = {
    "pyarrow",
    "rocksdict",
    "grpc",
    "torch",
    "torchrec",
    "fbgemm_gpu",
    "numba",
    "yaml",
    "pydantic",
}


def library_files(package: str) -> Iterator[Path]:
    """Hand-written Python files of ``package`` (generated stubs under ``pb/`` excluded)."""
    for path in sorted((REPO / package).rglob("*.py")):
        rel = path.relative_to(REPO)
        if "pb" in rel.parts:
            continue
        if package == "adrank" and (
            rel.parts[:2] == ("adrank", "cli") or rel.name == "__main__.py"
        ):
            continue  # the CLI (and `python -m adrank`) may import everything
        yield path


def imported_modules(tree: ast.AST) -> set[str]:
    """Absolute dotted module names imported anywhere in ``tree`` (function bodies included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def violates(module: str, forbidden: set[str]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)
