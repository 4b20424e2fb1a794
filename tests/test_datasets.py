"""The QMSum loader maps evidence turn spans to character spans of the transcript."""

from __future__ import annotations

import json

from agent.datasets import load_qmsum
from tests.conftest import SHARED_DATA


def test_turn_spans_become_character_spans(tmp_path):
    meeting = {
        "meeting_transcripts": [
            {"speaker": "A", "content": "Hello all ."},
            {"speaker": "B", "content": "The budget is tight ."},
            {"speaker": "A", "content": "Agreed , twelve euros ."},
        ],
        "specific_query_list": [
            {"query": "What about the budget?", "answer": "Twelve euros.", "relevant_text_span": [["1", "2"]]}
        ],
    }
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(meeting) + "\n")
    [sample] = load_qmsum(path)
    [question] = sample.questions
    start, end = question.evidence[0]
    assert sample.text[start:end].startswith("B: The budget is tight .")
    assert sample.text[start:end].endswith("twelve euros .")
    assert question.answers == ["Twelve euros."]


def test_reads_the_real_validation_file():
    samples = list(load_qmsum(SHARED_DATA / "qmsum" / "val.jsonl", limit=2))
    assert len(samples) == 2
    assert all(q.evidence for s in samples for q in s.questions)
