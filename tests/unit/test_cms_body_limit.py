"""Request bodies over the limit get a 413 before the CMS holds more than the limit.

No database: these requests never get as far as one (nothing listens on port 9).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from lorepin_cms.app import create_app
from lorepin_cms.config import Config
from tests.conftest import ROOT

LIMIT = 64 * 1024
PIN = {"title": "The drowned bell", "latitude": 47.2, "longitude": -2.1}


def app_with_limit(limit: int = LIMIT) -> Any:
    return create_app(
        Config(
            database_url=make_url("postgresql+psycopg://lorepin:x@127.0.0.1:9/lorepin"),
            version="9.9.9",
            git_revision="abc",
            migrations_dir=ROOT / "migrations",
            max_body_bytes=limit,
        )
    )


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app_with_limit()) as c:
        yield c


def padded(size: int) -> bytes:
    """A valid pin, padded with JSON whitespace to exactly `size` bytes."""
    body = json.dumps(PIN).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_a_declared_length_over_the_limit_is_a_413(client: TestClient) -> None:
    response = client.post(
        "/api/pins", content=padded(LIMIT + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {"error": f"request body larger than {LIMIT} bytes"}


def test_a_chunked_body_over_the_limit_is_a_413(client: TestClient) -> None:
    chunks = iter([padded(LIMIT + 1)[:1000], padded(LIMIT + 1)[1000:]])
    response = client.post(
        "/api/pins", content=chunks, headers={"content-type": "application/json"}
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json() == {"error": f"request body larger than {LIMIT} bytes"}


def test_a_body_at_the_limit_gets_through(client: TestClient) -> None:
    # As far as the database, which is not there (the token is looked up there first): the
    # body itself was accepted.
    token = "lp_" + "A" * 12 + "_" + "B" * 43
    response = client.post(
        "/api/pins",
        content=padded(LIMIT),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    assert response.status_code == 503


def test_a_streamed_body_is_cut_off_at_the_limit_not_read_to_the_end() -> None:
    """A 300 MB upload without Content-Length: the CMS stops reading just past 1 MiB."""
    limit, chunk, total = 1024 * 1024, b" " * 65536, 300 * 1024 * 1024
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": pulled < total}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/pins",
        "raw_path": b"/api/pins",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    anyio.run(app_with_limit(limit), scope, receive, send)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 413
    assert pulled <= limit + len(chunk)
