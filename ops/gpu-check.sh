#!/usr/bin/env bash
# GPU check: where torch sees CUDA, run the memory bench (formation overhead at beta 4, 16, 64
# against the plain prefill), the needle bench and one evaluation, and write their JSON.
#   bash ops/gpu-check.sh [OUT_DIR]        (default bench-out/gpu)
# MEMORAG_MODEL may name a bigger local model directory; the default is the bundled 135M model.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-out/gpu}
[ -x .venv/bin/python ] || bash ops/setup.sh
PY=.venv/bin/python
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu-check: torch sees no CUDA device on this machine; run this on a GPU host (nothing was measured)" >&2
  exit 2
fi
export MEMORAG_DEVICE=cuda
mkdir -p "$OUT"
"$PY" -c "import torch; print('== device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
echo "== memory bench"
"$PY" ops/bench/memory.py --tokens 8000,32000 --betas 4,16,64 --json "$OUT/memory.json"
echo "== needle bench"
"$PY" ops/bench/needle.py --tokens 6000,32000 --betas 4,8,16 --json "$OUT/needle.json"
echo "== evaluation (L-Eval natural questions, 5 documents x 5 questions)"
"$PY" manage.py eval ../shared/data/leval/natural_question.jsonl --format leval --modes rag,memorag \
  --limit 5 --questions 5 --json "$OUT/eval-leval-nq.json"
echo "== JSON in $OUT"
