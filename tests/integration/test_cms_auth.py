"""Who may change what in the CMS: tokens, roles, drafts, the failure limit and the security
log, against a real, migrated PostgreSQL. (`invoke cms.user.add` and `cms.token.*` are
tested end to end in tests/e2e/test_up.py.)"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from lorepin_cms.app import create_app
from lorepin_tasks.plans.security import UNGUARDED_PROBES
from tests.conftest import bearer, grant
from tests.integration.test_cms_api import PIN, config_for, migrate

pytestmark = pytest.mark.docker

DRAFT = {**PIN, "title": "The unfinished well", "status": "draft"}


@pytest.fixture
def cms(database_url: str) -> Iterator[TestClient]:
    """The CMS on a fresh database; no token unless a request brings one."""
    migrate(database_url)
    app = create_app(replace(config_for(database_url), auth_failures_per_minute=5))
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def sql(url: str, statement: str, **params: object) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


def after(statement: str) -> object:
    """A spoiler that changes the token's row and hands the token on unchanged."""

    def spoil(token: str, url: str) -> str:
        sql(url, statement)
        return token

    return spoil


def key_of(token: str) -> str:
    return token.split("_")[1]


def test_changes_need_an_editor_and_reads_of_drafts_a_viewer(
    cms: TestClient, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    editor, viewer = grant(database_url, "editor"), grant(database_url, "viewer")
    anonymous = cms.post("/api/pins", json=PIN)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json() == {"error": "this needs a token with the role editor or higher"}
    assert cms.post("/api/pins", json=PIN, headers=bearer(viewer)).status_code == 403
    public = cms.post("/api/pins", json=PIN, headers=bearer(editor)).json()
    draft = cms.post("/api/pins", json=DRAFT, headers=bearer(editor)).json()
    for method in ("patch", "delete"):
        kwargs = {"json": {"title": "x"}} if method == "patch" else {}
        assert getattr(cms, method)(f"/api/pins/{public['id']}", **kwargs).status_code == 401
        refused = getattr(cms, method)(
            f"/api/pins/{public['id']}", headers=bearer(viewer), **kwargs
        )
        assert refused.status_code == 403
    assert cms.get(f"/api/pins/{public['id']}").json()["title"] == PIN["title"]  # unchanged
    # The token is checked before the request is: what `security.scan` relies on to probe
    # the writes with requests nothing could apply (lorepin_tasks.plans.security).
    for method, path, body in UNGUARDED_PROBES:
        assert cms.request(method, path, content=body).status_code == 401, (method, path)
        assert cms.request(method, path, content=body, headers=bearer(editor)).status_code == 422

    # Published pins are public; a draft is not there for the public, not even its id.
    assert [p["id"] for p in cms.get("/api/pins").json()["items"]] == [public["id"]]
    assert cms.get(f"/api/pins/{draft['id']}").status_code == 404
    assert cms.get("/api/pins", params={"status": "draft"}).status_code == 401
    seen = cms.get("/api/pins", headers=bearer(viewer)).json()
    assert {p["id"] for p in seen["items"]} == {public["id"], draft["id"]}
    assert cms.get(f"/api/pins/{draft['id']}", headers=bearer(viewer)).status_code == 200
    # What a token sees is its own: no shared cache keeps it or mixes it with the public's.
    assert (
        cms.get("/api/pins", headers=bearer(viewer)).headers["cache-control"].startswith("private")
    )
    public_list = cms.get("/api/pins")
    assert public_list.headers["vary"] == "Authorization"
    assert public_list.headers["cache-control"] == "no-cache"  # a shared cache may keep it

    events = [r.fields for r in caplog.records if r.name == "lorepin_cms.security"]  # type: ignore[attr-defined]
    assert [e["what"] for e in events] == ["auth.missing", "auth.forbidden"] * 3 + [
        "auth.missing"
    ] * len(UNGUARDED_PROBES)
    assert (events[1]["role"], events[1]["needed"], events[1]["method"]) == (
        "viewer", "editor", "POST"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda t, url: "lp_" + key_of(t) + "_" + "A" * 43, "wrong secret"),
        (lambda t, url: t[:-1], "malformed token"),
        (lambda t, url: "lp_ZZZZZZZZZZZZ_" + t.split("_", 2)[2], "unknown token"),
        (after("UPDATE api_tokens SET expires_at = now() - interval '1 s'"), "expired token"),
        (after("UPDATE api_tokens SET revoked_at = now()"), "revoked token"),
    ],
    ids=["wrong", "malformed", "unknown", "expired", "revoked"],
)
def test_a_token_that_does_not_hold_is_a_401_and_a_security_event(
    cms: TestClient,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    spoil: object,
    reason: str,
) -> None:
    token = grant(database_url)
    assert cms.post("/api/pins", json=PIN, headers=bearer(token)).status_code == 201
    bad = spoil(token, database_url)  # type: ignore[operator]
    with caplog.at_level(logging.INFO, logger="lorepin_cms.security"):
        refused = cms.post("/api/pins", json=PIN, headers=bearer(bad))
        listed = cms.get("/api/pins", headers=bearer(bad))  # a bad token is bad on reads too
    assert (refused.status_code, refused.json()) == (401, {"error": "the token is not valid"})
    assert listed.status_code == 401
    assert cms.get("/api/pins").json()["total"] == 1  # nothing was written
    events = [r.fields for r in caplog.records if r.name == "lorepin_cms.security"]  # type: ignore[attr-defined]
    assert [(e["what"], e["reason"]) for e in events] == [("auth.failed", reason)] * 2
    logged = json.dumps(events)
    assert token.split("_", 2)[2] not in logged and bad not in logged  # never a secret


