#!/usr/bin/env bash
# Set up (idempotent), then lint and run the whole test suite: two processes over the tests that do not
# race each other for time, then the timing-sensitive ones (marked serial) alone. Arguments: one pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== pytest"
if [ "$#" -gt 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
status=0
# One math thread per test process: two processes with a thread per core each (torch's default) spin against
# each other and took twice as long (measured on a four-file slice: 352 s against 174 s).
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python -m pytest -n 2 -m "not serial" --durations=10 || status=$?
.venv/bin/python -m pytest -m serial --durations=5 || status=$((status ? status : $?))
exit "$status"
