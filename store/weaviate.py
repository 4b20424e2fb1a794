"""Weaviate as the production vector index (weaviate-client v4).

One collection with multi-tenancy: each knowledge base is a tenant, created
on demand, so isolation is enforced by the server. Vectors are self-provided
(the project's embedder). A search with query texts is Weaviate's own hybrid
query (BM25 over the searchable text, the passage and its context, beside the
vector, fused by rank as the embedded index fuses them).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from urllib.parse import urlparse

import numpy as np

from store.vectors import Chunk, Hits

_TENANT_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_INT_FIELDS = ("ordinal", "char_start", "char_end", "token_start", "token_end")


class WeaviateUnavailable(RuntimeError):
    """Weaviate cannot be reached or refused a request; the message names the URL."""


def tenant_name(kb: str) -> str:
    """Weaviate tenant names allow [A-Za-z0-9_-]{1,64}; others get a stable hashed name."""
    if _TENANT_OK.match(kb):
        return kb
    slug = re.sub(r"[^A-Za-z0-9_-]", "-", kb)[:40]
    return f"{slug}-{hashlib.sha256(kb.encode()).hexdigest()[:16]}"


class WeaviateIndex:
    def __init__(self, url: str, grpc_port: int = 50051, collection: str = "MemoragChunk", api_key: str = "") -> None:
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        parsed = urlparse(url)
        secure = parsed.scheme == "https"
        self.url = url
        self.collection_name = collection
        try:
            self.client = weaviate.connect_to_custom(
                http_host=parsed.hostname,
                http_port=parsed.port or (443 if secure else 8080),
                http_secure=secure,
                grpc_host=parsed.hostname,
                grpc_port=grpc_port,
                grpc_secure=secure,
                auth_credentials=Auth.api_key(api_key) if api_key else None,
                additional_config=AdditionalConfig(timeout=Timeout(init=10, query=60, insert=120)),
            )
        except Exception as exc:
            raise WeaviateUnavailable(f"cannot reach Weaviate at {url} (gRPC port {grpc_port}): {exc}") from exc
        self._known_tenants: set[str] = set()
        self._ensure_collection()

    def close(self) -> None:
        self.client.close()

    def _ensure_collection(self) -> None:
        from weaviate.classes.config import Configure, DataType, Property

        if self.client.collections.exists(self.collection_name):
            return  # one made before contexts gains the property from the first upsert that carries it (auto-schema)
        self.client.collections.create(
            self.collection_name,
            multi_tenancy_config=Configure.multi_tenancy(enabled=True, auto_tenant_creation=True),
            vector_config=Configure.Vectors.self_provided(),
            properties=[
                Property(name="doc_id", data_type=DataType.TEXT, index_searchable=False),  # not a word to match
                Property(name="text", data_type=DataType.TEXT),
                Property(name="context", data_type=DataType.TEXT),
                *[Property(name=f, data_type=DataType.INT) for f in _INT_FIELDS],
            ],
        )

    def _collection(self, kb: str, create: bool = False):
        from weaviate.classes.tenants import Tenant

        collection = self.client.collections.use(self.collection_name)
        tenant = tenant_name(kb)
        if create and tenant not in self._known_tenants:
            if not collection.tenants.exists(tenant):
                collection.tenants.create([Tenant(name=tenant)])
            self._known_tenants.add(tenant)
        return collection.with_tenant(tenant)

    def _has_tenant(self, kb: str) -> bool:
        tenant = tenant_name(kb)
        if tenant in self._known_tenants:
            return True
        return bool(self.client.collections.use(self.collection_name).tenants.exists(tenant))

    def upsert(self, kb: str, chunks: list[Chunk], vectors: np.ndarray) -> None:
        from weaviate.classes.data import DataObject
        from weaviate.util import generate_uuid5

        vectors = np.asarray(vectors, dtype=np.float32)
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        objects = [
            DataObject(
                uuid=generate_uuid5(f"{kb}/{chunk.id}"),
                properties={
                    "doc_id": chunk.doc_id,
                    "text": chunk.text,
                    "context": chunk.context,
                    **{f: getattr(chunk, f) for f in _INT_FIELDS},
                },
                vector=vector.tolist(),
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        result = self._collection(kb, create=True).data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise WeaviateUnavailable(f"Weaviate at {self.url} rejected {len(result.errors)} chunks: {first.message}")

    def delete_document(self, kb: str, doc_id: str) -> int:
        from weaviate.classes.query import Filter

        if not self._has_tenant(kb):
            return 0
        result = self._collection(kb).data.delete_many(where=Filter.by_property("doc_id").equal(doc_id))
        return int(result.matches)

    def search(self, kb: str, vectors: np.ndarray, k: int, texts: Sequence[str] | None = None) -> list[Hits]:
        from weaviate.classes.query import HybridFusion, MetadataQuery

        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if texts is not None and len(texts) != len(queries):
            raise ValueError(f"{len(texts)} query texts but {len(queries)} vectors")
        if not self._has_tenant(kb):
            return [[] for _ in queries]
        collection = self._collection(kb)
        results: list[Hits] = []
        for n, vector in enumerate(queries):
            if texts is None:
                reply = collection.query.near_vector(
                    near_vector=vector.tolist(), limit=k, return_metadata=MetadataQuery(distance=True)
                )
                results.append([(_chunk(o.properties), 1.0 - float(o.metadata.distance or 0.0)) for o in reply.objects])
                continue
            reply = collection.query.hybrid(
                query=texts[n],
                vector=vector.tolist(),
                alpha=0.5,  # the two rankings weigh the same, as in the embedded index
                fusion_type=HybridFusion.RANKED,
                limit=k,
                return_metadata=MetadataQuery(score=True),
            )
            results.append([(_chunk(o.properties), float(o.metadata.score or 0.0)) for o in reply.objects])
        return results

    def count(self, kb: str) -> int:
        if not self._has_tenant(kb):
            return 0
        return int(self._collection(kb).aggregate.over_all(total_count=True).total_count or 0)

    def document_counts(self, kb: str, doc_ids: list[str]) -> dict[str, int]:
        from weaviate.classes.query import Filter

        if not self._has_tenant(kb):
            return dict.fromkeys(doc_ids, 0)
        aggregate = self._collection(kb).aggregate

        def count(doc: str) -> int:
            reply = aggregate.over_all(filters=Filter.by_property("doc_id").equal(doc), total_count=True)
            return int(reply.total_count or 0)

        return {doc: count(doc) for doc in doc_ids}

    def verify(self, kb: str, doc_ids: list[str]) -> dict[str, int]:
        """Weaviate checks its own storage; what it holds per document is what can be verified from here."""
        return self.document_counts(kb, doc_ids)

    def damaged(self, kb: str) -> set[str]:
        return set()

    def drop(self, kb: str) -> None:
        tenant = tenant_name(kb)
        if self._has_tenant(kb):
            self.client.collections.use(self.collection_name).tenants.remove([tenant])
        self._known_tenants.discard(tenant)


def _chunk(props: dict) -> Chunk:
    ints = {f: int(props[f]) for f in _INT_FIELDS}
    return Chunk(doc_id=str(props["doc_id"]), text=str(props["text"]), context=str(props.get("context") or ""), **ints)
