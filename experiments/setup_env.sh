#!/usr/bin/env bash
# Installs everything this project needs on a fresh Debian/Ubuntu machine, idempotently:
#   - Debian packages: espeak-ng (speech for the synthetic episodes and baselines);
#     chromium and chromium-driver (headless browser for the web page's test,
#     tests/experiments/web_test.py, which skips and says so without them);
#   - a Python >= 3.12 virtual environment in .venv (jax >= 0.11 needs 3.12);
#   - this package in editable mode with its test extras.
# Rerunning it is cheap: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v espeak-ng >/dev/null 2>&1; then
  echo "[setup] installing Debian packages: espeak-ng"
  apt_install espeak-ng
fi
# The browser page's test drives Debian's Chromium through its ChromeDriver (with
# Selenium, a test extra). Optional: without them that one test skips and says why.
browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
command -v chromedriver >/dev/null 2>&1 || browser+=(chromium-driver)
if [ ${#browser[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${browser[*]}"
  apt_install "${browser[@]}" || echo "[setup] warning: could not install ${browser[*]};" \
    "tests/experiments/web_test.py will skip" >&2
fi

find_python() {
  local c
  for c in python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null 2>&1 && \
       "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  # pyenv installs (the version pinned in .python-version first).
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  local want; want="$(cat .python-version 2>/dev/null || true)"
  for c in "$root/versions/$want/bin/python" "$root"/versions/3.1[2-9]*/bin/python; do
    if [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  PY="$(find_python)" || {
    echo "[setup] error: need Python >= 3.12 (jax >= 0.11 requires it)." >&2
    echo "        Install one, e.g. 'pyenv install 3.12' or 'apt-get install python3.12', and rerun." >&2
    exit 1
  }
  echo "[setup] creating .venv with $PY"
  "$PY" -m venv .venv
fi

.venv/bin/python -m pip install -q --upgrade pip
echo "[setup] installing the package and its test extras into .venv"
.venv/bin/python -m pip install -q -e ".[test]"
# Silero VAD's model files for eval/vad.py (run with onnxruntime). --no-deps: the
# package's one hard dependency is torch, which the ONNX path never imports.
.venv/bin/python -m pip install -q --no-deps "silero-vad==6.2.3"
# Optional: a side environment in which the MoE Triton kernels run on the CPU under
# Triton's interpreter (TRITON_INTERPRET=1 needs torch CPU tensors). No CPU build of torch
# for Python >= 3.12 is reachable from these machines, so when a local CPU wheel of torch
# for Python 3.11 is present (TORCH_CPU_WHEEL, or /opt/wheels on our CI machines) we
# build .venv/triton-py311 from it; without one, tests/moe/triton_test.py skips and says why.
wheel="${TORCH_CPU_WHEEL:-$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | head -n 1)}"
if [ -n "$wheel" ] && [ ! -x .venv/triton-py311/bin/python ]; then
  py311=""
  for c in python3.11 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11*/bin/python; do
    if command -v "$c" >/dev/null 2>&1 || [ -x "$c" ]; then py311="$c"; break; fi
  done
  if [ -n "$py311" ]; then
    echo "[setup] building .venv/triton-py311 (torch CPU + triton) for the Triton interpreter tests"
    "$py311" -m venv .venv/triton-py311
    .venv/triton-py311/bin/python -m pip install -q "$wheel" "triton==3.9.0" "numpy<3"
  fi
fi

# jax's CUDA plugin, beside the venv (not in it: importable, it makes every
# `import jax` log "Could not find cuda drivers"): jax-triton needs it to lower
# the Triton gather+gemv for a GPU on this CPU machine (tests/moe/gpu_lowering_test.py).
[ -d .venv/cuda-plugin/jax_cuda12_plugin ] || .venv/bin/pip install -q --no-deps --target .venv/cuda-plugin \
  "jax-cuda12-plugin==$(.venv/bin/python -c 'import jaxlib; print(jaxlib.__version__)')" \
  || echo "[setup] warning: no jax-cuda12-plugin; the triton_call lowering test will skip" >&2

echo "[setup] done: $(.venv/bin/python -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__)')"
