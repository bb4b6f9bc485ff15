#!/usr/bin/env bash
# Set up the course in one command: a virtual environment in .venv, PyTorch (the CPU build on a machine
# without an NVIDIA GPU: about 1.3 GB instead of 6), the lessons' requirements, and a check that they import.
#
#   bash setup.sh          # what the lessons need
#   bash setup.sh --dev    # and the test, lint and notebook tools (requirements-dev.txt)
#
# Then: .venv/bin/python 01_ebm_foundations.py   (or source .venv/bin/activate, then python ...)
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
requirements=requirements.txt
[ "${1:-}" = "--dev" ] && requirements=requirements-dev.txt

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "setup.sh: Python 3.10 or newer is needed"; exit 1; }
[ -d .venv ] || "$python" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip

cpu_index=https://download.pytorch.org/whl/cpu
index_reachable() {  # a 5-second look, so an offline machine does not wait for pip's retries
  python -c "import urllib.request as u; u.urlopen('$cpu_index/', timeout=5)" >/dev/null 2>&1
}
if ! python -c 'import torch' 2>/dev/null; then
  if [ "$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    # no NVIDIA GPU: the CPU wheels; where their index cannot be reached, requirements.txt installs from PyPI
    if index_reachable; then
      python -m pip install --quiet torch torchvision --index-url "$cpu_index"
    else
      echo "setup.sh: PyTorch's CPU wheel index cannot be reached; installing PyTorch from PyPI instead"
    fi
  fi
fi
python -m pip install --quiet -r "$requirements"

python - <<'PY'
import importlib
for name in ("torch", "numpy", "matplotlib", "scipy", "sklearn", "tqdm"):
    importlib.import_module(name)
try:
    import torchvision  # noqa: F401
except Exception as err:  # built for another torch: only --dataset mnist needs it
    print(f"setup.sh: torchvision does not import ({type(err).__name__}); the digits lessons run without it, "
          "--dataset mnist needs it")
import torch
print(f"setup.sh: ready (torch {torch.__version__}). Now: .venv/bin/python 01_ebm_foundations.py")
PY
