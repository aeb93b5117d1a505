#!/usr/bin/env bash
# Sets up a virtual environment with adrank and the torch + FBGEMM + TorchRec set that loads together.
#
#   bash scripts/install.sh [VENV_DIR]        (default .venv; `make install` calls this)
#
# Why three pip steps: torchrec 1.8.0 declares an unversioned dependency on `fbgemm-gpu`, the CUDA
# build. On a CPU machine any resolver step that sees it installs fbgemm-gpu 1.9.0 over our
# fbgemm-gpu-cpu 1.8.0 and breaks `import fbgemm_gpu`; a constraints file cannot remove a
# dependency. So torchrec goes in last with --no-deps and its other dependencies come from our
# `cpu` extra. On a CUDA machine (nvidia-smi lists a GPU, or ADRANK_DEVICE=cuda) the CUDA builds
# resolve cleanly together and torchrec installs normally.
#
# Environment: PYTHON (interpreter for the venv, >= 3.11; default python3),
#              ADRANK_DEVICE=cpu|cuda|auto (default auto).
set -euo pipefail

venv="${1:-.venv}"
python="${PYTHON:-python3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
constraints="$here/constraints.txt"

device="${ADRANK_DEVICE:-auto}"
if [ "$device" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    device=cuda
  else
    device=cpu
  fi
fi
case "$device" in cpu|cuda) ;; *) echo "install.sh: ADRANK_DEVICE must be cpu, cuda or auto, got '$device'" >&2; exit 2;; esac

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "install.sh: adrank needs Python >= 3.11; '$python' is $("$python" -V 2>&1). Set PYTHON=python3.11 or newer." >&2
  exit 2
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "install.sh: creating $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

echo "install.sh: installing for $device into $venv"
# torch first, alone: with 2.13.0 present, no later step can let a resolver pick a different build.
# On CPU machines pip's find-links supply the local +cpu wheel.
"${pip[@]}" install -c "$constraints" "torch==2.13.0"
if [ "$device" = cuda ]; then
  "${pip[@]}" install -c "$constraints" -e "$here[dev,cuda]"
else
  "${pip[@]}" install -c "$constraints" -e "$here[dev,cpu]"
  "${pip[@]}" install -c "$constraints" --no-deps "torchrec==1.8.0"
fi

# Fail here, not in the first test, if the set does not load together.
"$venv/bin/python" - <<'PY'
import fbgemm_gpu  # noqa: F401  registers the FBGEMM ops with torch
import torch
import torchrec  # noqa: F401
ok = hasattr(torch.ops.fbgemm, "asynchronous_complete_cumsum")
print(f"install.sh: torch {torch.__version__}, torchrec and fbgemm_gpu load" + ("" if ok else " (FBGEMM ops MISSING)"))
raise SystemExit(0 if ok else 1)
PY
