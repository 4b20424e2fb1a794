"""A small in-memory Weaviate: REST on one loopback port, gRPC on another.

Built the way weaviate-client's own mock tests build theirs (an HTTP server
for meta/schema/tenants, a gRPC ``WeaviateServicer`` for batch and search),
but with real semantics (tenants, cosine search, delete by filter), so the
same behavioural tests run against it and against a real server. Every gRPC
request is recorded for assertions.
"""

from __future__ import annotations

import json
import re
import socket
import uuid as uuidlib
from concurrent import futures

import grpc
import numpy as np
from grpc_health.v1.health_pb2 import HealthCheckResponse
from grpc_health.v1.health_pb2_grpc import HealthServicer, add_HealthServicer_to_server
from pytest_httpserver import HTTPServer
from weaviate.proto.v1 import (
    aggregate_pb2,
    batch_delete_pb2,
    batch_pb2,
    properties_pb2,
    search_get_pb2,
    weaviate_pb2_grpc,
)
from werkzeug.wrappers import Request, Response

VERSION = "1.32.0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Store:
    def __init__(self) -> None:
        self.schemas: dict[str, dict] = {}
        self.tenants: dict[str, dict[str, dict[str, tuple[dict, np.ndarray]]]] = {}
        self.requests: list[tuple[str, object]] = []


def _vector(obj) -> np.ndarray:
    if obj.vector_bytes:
        return np.frombuffer(obj.vector_bytes, dtype=np.float32)
    if obj.vectors:
        return np.frombuffer(obj.vectors[0].vector_bytes, dtype=np.float32)
    return np.asarray(list(obj.vector), dtype=np.float32)


def _props(message) -> dict:
    props = {k: v for k, v in message.non_ref_properties.items()} if message.non_ref_properties else {}
    return {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in props.items()}


def _value(v) -> properties_pb2.Value:
    if isinstance(v, bool):
        return properties_pb2.Value(bool_value=v)
    if isinstance(v, int):
        return properties_pb2.Value(int_value=v)
    if isinstance(v, float):
        return properties_pb2.Value(number_value=v)
    return properties_pb2.Value(text_value=str(v))


