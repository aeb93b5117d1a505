"""STYLE.md §1: which package may import which, checked on the source of every module."""

import ast

import pytest

from tests.meta_rules import (
    FORBIDDEN_IMPORTS,
    LIBRARY_PACKAGES,
    REPO,
    imported_modules,
    library_files,
    violates,
)


@pytest.mark.parametrize("package", LIBRARY_PACKAGES)
def test_no_forbidden_imports(package: str) -> None:
    offenders = []
    for path in library_files(package):
        for module in sorted(imported_modules(ast.parse(path.read_text(), str(path)))):
            if violates(module, FORBIDDEN_IMPORTS[package]):
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
