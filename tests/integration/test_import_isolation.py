"""Importing the planner side must not pull in torch: checked in a fresh interpreter's sys.modules,
not just on import lines (TorchRec's planner imports drag in the whole sharded runtime)."""

import subprocess
import sys

import pytest

from tests.meta_rules import REPO

pytestmark = pytest.mark.integration

_PROBE = """
import importlib, pkgutil, sys
for pkg_name in {packages!r}:
    pkg = importlib.import_module(pkg_name)
    subs = pkgutil.walk_packages(pkg.__path__, pkg_name + ".") if hasattr(pkg, "__path__") else ()
    for info in subs:
        if ".pb." not in info.name + ".":
            importlib.import_module(info.name)
watched = ("torch", "torchrec", "fbgemm_gpu", "grpc", "rocksdict")
heavy = sorted(m for m in watched if m in sys.modules)
print(",".join(heavy))
"""


@pytest.mark.parametrize(
    ("packages", "allowed"),
    [
        (("sharding_planner", "pruning"), set()),
        (
            ("adrank.data", "adrank.formats", "adrank.hashing", "adrank.errors", "adrank.types"),
            set(),
        ),
        (("feature_service",), {"grpc", "rocksdict"}),
    ],
)
def test_planner_side_never_loads_torch(packages: tuple[str, ...], allowed: set[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(packages=packages)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = {m for m in out.stdout.strip().split(",") if m}
    assert loaded <= allowed, f"importing {packages} loaded {sorted(loaded - allowed)}"
