"""The API against its own OpenAPI schema: generated requests never crash it, every reply matches the schema.

503 is allowed: it is the documented answer when no worker serves a queue,
which is the case here (no worker runs in this test); any other 5xx fails.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from service import bases, keys

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())
CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def operator(module_records):
    bases.create_kb("town")
    return {"Authorization": f"Bearer {keys.create_key('admin')}"}


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_replies_match_the_schema(case, operator):
    response = case.call(headers=operator)
    assert response.status_code < 500 or response.status_code == 503, response.text
    case.validate_response(response, checks=CHECKS)
