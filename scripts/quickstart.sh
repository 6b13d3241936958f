#!/usr/bin/env bash
# The whole loop on the embedded default model: sets up .venv if needed, then runs quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tuneloop quickstart "$@"
