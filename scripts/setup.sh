#!/usr/bin/env bash
# Install what dyadsim needs: ngspice + its shared library (Debian packages) and the
# Python package with its test extras.  Idempotent: does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}

have_ngspice() {
  command -v ngspice >/dev/null 2>&1 && { ldconfig -p 2>/dev/null | grep -q 'libngspice.so\b' || [ -e /usr/lib/x86_64-linux-gnu/libngspice.so ] || [ -e /usr/lib/aarch64-linux-gnu/libngspice.so ]; }
}

if ! have_ngspice; then
  echo "setup: installing ngspice and libngspice0-dev (Debian packages)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    cat >&2 <<'MSG'
setup: ngspice is missing and this user cannot install Debian packages (not root, no sudo).
  Ask an administrator for:  apt-get install -y ngspice libngspice0-dev
  or install ngspice >= 39 elsewhere and put it on PATH, and set
  NGSPICE_LIBRARY_PATH=/path/to/libngspice.so for the shared-library backend.
MSG
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq ngspice libngspice0-dev >/dev/null
fi

if ! $PY -c "import dyadsim, pytest, hypothesis, nbclient, ipykernel, pytest_randomly, importlinter, sphinx, myst_parser" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .setup-stamp ]; then
  echo "setup: pip install -e .[test]"
  $PY -m pip install -q --disable-pip-version-check -e ".[test]"
  touch .setup-stamp
fi

# PyTorch is an optional extra (dyadsim.from_torch); the tests of that path want it.  On
# this project's machines `pip install torch==2.13.0` takes a CPU build from local disk.
# Set DYADSIM_NO_TORCH=1 to skip (those tests are then skipped, saying why).
if [ -z "${DYADSIM_NO_TORCH:-}" ] && ! $PY -c "import torch" >/dev/null 2>&1; then
  echo "setup: pip install torch==2.13.0 (optional extra, for the PyTorch import tests)"
  $PY -m pip install -q --disable-pip-version-check torch==2.13.0 \
    || echo "setup: could not install torch; the PyTorch tests will be skipped" >&2
fi
