"""The API does what its OpenAPI schema (/openapi.json) says, for generated requests.

Schemathesis derives requests from the schema, valid and invalid ones, sends them to the
app in-process and checks every response: no 5xx, only documented status codes and content
types, bodies that match their schemas, valid data accepted and invalid data refused. Each
operation gets a fresh, migrated database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from lorepin_cms.app import create_app
from tests.conftest import bearer, grant
from tests.integration.test_cms_api import PIN, config_for, migrate

pytestmark = pytest.mark.docker

# The schema comes from the code alone (no database is touched to serve /openapi.json);
# the requests go to an app on a real database (`app` below). Not from_fixture: it reads
# a private attribute of pytest's that pytest 9.2 removed.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(config_for("postgresql+psycopg://schema-only@127.0.0.1:9/x"))
)


@pytest.fixture
def app(database_url: str) -> Iterator[FastAPI]:
    """The CMS with three pins (ids 1-3), so generated ids find some; `app.state.token`
    is an editor's, so the writes are exercised past their authentication."""
    migrate(database_url)
    app = create_app(config_for(database_url))
    app.state.token = grant(database_url)
    with TestClient(app, headers=bearer(app.state.token)) as client:
        for _ in range(3):
            assert client.post("/api/pins", json=PIN).status_code == 201
    yield app
    app.state.engine.dispose()


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_does_what_its_schema_says(case: schemathesis.Case[Any], app: FastAPI) -> None:
    case.call_and_validate(app=app, headers=bearer(app.state.token))
