"""Property: over random knowledge bases, rows and keys, no request shows one knowledge base's data to another's key."""

from __future__ import annotations

import itertools

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from service import bases, keys
from store import db


@pytest.fixture(scope="module")
def client(module_records):
    return TestClient(create_app())


def _fill(kb: str, documents: int, questions: int) -> None:
    """Ready documents and answered, rated queries whose every text names their knowledge base."""
    bases.create_kb(kb)
    with db.session() as s:
        kb_id = bases.get_kb(s, kb).id
        for d in range(documents):
            text = f"secret of {kb} number {d}"
            s.add(db.Document(kb_id=kb_id, name=f"{kb}-{d}.txt", text=text, content_hash=f"{kb}-{d}",
                              status=db.Status.ready, token_count=5, memory_tokens=1, chunk_count=1))  # fmt: skip
        for q in range(questions):
            query = db.Query(kb_id=kb_id, text=f"question {q} about {kb}", status=db.Status.done)
            s.add(query)
            s.flush()
            evidence = [{"chunk_id": f"d0#{q}", "doc_id": "d0", "document": f"{kb}-0.txt", "text": f"secret of {kb}"}]
            s.add(db.Answer(query_id=query.id, text=f"answer from {kb}", evidence=evidence))
            s.add(db.Feedback(query_id=query.id, rating=1, comment=f"feedback on {kb}"))


ROLES = st.sampled_from(keys.ROLES)
RUNS = itertools.count()


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    shape=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=2, max_size=4), role=ROLES, data=st.data()
)
def test_no_key_sees_another_knowledge_bases_rows(client, shape, role, data):
    db.reset_engines()
    run = next(RUNS)  # every example gets knowledge bases of its own in the shared database
    names = [f"kb{i}-{run}" for i in range(len(shape))]
    for name, (documents, questions) in zip(names, shape, strict=True):
        _fill(name, documents, questions)
    mine = data.draw(st.sampled_from(names))
    headers = {"Authorization": f"Bearer {keys.create_key(role, mine)}"}
    others = [n for n in names if n != mine]
    with db.session() as s:
        doc_ids = [d.id for d in s.exec(db.select(db.Document)).all()]
        query_ids = [q.id for q in s.exec(db.select(db.Query)).all()]
    replies = [client.get("/v1/kbs", headers=headers)]
    replies += [client.get(f"/v1/kbs/{name}/documents", headers=headers) for name in names]
    for doc_id in doc_ids:
        replies += [client.get(f"/v1/documents/{doc_id}{tail}", headers=headers) for tail in ("", "/text")]
    for query_id in query_ids:
        replies += [client.get(f"/v1/queries/{query_id}{tail}", headers=headers) for tail in ("", "/result", "/events")]
    for reply in replies:
        assert reply.status_code in (200, 404), (reply.request.url, reply.status_code, reply.text)
        if reply.status_code == 200:
            assert not any(other in reply.text for other in others), (reply.request.url, reply.text)
    own = client.get(f"/v1/kbs/{mine}/documents", headers=headers)  # its own rows it does see
    assert own.status_code == 200 and len(own.json()) == shape[names.index(mine)][0]
    for other in others:  # another knowledge base's rows are 404, exactly as rows that do not exist
        assert client.get(f"/v1/kbs/{other}/documents", headers=headers).status_code == 404