class Servicer(weaviate_pb2_grpc.WeaviateServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    def BatchObjects(self, request, context):
        self.store.requests.append(("BatchObjects", request))
        for obj in request.objects:
            tenant = self.store.tenants.setdefault(obj.collection, {}).setdefault(obj.tenant, {})
            tenant[obj.uuid] = (_props(obj.properties), _vector(obj))
        return batch_pb2.BatchObjectsReply(took=0.001, errors=[])

    def _objects(self, collection: str, tenant: str, context) -> dict:
        tenants = self.store.tenants.get(collection, {})
        if tenant not in tenants:
            context.abort(grpc.StatusCode.NOT_FOUND, f"tenant not found: {tenant!r}")
        return tenants[tenant]

    def Search(self, request, context):
        self.store.requests.append(("Search", request))
        objects = self._objects(request.collection, request.tenant, context)
        hybrid = request.HasField("hybrid_search")
        query = _vector(request.hybrid_search if hybrid else request.near_vector)
        scored = []
        for key, (props, vector) in objects.items():
            cosine = float(query @ vector / (np.linalg.norm(query) * np.linalg.norm(vector) + 1e-9))
            scored.append((cosine, key, props))
        scored.sort(key=lambda x: -x[0])
        if hybrid:  # Weaviate's ranked fusion: alpha / (60 + dense rank) + (1 - alpha) / (60 + keyword rank)
            searchable = [
                p["name"] for p in self.store.schemas[request.collection]["properties"] if p["indexSearchable"]
            ]
            scored = self._ranked_fusion(request.hybrid_search, scored, objects, searchable)
        results = []
        for score, key, props in scored[: request.limit or 10]:
            metadata = search_get_pb2.MetadataResult(
                id=key,
                id_as_bytes=uuidlib.UUID(key).bytes,
                distance=1.0 - score,
                distance_present=True,
                score=score,
                score_present=True,
            )
            properties = search_get_pb2.PropertiesResult(
                non_ref_props=properties_pb2.Properties(fields={k: _value(v) for k, v in props.items()})
            )
            results.append(search_get_pb2.SearchResult(metadata=metadata, properties=properties))
        return search_get_pb2.SearchReply(took=0.001, results=results)

    @staticmethod
    def _ranked_fusion(hybrid, dense: list, objects: dict, searchable: list[str]) -> list:
        """Keyword ranking by how many query words each object's searched properties hold (a stand-in for
        BM25 with the same effect on these tests: an exact term outranks a near vector)."""
        words = set(re.findall(r"\w+", hybrid.query.lower()))
        fields = list(hybrid.properties) or searchable

        def hits(props: dict) -> int:
            held = set(re.findall(r"\w+", " ".join(str(props.get(f, "")) for f in fields).lower()))
            return len(words & held)

        keyword = sorted((k for k in objects if hits(objects[k][0]) > 0), key=lambda k: -hits(objects[k][0]))
        alpha = hybrid.alpha_param if hybrid.use_alpha_param else hybrid.alpha
        fused: dict[str, float] = {}
        for weight, ranking in ((alpha, [key for _, key, _ in dense]), (1 - alpha, keyword)):
            for rank, key in enumerate(ranking):
                fused[key] = fused.get(key, 0.0) + weight / (60 + rank)
        return sorted(((score, key, objects[key][0]) for key, score in fused.items()), key=lambda x: -x[0])

    def BatchDelete(self, request, context):
        self.store.requests.append(("BatchDelete", request))
        objects = self._objects(request.collection, request.tenant, context)
        target = request.filters.target.property or (list(request.filters.on) or [""])[0]
        doomed = [k for k, (props, _) in objects.items() if str(props.get(target)) == request.filters.value_text]
        for key in doomed:
            del objects[key]
        return batch_delete_pb2.BatchDeleteReply(took=0.001, matches=len(doomed), successful=len(doomed))

    def Aggregate(self, request, context):
        self.store.requests.append(("Aggregate", request))
        objects = self._objects(request.collection, request.tenant, context)
        if request.HasField("filters"):
            target = request.filters.target.property or (list(request.filters.on) or [""])[0]
            objects = {k: v for k, v in objects.items() if str(v[0].get(target)) == request.filters.value_text}
        count = len(objects)
        single = aggregate_pb2.AggregateReply.Single(objects_count=count)
        return aggregate_pb2.AggregateReply(took=0.001, single_result=single)


class Health(HealthServicer):
    def Check(self, request, context):
        return HealthCheckResponse(status=HealthCheckResponse.SERVING)


class FakeWeaviate:
    def __init__(self) -> None:
        self.store = Store()
        self.http = HTTPServer(host="127.0.0.1", port=free_port())
        self.grpc_port = free_port()
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(Servicer(self.store), self.grpc)
        add_HealthServicer_to_server(Health(), self.grpc)
        self.grpc.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        self._routes()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    def start(self) -> FakeWeaviate:
        self.http.start()
        self.grpc.start()
        return self

    def stop(self) -> None:
        self.grpc.stop(0)
        self.http.clear()
        if self.http.is_running():
            self.http.stop()

    def _routes(self) -> None:
        h = self.http
        h.expect_request("/v1/meta").respond_with_json({"version": VERSION, "modules": {}})
        h.expect_request("/v1/.well-known/ready").respond_with_data("")
        h.expect_request("/v1/.well-known/live").respond_with_data("")
        h.expect_request("/v1/nodes").respond_with_json({"nodes": [{"name": "fake", "status": "HEALTHY"}]})
        h.expect_request("/v1/schema", method="POST").respond_with_handler(self._create_schema)
        h.expect_request(re.compile(r"^/v1/schema/\w+/tenants$")).respond_with_handler(self._tenants)
        h.expect_request(re.compile(r"^/v1/schema/\w+/tenants/[\w-]+$")).respond_with_handler(self._tenant)
        h.expect_request(re.compile(r"^/v1/schema/\w+$"), method="GET").respond_with_handler(self._get_schema)

    @staticmethod
    def _stored(prop: dict) -> dict:
        """A property as a real server returns it: with the index settings it filled in."""
        text = "text" in prop.get("dataType", [])
        defaults = {"indexFilterable": True, "indexSearchable": text, "indexRangeFilters": False}
        return defaults | ({"tokenization": "word"} if text else {}) | prop

    def _create_schema(self, request: Request) -> Response:
        body = request.get_json()
        body["properties"] = [self._stored(p) for p in body.get("properties", [])]
        self.store.schemas[body["class"]] = body
        self.store.tenants.setdefault(body["class"], {})
        return Response(json.dumps(body), status=200, content_type="application/json")

    def _get_schema(self, request: Request) -> Response:
        name = request.path.rsplit("/", 1)[1]
        if name not in self.store.schemas:
            return Response(json.dumps({"error": [{"message": "not found"}]}), status=404)
        return Response(json.dumps(self.store.schemas[name]), status=200, content_type="application/json")

    def _tenants(self, request: Request) -> Response:
        collection = request.path.split("/")[3]
        tenants = self.store.tenants.setdefault(collection, {})
        if request.method == "POST":
            for t in request.get_json():
                tenants.setdefault(t["name"], {})
            return Response(json.dumps(request.get_json()), status=200, content_type="application/json")
        if request.method == "DELETE":
            for name in request.get_json():
                tenants.pop(name, None)
            return Response("", status=200)
        listing = [{"name": n, "activityStatus": "ACTIVE"} for n in tenants]
        return Response(json.dumps(listing), status=200, content_type="application/json")

    def _tenant(self, request: Request) -> Response:
        _, _, _, collection, _, tenant = request.path.split("/")
        exists = tenant in self.store.tenants.get(collection, {})
        body = json.dumps({"name": tenant, "activityStatus": "ACTIVE"}) if exists else ""
        return Response(body, status=200 if exists else 404, content_type="application/json")
