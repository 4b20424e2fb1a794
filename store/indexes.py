"""Which vector index serves: Weaviate when ``MEMORAG_WEAVIATE_URL`` is set, else the embedded one.

Its own module so that ``store.vectors`` (the protocol and the embedded index) and ``store.weaviate``
(which implements the protocol) do not import each other.
"""

from __future__ import annotations

import redis

from store.vectors import EmbeddedIndex, VectorIndex


def open_index(client: redis.Redis, settings) -> VectorIndex:
    """Weaviate when ``MEMORAG_WEAVIATE_URL`` is set, else the embedded index in ``client``'s Redis."""
    if settings.weaviate_url:
        from store.weaviate import WeaviateIndex

        return WeaviateIndex(settings.weaviate_url, settings.weaviate_grpc_port, api_key=settings.weaviate_api_key)
    return EmbeddedIndex(client)
