"""The CMS's JSON API against a real, migrated PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from lorepin_cms.app import create_app
from lorepin_cms.config import Config
from tests.conftest import BEFORE_HEAD, HEAD, ROOT, bearer, grant

pytestmark = pytest.mark.docker

PIN = {
    "title": "The drowned bell",
    "body": "It rings at low tide.",
    "latitude": 47.2,
    "longitude": -2.1,
    "tags": ["Sea", "legend"],
    "status": "published",
}


def migrate(url: str, target: str = "head") -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", target],
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        capture_output=True,
        timeout=120,
    )


def config_for(url: str) -> Config:
    return Config(
        database_url=make_url(url),
        version="9.9.9",
        git_revision="abc",
        migrations_dir=ROOT / "migrations",
    )


def client_for(url: str, token: str | None = None) -> TestClient:
    """The CMS on `url`; every request carries `token` when one is given."""
    return TestClient(create_app(config_for(url)), headers=bearer(token) if token else None)


@pytest.fixture
def api(database_url: str) -> Iterator[TestClient]:
    """The CMS on a fresh database, used by an editor."""
    migrate(database_url)
    with client_for(database_url, grant(database_url)) as client:
        yield client
        client.app.state.engine.dispose()  # type: ignore[attr-defined]


def test_create_read_update_delete(api: TestClient) -> None:
    created = api.post("/api/pins", json=PIN)
    assert created.status_code == 201
    pin = created.json()
    assert pin["tags"] == ["sea", "legend"]
    assert pin["slug"] == "the-drowned-bell"
    assert pin["created_at"] == pin["updated_at"]

    assert api.get(f"/api/pins/{pin['id']}").json() == pin

    updated = api.patch(f"/api/pins/{pin['id']}", json={"status": "draft", "title": "Bell"})
    assert updated.status_code == 200
    assert (updated.json()["status"], updated.json()["title"]) == ("draft", "Bell")
    assert updated.json()["updated_at"] > pin["updated_at"]
    assert updated.json()["body"] == PIN["body"]

    assert api.delete(f"/api/pins/{pin['id']}").status_code == 204
    gone = api.get(f"/api/pins/{pin['id']}")
    assert gone.status_code == 404
    assert gone.json() == {"error": f"pin {pin['id']} not found"}
    assert api.delete(f"/api/pins/{pin['id']}").status_code == 404


def test_list_pages_and_filters(api: TestClient) -> None:
    for i in range(7):
        body = {
            **PIN,
            "title": f"pin {i}",
            "tags": ["even" if i % 2 == 0 else "odd"],
            "status": "published" if i < 3 else "draft",
        }
        assert api.post("/api/pins", json=body).status_code == 201

    page = api.get("/api/pins", params={"limit": 3, "offset": 0}).json()
    assert (page["total"], page["limit"], page["offset"]) == (7, 3, 0)
    assert [p["title"] for p in page["items"]] == ["pin 6", "pin 5", "pin 4"]
    last = api.get("/api/pins", params={"limit": 3, "offset": 6}).json()
    assert [p["title"] for p in last["items"]] == ["pin 0"]

    even = api.get("/api/pins", params={"tag": "EVEN"}).json()
    assert even["total"] == 4 and all(p["tags"] == ["even"] for p in even["items"])
    published_odd = api.get("/api/pins", params={"tag": "odd", "status": "published"}).json()
    assert [p["title"] for p in published_odd["items"]] == ["pin 1"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/api/pins", {**PIN, "latitude": 91}, 422),
        ("post", "/api/pins", {**PIN, "title": ""}, 422),
        ("post", "/api/pins", {**PIN, "title": " \u3000\ufeff\u2029 "}, 422),
        ("post", "/api/pins", {**PIN, "latitude": True}, 422),
        ("post", "/api/pins", {"title": "no place"}, 422),
        ("post", "/api/pins", [PIN], 422),
        ("get", "/api/pins/not-a-number", None, 422),
        ("get", "/api/pins/0", None, 422),
        ("get", "/api/pins/99999999999999999999", None, 422),
        ("get", "/api/pins?limit=0", None, 422),
        ("get", "/api/pins?status=archived", None, 422),
        ("patch", "/api/pins/1", {"title": None}, 422),
        ("patch", "/api/pins/1", {"status": None}, 422),
        ("patch", "/api/pins/1", {}, 422),
        ("patch", "/api/pins/424242", {"title": "x"}, 404),
    ],
)
def test_bad_requests_get_a_json_4xx(
    api: TestClient, method: str, path: str, body: object, status: int
) -> None:
    response = api.request(method.upper(), path, json=body)
    assert response.status_code == status
    assert "error" in response.json()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/pins", {**PIN, "title": "The drowned\u0000bell"}),
        ("post", "/api/pins", {**PIN, "body": "\u0000"}),
        ("post", "/api/pins", {**PIN, "place_name": "Ys\u0000"}),
        ("post", "/api/pins", {**PIN, "title": "lone \ud800 surrogate"}),
        ("post", "/api/pins", {**PIN, "body": "lone \udfff surrogate"}),
        ("patch", "/api/pins/{id}", {"title": "\u0000"}),
        ("patch", "/api/pins/{id}", {"body": "a\u0000b"}),
        ("patch", "/api/pins/{id}", {"place_name": "\ud83d"}),
        ("get", "/api/pins?tag=sea%00", None),
    ],
)
def test_text_postgresql_cannot_store_is_a_422(
    api: TestClient, method: str, path: str, body: object
) -> None:
    pin_id = api.post("/api/pins", json=PIN).json()["id"]
    response = api.request(
        method.upper(),
        path.format(id=pin_id),
        content=None if body is None else json.dumps(body),  # \u escapes, as a client sends
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid request"
    assert api.get(f"/api/pins/{pin_id}").json()["title"] == PIN["title"]


def test_database_errors_map_to_what_went_wrong(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Only an outage is a 503: bad data is a 422, a conflict 409, anything else a 500."""
    migrate(database_url)
    app = create_app(config_for(database_url))
    failing = {  # real errors from PostgreSQL (or psycopg), as a missed check would cause
        "data": ("SELECT length(:v)", {"v": "nul\u0000"}),
        "conflict": ("INSERT INTO pins (id, title, latitude, longitude) VALUES (1, 'a', 0, 0)", {}),
        "bug": ("SELECT * FROM no_such_table", {}),
    }

    @app.get("/fail/{kind}")
    def fail(kind: str) -> None:
        statement, params = failing[kind]
        with app.state.engine.begin() as conn:
            conn.execute(text(statement), params)

    with TestClient(app, raise_server_exceptions=False) as client:
        data = client.get("/fail/data")
        assert (data.status_code, data.json()["error"]) == (422, "invalid data")
        client.get("/fail/conflict")
        conflict = client.get("/fail/conflict")  # the same id again
        assert (conflict.status_code, conflict.json()) == (
            409,
            {"error": "conflicts with the stored data"},
        )
        with caplog.at_level(logging.ERROR, logger="lorepin_cms"):
            bug = client.get("/fail/bug")
        assert (bug.status_code, bug.json()) == (500, {"error": "internal error"})
        assert "no_such_table" not in bug.text
        assert any("ProgrammingError" in r.getMessage() for r in caplog.records)
        app.state.engine.dispose()


