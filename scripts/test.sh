#!/usr/bin/env bash
# The whole test suite: sets up .venv if needed, checks lint and format, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
exec .venv/bin/python -m pytest -q "$@"
