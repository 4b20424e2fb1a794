#!/usr/bin/env bash
# Set up (idempotent), then lint and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== pytest"
.venv/bin/python -m pytest "$@"