def test_bodies_up_to_one_mib_are_accepted_larger_ones_are_a_413(api: TestClient) -> None:
    limit = 1024 * 1024
    pin = json.dumps(PIN).encode()
    at_limit = pin[:-1] + b" " * (limit - len(pin)) + b"}"  # JSON whitespace padding
    headers = {"content-type": "application/json"}
    assert api.post("/api/pins", content=at_limit, headers=headers).status_code == 201
    over = api.post("/api/pins", content=at_limit + b" ", headers=headers)
    assert over.status_code == 413
    assert over.json() == {"error": f"request body larger than {limit} bytes"}
    assert api.get("/api/pins").json()["total"] == 1


def test_no_free_connection_within_the_pool_timeout_is_a_503(database_url: str) -> None:
    migrate(database_url)
    app = create_app(replace(config_for(database_url), db_pool_size=1, db_pool_timeout=0.5))
    with TestClient(app) as client:
        with app.state.engine.connect():  # holds the only connection
            busy = client.get("/api/pins")
        assert (busy.status_code, busy.json()) == (503, {"error": "database unavailable"})
        assert client.get("/api/pins").status_code == 200
        app.state.engine.dispose()


def test_malformed_json_is_a_4xx(api: TestClient) -> None:
    response = api.post("/api/pins", content=b"{bad", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid request"


def test_a_405_names_every_method_of_the_resource(api: TestClient) -> None:
    one = api.put("/api/pins/1", json=PIN)
    assert (one.status_code, one.json()) == (405, {"error": "Method Not Allowed"})
    assert one.headers["allow"] == "DELETE, GET, PATCH"
    assert api.put("/api/pins", json=PIN).headers["allow"] == "GET, POST"


def test_a_refused_pattern_is_explained_in_words(api: TestClient) -> None:
    response = api.post("/api/pins", json={**PIN, "title": "\u3000 ", "tags": ["a b"]})
    assert response.status_code == 422
    assert {(e["loc"][-1], e["msg"]) for e in response.json()["detail"]} == {
        ("title", "needs a character that is not whitespace, and may not contain NUL (\\u0000)"),
        (0, "letters, digits, '_' and '-', starting with a letter or digit"),
    }


def test_a_body_that_is_not_utf8_is_a_422_like_any_malformed_json(api: TestClient) -> None:
    response = api.post(
        "/api/pins",
        content=b'{"title": "caf\xe9", "latitude": 1, "longitude": 2}',  # Latin-1
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid request"


def test_the_schema_documents_every_status_and_the_error_body(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    error = {"$ref": "#/components/schemas/ErrorOut"}
    expected = {
        ("/api/pins", "post"): {"201", "401", "403", "409", "413", "422", "429", "503"},
        ("/api/pins", "get"): {"200", "304", "401", "422", "429", "503"},
        ("/api/pins/{pin_id}", "get"): {"200", "304", "401", "404", "422", "429", "503"},
        ("/api/pins/{pin_id}", "patch"): {"200", "401", "403", "404", "409", "413", "422",
                                          "429", "503"},
        ("/api/pins/{pin_id}", "delete"): {"204", "401", "403", "404", "422", "429", "503"},
    }  # fmt: skip
    for (path, method), statuses in expected.items():
        operation = spec["paths"][path][method]
        responses = operation["responses"]
        assert set(responses) == statuses, (path, method)
        # Changes need a token; reads take one (for drafts) but are public.
        needs_token = method in ("post", "patch", "delete")
        assert operation.get("security") == ([{"token": []}] if needs_token else None)
        for status in statuses - {"200", "201", "204", "304"}:
            assert responses[status]["content"]["application/json"]["schema"] == error
        assert "content" not in responses.get("304", {})  # a 304 has no body
    assert spec["components"]["schemas"]["ErrorOut"]["required"] == ["error"]
    update = spec["components"]["schemas"]["PinUpdate"]
    assert update["minProperties"] == 1
    assert not [name for name, field in update["properties"].items() if "null" in str(field)]


def test_health_ready_and_version(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "alive"}
    assert api.get("/readyz").json() == {"status": "ready", "schema": HEAD}
    assert api.get("/version").json() == {
        "version": "9.9.9",
        "git_revision": "abc",
        "schema_revision": HEAD,
        "schema_expected": HEAD,
    }


def test_readyz_reports_a_schema_behind_the_code(database_url: str) -> None:
    migrate(database_url, BEFORE_HEAD)
    with client_for(database_url) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "schema mismatch",
            "schema": BEFORE_HEAD,
            "expected": HEAD,
            "reason": f"schema behind this build: {HEAD} is missing",
        }
        client.app.state.engine.dispose()  # type: ignore[attr-defined]


def test_unreachable_database_is_503_not_500(tmp_path: Path) -> None:
    url = "postgresql+psycopg://lorepin:x@127.0.0.1:9/lorepin"  # nothing listens on port 9
    with client_for(url) as client:
        assert client.get("/readyz").status_code == 503
        listed = client.get("/api/pins")
        assert listed.status_code == 503
        assert listed.json() == {"error": "database unavailable"}


def test_the_cms_connections_carry_their_timeouts(database_url: str) -> None:
    """invoke.yaml's `database:` reaches every connection: a statement over its timeout is
    cancelled by PostgreSQL itself."""
    from sqlalchemy.exc import OperationalError

    config = replace(config_for(database_url), db_statement_timeout_ms=300,
                     db_idle_in_transaction_timeout_ms=45_000)  # fmt: skip
    engine = create_app(config).state.engine
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "300ms"
            assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "45s"
            with pytest.raises(OperationalError, match="statement timeout"):
                conn.execute(text("SELECT pg_sleep(2)"))
    finally:
        engine.dispose()


def test_reads_carry_an_etag_and_an_unchanged_one_is_a_bodyless_304(api: TestClient) -> None:
    pin = api.post("/api/pins", json=PIN).json()
    for path in ("/api/pins", f"/api/pins/{pin['id']}"):
        first = api.get(path)
        tag = first.headers["etag"]
        assert first.status_code == 200 and tag.startswith('W/"')
        # The editor's answer is theirs (test_cms_auth: the public's is "no-cache").
        assert first.headers["cache-control"] == "private, no-cache"
        assert first.headers["vary"] == "Authorization"
        again = api.get(path, headers={"If-None-Match": tag})
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", tag)
        assert api.get(path, headers={"If-None-Match": '"another"'}).status_code == 200
    listed = api.get("/api/pins").headers["etag"]
    api.patch(f"/api/pins/{pin['id']}", json={"title": "Renamed"})
    changed = api.get("/api/pins", headers={"If-None-Match": listed})
    assert changed.status_code == 200 and changed.headers["etag"] != listed  # an edit shows
    missing = api.get("/api/pins/999999")
    assert missing.status_code == 404 and "etag" not in missing.headers
