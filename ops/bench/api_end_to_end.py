"""A question answered through the HTTP API against the same question through `manage.py ask --wait`.

Both as a user runs them: `manage.py up` in a throwaway home (its embedded Valkey, SQLite, one worker, the
API, default settings and the default model), the sample document ingested. Each question is asked both
ways, the order alternating per round so neither way always meets the warmer caches. The API way is a
client's: POST the question, follow its event stream to the end, GET the result. The CLI way is the
command's whole wall time, its start included, as a user waits for it.

    python ops/bench/api_end_to_end.py --rounds 2 --json bench-out/api-end-to-end.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
import httpx
import numpy as np
from common import print_table, write_json

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = [
    "Who founded Kellmouth, and in which year?",
    "Who built the Kell bridge?",
    "How many boats were destroyed in the great storm of 1851?",
]


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def through_api(http: httpx.Client, question: str) -> tuple[float, str]:
    started = time.perf_counter()
    reply = http.post("/v1/kbs/e2e/queries", json={"question": question})
    reply.raise_for_status()
    number = reply.json()["id"]
    with http.stream("GET", f"/v1/queries/{number}/events", timeout=900) as events:
        for line in events.iter_lines():
            if line.startswith("event: end"):
                break
    result = http.get(f"/v1/queries/{number}/result").json()
    return time.perf_counter() - started, result.get("text") or ""


def through_cli(env: dict, question: str) -> tuple[float, str]:
    started = time.perf_counter()
    out = manage(env, "ask", "e2e", question, "--wait")
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return time.perf_counter() - started, lines[1] if len(lines) > 1 else ""  # the line after the id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="times each question is asked each way")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from agent.models import default_model_dir, is_prepared

    model = default_model_dir()
    if not is_prepared(model):
        raise SystemExit("the default model is not prepared: run 'bash ops/setup.sh'")
    home = Path(tempfile.mkdtemp(prefix="memorag-e2e-"))
    (home / "models").mkdir()
    (home / "models" / model.name).symlink_to(model)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORAG_")}
    env |= {"MEMORAG_HOME": str(home), "MEMORAG_API_PORT": "18766"}
    manage(env, "up")
    rows = []
    try:
        manage(env, "kb", "create", "e2e")
        manage(env, "ingest", "e2e", "ops/sample/kellmouth.md", "--wait")
        key = manage(env, "keys", "create", "--kb", "e2e", "--role", "writer").strip().splitlines()[-1]
        http = httpx.Client(base_url="http://127.0.0.1:18766", headers={"Authorization": f"Bearer {key}"})
        for question in QUESTIONS:  # warm: the worker's first answer loads what later ones reuse
            through_api(http, question)
        for n in range(args.rounds):
            for i, question in enumerate(QUESTIONS):
                ways = [
                    ("api", lambda q=question: through_api(http, q)),
                    ("cli", lambda q=question: through_cli(env, q)),
                ]
                for way, ask in ways if (n + i) % 2 == 0 else ways[::-1]:
                    took, answer = ask()
                    rows.append({"round": n, "question": question, "way": way, "s": took, "answer": answer[:80]})
                    print(f"{way} {took:6.2f} s  {question}  ->  {answer[:70]}", flush=True)
    finally:
        manage(env, "down")
    api = np.array([r["s"] for r in rows if r["way"] == "api"])
    cli = np.array([r["s"] for r in rows if r["way"] == "cli"])
    summary = {
        "questions": len(api), "api_p50_s": float(np.median(api)), "cli_p50_s": float(np.median(cli)),
        "api_mean_s": float(api.mean()), "cli_mean_s": float(cli.mean()),
        "api_over_cli": float(api.mean() / cli.mean()),
    }  # fmt: skip
    print_table([summary], list(summary), "a question answered: HTTP API (POST, events, result) vs `ask --wait`")
    write_json(args.json, {"summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
