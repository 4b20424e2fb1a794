#!/usr/bin/env bash
# The demo: set up, start the embedded services and a worker, build a knowledge base
# from a sample document, ask it questions, print answers with their evidence.
# A second run reuses the knowledge base and its memory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh
PY=.venv/bin/python
$PY manage.py up
if ! $PY manage.py kb show demo >/dev/null 2>&1; then
  $PY manage.py kb create demo --description "Kellmouth, a fictional harbour town (ops/sample)"
fi
echo "== ingesting ops/sample/kellmouth.md (read once: chunks indexed, memory formed and stored)"
$PY manage.py ingest demo ops/sample/kellmouth.md --wait
$PY manage.py docs demo
for question in \
  "Who founded Kellmouth, and in which year?" \
  "Who built the Kell bridge?" \
  "How many boats were destroyed in the great storm of 1851?"; do
  echo
  echo "== Q: $question"
  $PY manage.py ask demo "$question" --wait
done
KEY=$($PY manage.py keys create --kb demo --role writer)
PORT=${MEMORAG_API_PORT:-8000}
cat <<WEB

== the web page and the HTTP API
Open http://127.0.0.1:$PORT/ and type this key (a writer key for 'demo', shown only now):
  $KEY
or from a shell:
  curl -s -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
       -d '{"question": "Who built the Kell bridge?"}' http://127.0.0.1:$PORT/v1/kbs/demo/queries
  curl -s -H "Authorization: Bearer $KEY" http://127.0.0.1:$PORT/v1/queries/<number>/result
WEB
cat <<'NEXT'

Try next:
  .venv/bin/python manage.py ask demo "Who designed the harbour wall?" --wait --show-clues
  .venv/bin/python manage.py ask demo "Summarize the town's history" --task summarize --wait
  .venv/bin/python manage.py feedback q1 --bad --answer "Agnes Perrow, in 1612"
  .venv/bin/python manage.py kb create mine && .venv/bin/python manage.py ingest mine YOUR_FILE.pdf --wait
  .venv/bin/python manage.py --help
  .venv/bin/python manage.py down     # stop the API, the worker and the embedded Valkey (data is kept)
NEXT
