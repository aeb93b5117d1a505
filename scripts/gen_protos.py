"""Regenerate the gRPC stubs (``feature_service/pb/``, ``embed_store/pb/``, ``ranker/pb/``) from
``protos/`` with the pinned grpcio-tools.

Each ``.proto`` sits at the path of its stubs' package (``protos/feature_service/pb/v1/x.proto``
generates ``feature_service/pb/v1/x_pb2.py``, ``x_pb2_grpc.py`` and ``x_pb2.pyi``), and protoc runs
with ``-Iprotos``, so the generated imports are already ``from feature_service.pb.v1 import ...``:
nothing is patched afterwards. The empty ``__init__.py`` files of the generated packages are written
too. The output is committed; ``tests/unit/test_meta_protos_current.py`` regenerates it into a
temporary directory and fails on any difference.

Usage::

    python scripts/gen_protos.py            # rewrite the pb/ packages in the repository
    python scripts/gen_protos.py --check    # exit 1 and list the files that differ
    python scripts/gen_protos.py --out DIR  # write the tree under DIR instead

The stubs refuse to load on a grpcio or protobuf runtime older than the generator, so
``pyproject.toml``'s floors for grpcio and protobuf move with :data:`PINNED_GRPCIO_TOOLS`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["PINNED_GRPCIO_TOOLS", "PROTO_FILES", "REPO", "generate", "expected_files", "main"]

PINNED_GRPCIO_TOOLS = "1.81.1"
"""grpcio-tools version the committed stubs were generated with. Its stubs need grpcio >= 1.81.1
and protobuf >= 6.33.5 (the gencode version it writes), < 7 (tritonclient's pin)."""

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "protos"
PROTO_FILES = (
    "feature_service/pb/v1/feature_store.proto",
    "embed_store/pb/v1/embeddings.proto",
    "ranker/pb/v1/ranker.proto",
)
"""Protos to compile, relative to ``protos/`` (and so to the repository root once generated)."""

_GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


def _check_pin() -> None:
    try:
        found = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError as exc:
        raise SystemExit(
            f"grpcio-tools is not installed; install grpcio-tools=={PINNED_GRPCIO_TOOLS} "
            "(it is in the dev extra)"
        ) from exc
    if found != PINNED_GRPCIO_TOOLS:
        raise SystemExit(
            f"grpcio-tools {found} is installed, the stubs are pinned to {PINNED_GRPCIO_TOOLS}; "
            f"install grpcio-tools=={PINNED_GRPCIO_TOOLS}, or move the pin here and the grpcio / "
            "protobuf floors in pyproject.toml together"
        )


def expected_files() -> list[str]:
    """Paths (relative to the repository root) that :func:`generate` writes, sorted."""
    out: set[str] = set()
    for proto in PROTO_FILES:
        stem = proto.removesuffix(".proto")
        out.update(stem + suffix for suffix in _GENERATED_SUFFIXES)
        parts = Path(proto).parts[:-1]
        # Every package from the first generated-only directory (``pb``) down gets an __init__.
        start = parts.index("pb")
        for i in range(start + 1, len(parts) + 1):
            out.add(str(Path(*parts[:i], "__init__.py")))
    return sorted(out)


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every proto of :data:`PROTO_FILES` into ``out_dir``.

    Args:
        out_dir: Root of the output tree (the repository root for the committed stubs).
        proto_root: Directory the proto paths are relative to (``-I``).

    Returns:
        The files written, sorted.

    Raises:
        SystemExit: grpcio-tools is missing or not the pinned version, or protoc failed.
    """
    _check_pin()
    from grpc_tools import protoc  # the pinned generator; imported after the version check

    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(proto_root / p) for p in PROTO_FILES),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc} (its messages are above)")
    written = []
    for rel in expected_files():
        path = out_dir / rel
        if rel.endswith("__init__.py"):
            path.write_text("")
        if not path.exists():
            raise SystemExit(f"protoc did not write {rel}")
        written.append(path)
    return written


def _differences(generated: Path, target: Path) -> list[str]:
    return [
        rel
        for rel in expected_files()
        if not (target / rel).exists()
        or (generated / rel).read_bytes() != (target / rel).read_bytes()
    ]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the tree under this directory instead")
    parser.add_argument(
        "--check", action="store_true", help="only report files that differ from the committed ones"
    )
    args = parser.parse_args(argv)
    target = args.out or REPO
    with tempfile.TemporaryDirectory(prefix="gen-protos-") as tmp:
        generated = Path(tmp)
        generate(generated)
        changed = _differences(generated, target)
        if args.check:
            for rel in changed:
                print(f"out of date: {rel}")
            return 1 if changed else 0
        for rel in changed:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(generated / rel, target / rel)
            print(f"wrote {rel}")
    if not changed:
        print("stubs are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
