#!/usr/bin/env bash
# The demo: set up, start the embedded store, memorize a sample document, ask it questions.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh
PY=.venv/bin/python
$PY manage.py up
if ! $PY manage.py memory show kellmouth >/dev/null 2>&1; then
  echo "== memorizing ops/sample/kellmouth.md (read once, compressed 4x, chunks indexed)"
  $PY manage.py memory build ops/sample/kellmouth.md --key kellmouth --beta 4
fi
$PY manage.py memory show kellmouth
for question in \
  "Who founded Kellmouth, and in which year?" \
  "When is the herring festival held?" \
  "How many boats were destroyed in the great storm of 1851?"; do
  echo
  echo "== Q: $question"
  $PY manage.py memory ask kellmouth "$question" --task memorag
done
cat <<'NEXT'

Try next:
  .venv/bin/python manage.py memory ask kellmouth "Who designed the harbour wall?" --task memorag
  .venv/bin/python manage.py memory ask kellmouth "Summarize the town's history" --task summarize
  .venv/bin/python manage.py memory build YOUR_FILE.txt --beta 16 --key mine
  .venv/bin/python manage.py --help
  .venv/bin/python manage.py down     # stop the embedded Valkey (data is kept)
NEXT
