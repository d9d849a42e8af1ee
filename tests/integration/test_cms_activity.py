"""The CMS's user activity against a real, migrated PostgreSQL: what a visitor's session
leaves in `activity` (and what it never does), the report's figures from it, retention,
and a database that is away."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from lorepin_cms import activity
from lorepin_cms.app import connect, create_app
from lorepin_tasks.plans import activity_report
from tests.conftest import bearer, grant
from tests.integration.test_cms_api import PIN, config_for, migrate

pytestmark = pytest.mark.docker

SID = "0b7e4c1a-2f3d-4e5f-8a9b-0c1d2e3f4a5b"

COLUMNS = ["at", "duration_ms", "id", "method", "route", "session_id", "status", "user_id"]


def rows(url: str) -> list[dict[str, object]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT * FROM activity ORDER BY at, id")).mappings()
            return [dict(r) for r in found]
    finally:
        engine.dispose()


def test_a_visit_is_recorded_by_route_template_under_one_cookie_session(
    database_url: str,
) -> None:
    migrate(database_url)
    with TestClient(create_app(config_for(database_url)), base_url="https://cms.test") as browser:
        first = browser.get("/api/pins")
        cookie = first.cookies.get(activity.COOKIE)
        assert cookie and activity.SESSION_ID.fullmatch(cookie)
        set_cookie = first.headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Secure" in set_cookie
        # A response that sets the cookie is this visitor's alone: no shared cache keeps it.
        assert first.headers["cache-control"] == "private, no-cache"
        made = browser.post("/api/pins", json=PIN, headers=bearer(grant(database_url))).json()
        again = browser.get(f"/api/pins/{made['id']}")
        assert "set-cookie" not in again.headers  # the session goes on: no new cookie
        assert again.headers["cache-control"] == "no-cache"
        assert browser.get("/healthz").status_code == 200  # the probes are not visitors
        assert browser.get("/version").status_code == 200
        browser.cookies.clear()
        browser.get("/api/pins", headers={"cookie": f"{activity.COOKIE}=forged; other=1"})
    # Leaving the client ends the app: the last batch is written on the way out.
    found = rows(database_url)
    assert [(r["method"], r["route"], r["status"]) for r in found] == [
        ("GET", "/api/pins", 200),
        ("POST", "/api/pins", 201),
        ("GET", "/api/pins/{pin_id}", 200),  # the template: never the pin's id
        ("GET", "/api/pins", 200),
    ]
    assert {str(r["session_id"]) for r in found[:3]} == {cookie}
    assert str(found[3]["session_id"]) not in (cookie, "forged")  # a forged id is replaced
    assert sorted(found[0]) == COLUMNS  # no address, no path values, no body: none stored
    # The user behind a token, and only theirs: anonymous reads have none.
    assert [str(r["user_id"])[:12] for r in found] == ["None", "test-editor-", "None", "None"]

    # The report's own queries over these rows: the flows of the scripted session.
    now = datetime.now(UTC)
    sql = activity_report.queries(now - timedelta(hours=1), now + timedelta(minutes=1))
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            got: dict[str, Any] = {k: conn.execute(text(q)).scalar() for k, q in sql.items()}
    finally:
        engine.dispose()
    assert got["exists"] is True
    assert (got["totals"]["sessions"], got["totals"]["requests"]) == (2, 4)
    assert [(d["sessions"], d["requests"]) for d in got["days"]] == [(2, 4)]
    assert [(r["method"], r["route"], r["requests"], r["sessions"]) for r in got["routes"]] == [
        ("GET", "/api/pins", 2, 2),
        ("GET", "/api/pins/{pin_id}", 1, 1),
        ("POST", "/api/pins", 1, 1),
    ]
    assert [(f["from"], f["to"], f["times"]) for f in got["flows"]] == [
        ("GET /api/pins", "POST /api/pins", 1),
        ("POST /api/pins", "GET /api/pins/{pin_id}", 1),
    ]


def test_rows_past_the_retention_are_deleted_and_newer_ones_kept(database_url: str) -> None:
    migrate(database_url)
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            for days in (40, 31, 29, 0):
                conn.execute(
                    text(
                        "INSERT INTO activity (at, session_id, method, route, status, duration_ms)"
                        " VALUES (now() - make_interval(days => :d), gen_random_uuid(), 'GET',"
                        " '/api/pins', 200, 1.0)"
                    ),
                    {"d": days},
                )
    finally:
        engine.dispose()
    recorder = activity.Recorder(connect(config_for(database_url), 1, "activity"), 30)
    try:
        assert recorder.prune() == 2
        assert recorder.prune() == 0
    finally:
        recorder.engine.dispose()
    ages = sorted((datetime.now(UTC) - r["at"]).days for r in rows(database_url))  # type: ignore[operator]
    assert ages == [0, 29]


def test_events_wait_while_the_database_is_away_and_are_written_once_it_is_back(
    database_url: str,
) -> None:
    migrate(database_url)
    recorder = activity.Recorder(connect(config_for(database_url), 1, "activity"), 30)
    dropped = activity.DROPPED._value.get()
    working = recorder.engine
    away = create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none",
                         connect_args={"connect_timeout": 1})  # fmt: skip
    try:
        recorder.engine = away
        for _ in range(3):
            recorder.add(activity.Event(datetime.now(UTC), SID, None, "GET", "/", 200, 1.0))
        assert recorder.flush() == 0 and recorder.flush() == 0  # two ticks without a database
        assert len(recorder.buffer) == 3 and activity.DROPPED._value.get() == dropped
        recorder.engine = working
        assert recorder.flush() == 3 and recorder.buffer == []
        assert len(rows(database_url)) == 3
    finally:
        away.dispose()
        working.dispose()
