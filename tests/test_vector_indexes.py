"""Both vector stores behave the same: ranking, delete, drop, isolation, persistence.

The Weaviate adapter runs against the in-memory fake (REST + gRPC) and, when
MEMORAG_WEAVIATE_URL is set, against that real server too.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from store.vectors import Chunk, EmbeddedIndex, rrf
from store.weaviate import WeaviateIndex, tenant_name
from tests.fake_weaviate import FakeWeaviate

DIM = 8


def _chunk(doc: str, i: int, text: str) -> Chunk:
    return Chunk(doc, i, text, i * 10, i * 10 + len(text), i * 4, i * 4 + 4)


def _basis(i: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    return v + noise * np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


@pytest.fixture(scope="module")
def fake_weaviate():
    server = FakeWeaviate().start()
    yield server
    server.stop()


BACKENDS = ["embedded", "weaviate-fake"] + (["weaviate-real"] if os.environ.get("MEMORAG_WEAVIATE_URL") else [])


@pytest.fixture(params=BACKENDS)
def index(request, redis_client, fake_weaviate):
    if request.param == "embedded":
        yield EmbeddedIndex(redis_client)
        return
    if request.param == "weaviate-fake":
        idx = WeaviateIndex(fake_weaviate.url, grpc_port=fake_weaviate.grpc_port)
    else:
        grpc_port = int(os.environ.get("MEMORAG_WEAVIATE_GRPC_PORT", 50051))
        idx = WeaviateIndex(os.environ["MEMORAG_WEAVIATE_URL"], grpc_port=grpc_port)
    yield idx
    idx.close()


@pytest.fixture
def kb() -> str:
    return f"kb-{uuid.uuid4().hex[:8]}"


def _fill(index, kb: str) -> list[Chunk]:
    chunks = [_chunk("doc-a", i, f"passage {i} about topic {i}") for i in range(4)]
    chunks += [_chunk("doc-b", i, f"other passage {i}") for i in range(2)]
    vectors = np.stack([_basis(i) for i in range(4)] + [_basis(4 + i) for i in range(2)])
    index.upsert(kb, chunks, vectors)
    return chunks


def test_search_ranks_the_relevant_chunk_first(index, kb):
    chunks = _fill(index, kb)
    assert index.count(kb) == 6
    [hits] = index.search(kb, _basis(2, noise=0.1)[None], k=3)
    assert hits[0][0] == chunks[2]
    assert len(hits) == 3 and hits[0][1] >= hits[1][1]
    many = index.search(kb, np.stack([_basis(0), _basis(5)]), k=1)
    assert [h[0][0].id for h in many] == ["doc-a#0", "doc-b#1"]


def test_delete_document_and_drop(index, kb):
    _fill(index, kb)
    assert index.delete_document(kb, "doc-a") == 4
    assert index.count(kb) == 2
    [hits] = index.search(kb, _basis(0)[None], k=5)
    assert {c.doc_id for c, _ in hits} == {"doc-b"}
    index.drop(kb)
    assert index.count(kb) == 0
    assert index.search(kb, _basis(0)[None], k=5) == [[]]


def test_isolation_between_knowledge_bases(index, kb):
    _fill(index, kb)
    other = kb + "-other"
    index.upsert(other, [_chunk("doc-z", 0, "z")], _basis(0)[None])
    [hits] = index.search(other, _basis(0)[None], k=10)
    assert [c.doc_id for c, _ in hits] == ["doc-z"]
    [hits] = index.search(kb, _basis(0)[None], k=10)
    assert "doc-z" not in {c.doc_id for c, _ in hits}
    assert index.search(kb + "-never", _basis(0)[None], k=3) == [[]]


def test_per_document_counts_say_what_the_index_holds(index, kb):
    _fill(index, kb)
    assert index.document_counts(kb, ["doc-a", "doc-b", "doc-gone"]) == {"doc-a": 4, "doc-b": 2, "doc-gone": 0}
    assert index.verify(kb, ["doc-a", "doc-b"]) == {"doc-a": 4, "doc-b": 2}
    assert index.document_counts(kb + "-never", ["doc-a"]) == {"doc-a": 0}
    assert index.damaged(kb) == set()


@pytest.mark.parametrize("part", ["chunks", "vectors"])
def test_a_changed_byte_is_detected_never_served_and_cleared_by_a_rewrite(redis_client, kb, part):
    index = EmbeddedIndex(redis_client)
    chunks = _fill(index, kb)
    key = index.key(kb, part)
    raw = bytearray(redis_client.hget(key, "doc-a#2"))
    raw[len(raw) // 2] ^= 0x01  # one bit
    redis_client.hset(key, "doc-a#2", bytes(raw))
    index.upsert(kb + "-other", [_chunk("x", 0, "x")], _basis(0)[None])  # unrelated write, same process
    fresh = EmbeddedIndex(redis_client)
    [hits] = fresh.search(kb, _basis(2)[None], k=6)
    assert "doc-a#2" not in {c.id for c, _ in hits} and len(hits) == 5
    assert fresh.damaged(kb) == {"doc-a"}
    assert fresh.verify(kb, ["doc-a", "doc-b"]) == {"doc-a": 3, "doc-b": 2}
    assert fresh.document_counts(kb, ["doc-a"]) == {"doc-a": 4}  # the cheap count cannot see it; searches and verify do
    fresh.upsert(kb, chunks[:4], np.stack([_basis(i) for i in range(4)]))
    assert fresh.damaged(kb) == set() and fresh.verify(kb, ["doc-a"]) == {"doc-a": 4}
    [hits] = fresh.search(kb, _basis(2)[None], k=1)
    assert hits[0][0].id == "doc-a#2"


def test_embedded_index_persists_for_a_new_client(valkey_url, redis_client, kb):
    import redis

    _fill(EmbeddedIndex(redis_client), kb)
    fresh = EmbeddedIndex(redis.Redis.from_url(valkey_url))
    [hits] = fresh.search(kb, _basis(3)[None], k=1)
    assert hits[0][0].id == "doc-a#3"


def test_embedded_cache_refreshes_when_the_kb_changes(redis_client, kb):
    reader, writer = EmbeddedIndex(redis_client), EmbeddedIndex(redis_client)
    _fill(writer, kb)
    [before] = reader.search(kb, _basis(7)[None], k=1)  # the reader caches its matrix now
    assert before[0][0].id != "doc-c#0"
    writer.upsert(kb, [_chunk("doc-c", 0, "new")], _basis(7)[None])
    [hits] = reader.search(kb, _basis(7)[None], k=1)
    assert hits[0][0].id == "doc-c#0"


def test_weaviate_requests_carry_tenant_vectors_and_limit(fake_weaviate):
    idx = WeaviateIndex(fake_weaviate.url, grpc_port=fake_weaviate.grpc_port)
    kb = "team notes/2026"
    fake_weaviate.store.requests.clear()
    idx.upsert(kb, [_chunk("d", 0, "hello world")], _basis(1)[None])
    idx.search(kb, _basis(1)[None], k=7)
    idx.delete_document(kb, "d")
    kinds = [name for name, _ in fake_weaviate.store.requests]
    assert kinds == ["BatchObjects", "Search", "BatchDelete"]
    batch, search, delete = (r for _, r in fake_weaviate.store.requests)
    tenant = tenant_name(kb)
    assert tenant != kb and batch.objects[0].tenant == tenant and search.tenant == tenant == delete.tenant
    sent = np.frombuffer(batch.objects[0].vector_bytes or batch.objects[0].vectors[0].vector_bytes, dtype=np.float32)
    np.testing.assert_allclose(sent, _basis(1))
    assert search.limit == 7 and search.collection == "MemoragChunk"
    assert delete.filters.value_text == "d"
    idx.close()


def test_rrf_weights_and_ranks():
    fused = rrf([["a", "b"], ["b", "c"]], [2.0, 1.0], k=1)
    assert fused == pytest.approx({"a": 1.0, "b": 2 / 3 + 1 / 2, "c": 1 / 3})


def test_hybrid_search_finds_an_exact_term_or_a_heading_the_vector_misses(index, kb):
    """A question naming an identifier (or the section a passage stands under) finds that passage even when
    its vector points elsewhere; the context line is searched and comes back with the chunk."""
    chunks = _fill(index, kb)
    named = Chunk("doc-c", 0, "the callable begins the response", 0, 32, 0, 6, context="WSGI spec > start_response")
    index.upsert(kb, [named], _basis(7)[None])
    query = _basis(1)[None]  # nearest doc-a#1 by vector
    [dense] = index.search(kb, query, k=2)
    assert "doc-c#0" not in {c.id for c, _ in dense}
    [hybrid] = index.search(kb, query, k=2, texts=["what does start_response do"])
    assert {c.id for c, _ in hybrid} == {"doc-a#1", "doc-c#0"}
    found = next(c for c, _ in hybrid if c.id == "doc-c#0")
    assert found == named and found.context == "WSGI spec > start_response"
    [words] = index.search(kb, _basis(6)[None], k=2, texts=["topic 3"])  # the vector matches nothing stored
    assert chunks[3] in [c for c, _ in words]
    with pytest.raises(ValueError, match="query texts"):
        index.search(kb, query, k=2, texts=["a", "b"])


def test_weaviate_hybrid_is_the_servers_own_ranked_fusion_and_the_document_id_is_no_search_term(fake_weaviate):
    idx = WeaviateIndex(fake_weaviate.url, grpc_port=fake_weaviate.grpc_port)
    idx.upsert("hybrid-kb", [_chunk("d", 0, "hello world")], _basis(1)[None])
    fake_weaviate.store.requests.clear()
    idx.search("hybrid-kb", _basis(1)[None], k=4, texts=["hello"])
    [(name, search)] = fake_weaviate.store.requests
    assert name == "Search" and search.HasField("hybrid_search") and search.limit == 4
    hybrid = search.hybrid_search
    assert (
        hybrid.query == "hello" and np.frombuffer(hybrid.vector_bytes or hybrid.vectors[0].vector_bytes, "<f4")[1] == 1
    )
    assert hybrid.fusion_type == hybrid.FusionType.FUSION_TYPE_RANKED
    searchable = {p["name"] for p in fake_weaviate.store.schemas["MemoragChunk"]["properties"] if p["indexSearchable"]}
    assert searchable == {"text", "context"}
    idx.close()
