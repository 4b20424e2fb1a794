"""Questions about the documents themselves: is the right document cited?

"Who wrote ...", "What is the title of ...", "In which section of ... is ...
described": the answer is in a document's header or headings, and the same
kind of header sits in every other document of the knowledge base. Each
question is asked of the whole knowledge base the way ``ask`` answers it (rag:
route, retrieve, read), and the reading's citation is compared with the
document the question is about. Chunks bare and searched dense (before chunks
carried their context) against the default (context, hybrid), in one run::

    python ops/bench/meta_questions.py --json bench-out/meta-questions.json
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
import numpy as np
from common import BenchRedis, print_table, write_json

from agent.evaluation import load_samples
from agent.metrics import answer_in
from agent.models import load_model
from agent.pipeline import answer
from agent.retrieval import chunk_document, get_embedder
from core.settings import get_settings
from store.memories import MemoryStore
from store.vectors import EmbeddedIndex

DEFAULT = Path(__file__).resolve().parent / "data" / "techdocs-meta.json"
VARIANTS = {"dense_bare": (False, "dense"), "hybrid_context": (True, "hybrid")}  # (context, MEMORAG_RETRIEVAL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT, help="a kbqa file (documents + questions)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = get_settings()
    lm, embedder = load_model(settings=settings), get_embedder()
    documents = [s for s in load_samples("kbqa", args.data) if s.text]
    texts = {s.doc_id: s.text for s in documents}
    chunked = [c for s in documents for c in chunk_document(s.doc_id, s.text, lm.tokenizer, name=s.doc_id)]
    server = BenchRedis(settings)
    rows, answers = [], []
    try:
        index, store = EmbeddedIndex(server.client), MemoryStore(server.client)
        for variant, (context, retrieval) in VARIANTS.items():
            chunks = [c if context else replace(c, context="") for c in chunked]
            index.drop(variant)
            index.upsert(variant, chunks, embedder.encode([c.searchable for c in chunks]))
            asked = settings.model_copy(update={"retrieval": retrieval})
            cited, right, shown = [], [], []
            for sample in documents:
                for q in sample.questions:
                    got = answer(lm, embedder, store, index, variant, list(texts), q.text, k=settings.top_k,
                                 settings=asked, text_of=texts.__getitem__, clues=False)  # fmt: skip
                    reading = got.reading
                    doc = reading.citation.doc_id if reading and reading.supported and reading.citation else None
                    cited.append(float(doc == sample.doc_id))
                    ok = bool(reading and reading.supported)
                    right.append(answer_in(got.text, q.answers) if ok else 0.0)
                    where = reading.citation.context if ok and reading.citation else ""
                    shown.append(answer_in(f"{got.text} {where}", q.answers) if ok else 0.0)  # source line too
                    if context:
                        answers.append({"question": q.text, "gold_doc": sample.doc_id, "cited_doc": doc,
                                        "answer": got.text, "gold": q.answers, "source": where})  # fmt: skip
            index.drop(variant)
            rows.append({
                "variant": variant, "questions": len(cited), "cited_right_doc": float(np.mean(cited)),
                "answer_right": float(np.mean(right)), "right_with_source": float(np.mean(shown)),
            })  # fmt: skip
    finally:
        server.stop()
    columns = ["variant", "questions", "cited_right_doc", "answer_right", "right_with_source"]
    print_table(rows, columns, f"{args.data.stem}: rag, k {settings.top_k}")
    for a in answers:
        mark = "ok " if a["cited_doc"] == a["gold_doc"] else "BAD"
        print(f"{mark} {a['question'][:60]:60} -> {a['cited_doc']}: {a['answer'][:50]!r} ({a['source'][:50]})")
    write_json(args.json, {"rows": rows, "answers": answers})


if __name__ == "__main__":
    main()
