"""STYLE.md §1: which package may import which, checked on the source of every module."""

import ast

import pytest

from tests.meta_rules import (
    FORBIDDEN_IMPORTS,
    LIBRARY_PACKAGES,
    REPO,
    forbidden_imports,
    imported_modules,
    library_files,
    violates,
)


@pytest.mark.parametrize("package", LIBRARY_PACKAGES)
def test_no_forbidden_imports(package: str) -> None:
    offenders = []
    for path in library_files(package):
        for module in sorted(imported_modules(ast.parse(path.read_text(), str(path)))):
            if violates(module, forbidden_imports(package, path)):
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_rule_checker_catches_a_violation() -> None:
    # The checker itself must be able to fail: a planner module importing torch inside a function.
    tree = ast.parse("def f():\n    import torch.nn\n    from embed_store import x\n")
    found = imported_modules(tree)
    assert violates("torch.nn", FORBIDDEN_IMPORTS["sharding_planner"])
    assert {m for m in found if violates(m, FORBIDDEN_IMPORTS["sharding_planner"])} == {
        "torch.nn",
        "embed_store",
    }


def test_only_adrank_rpc_may_import_grpc_in_adrank() -> None:
    # The allowance is one file wide: any other adrank module importing grpc still fails, and no
    # adrank library module imports adrank.rpc (so `import adrank` never loads grpc).
    assert "grpc" in forbidden_imports("adrank", REPO / "adrank" / "types.py")
    assert "grpc" not in forbidden_imports("adrank", REPO / "adrank" / "rpc.py")
    importers = [
        path.relative_to(REPO).as_posix()
        for path in library_files("adrank")
        if _imports_adrank_rpc(ast.parse(path.read_text(), str(path)))
    ]
    assert importers == [], f"adrank library modules must not import adrank.rpc: {importers}"


def _imports_adrank_rpc(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "adrank"
            and any(a.name == "rpc" for a in node.names)
        ):
            return True
    return any(violates(m, {"adrank.rpc"}) for m in imported_modules(tree))