def test_a_flood_of_failed_tokens_is_refused_unchecked_with_retry_after(
    cms: TestClient, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = grant(database_url)
    wrong = "lp_" + key_of(good) + "_" + "B" * 43
    with caplog.at_level(logging.INFO, logger="lorepin_cms.security"):
        tries = [cms.post("/api/pins", json=PIN, headers=bearer(wrong)) for _ in range(7)]
        after = cms.post("/api/pins", json=PIN, headers=bearer(good))
    assert [t.status_code for t in tries] == [401] * 5 + [429] * 2  # the limit here is 5
    assert 1 <= int(tries[-1].headers["retry-after"]) <= 60
    assert after.status_code == 429  # even a right token waits: the address is guessing
    whats = [r.fields["what"] for r in caplog.records if r.name == "lorepin_cms.security"]  # type: ignore[attr-defined]
    assert whats == ["auth.failed"] * 5 + ["auth.limited"] * 3


def test_text_fields_keep_sql_and_script_as_text(cms: TestClient, database_url: str) -> None:
    editor = grant(database_url)
    hostile = {
        **PIN,
        "title": "'); DROP TABLE pins; --",
        "body": "<script>alert(1)</script> OR 1=1",
        "place_name": "<img src=x onerror=alert(1)>",
    }
    made = cms.post("/api/pins", json=hostile, headers=bearer(editor))
    assert made.status_code == 201
    read = cms.get(f"/api/pins/{made.json()['id']}").json()
    assert (read["title"], read["body"], read["place_name"]) == (
        hostile["title"],
        hostile["body"],
        hostile["place_name"],
    )
    assert cms.get("/api/pins").json()["total"] == 1  # the table is still there


def test_a_demoted_user_s_tokens_are_demoted_with_them(cms: TestClient, database_url: str) -> None:
    token = grant(database_url, "admin")
    assert cms.post("/api/pins", json=PIN, headers=bearer(token)).status_code == 201
    sql(database_url, "UPDATE cms_users SET role = 'viewer'")
    assert cms.post("/api/pins", json=PIN, headers=bearer(token)).status_code == 403
