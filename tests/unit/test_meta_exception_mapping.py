"""STYLE.md §6: every caught third-party exception is converted to an adrank error at the boundary.

An ``except`` clause in library code that catches a pyarrow/rocksdict/grpc/torch/... exception
must re-raise one of adrank.errors' classes with ``from`` (so the cause is kept), never swallow it
or let it escape.
"""

import ast
from pathlib import Path

import pytest

import adrank.errors
from tests.meta_rules import LIBRARY_PACKAGES, REPO, THIRD_PARTY_ROOTS, library_files

_ADRANK_ERRORS = {n for n in adrank.errors.__all__ if n.endswith("Error")}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> top-level module for every import in the file."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                out[a.asname or a.name] = node.module.split(".")[0]
    return out


def _root_name(expr: ast.expr) -> str | None:
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _caught(handler: ast.ExceptHandler) -> list[ast.expr]:
    if handler.type is None:
        return []
    return list(handler.type.elts) if isinstance(handler.type, ast.Tuple) else [handler.type]


def _maps_to_adrank_error(handler: ast.ExceptHandler) -> bool:
    for node in ast.walk(handler):
        if isinstance(node, ast.Raise) and node.exc is not None and node.cause is not None:
            call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = call.attr if isinstance(call, ast.Attribute) else getattr(call, "id", None)
            if name in _ADRANK_ERRORS:
                return True
    return False


def unmapped_handlers(source: str, filename: str) -> list[str]:
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ExceptHandler):
            continue
        third_party = [
            ast.unparse(t)
            for t in _caught(node)
            if aliases.get(_root_name(t) or "") in THIRD_PARTY_ROOTS
        ]
        if third_party and not _maps_to_adrank_error(node):
            bad.append(
                f"{filename}:{node.lineno} catches {', '.join(third_party)} "
                "without raising an adrank error from it"
            )
    return bad


@pytest.mark.parametrize("package", LIBRARY_PACKAGES)
def test_third_party_exceptions_are_mapped(package: str) -> None:
    problems: list[str] = []
    for path in library_files(package):
        problems += unmapped_handlers(path.read_text(), str(Path(path).relative_to(REPO)))
    assert not problems, "\n".join(problems)


def test_checker_flags_a_swallowed_arrow_error() -> None:
    bad = "import pyarrow as pa\ntry:\n    pass\nexcept pa.ArrowInvalid:\n    pass\n"
    good = (
        "import pyarrow as pa\nfrom adrank.errors import InputError\ntry:\n    pass\n"
        "except pa.ArrowInvalid as exc:\n    raise InputError('x') from exc\n"
    )
    assert len(unmapped_handlers(bad, "bad.py")) == 1
    assert unmapped_handlers(good, "good.py") == []
