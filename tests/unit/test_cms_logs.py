"""The CMS's log lines and the request id its SQL carries (lorepin_cms.logs)."""

from __future__ import annotations

import json
import logging

from sqlalchemy import create_engine, event, text

from lorepin_cms import logs


def test_a_statement_carries_the_request_id_in_a_comment_only_within_a_request() -> None:
    engine = create_engine("sqlite://")
    logs.tag_statements(engine)
    sent: list[str] = []
    event.listen(engine, "after_cursor_execute", lambda *a: sent.append(a[2]))
    token = logs.request_id.set("req-42")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        logs.request_id.reset(token)
    with engine.connect() as conn:
        conn.execute(text("SELECT 2"))
    assert sent == ["/* request_id='req-42' */ SELECT 1", "SELECT 2"]


def test_a_line_leads_with_its_event_and_keeps_its_fields() -> None:
    record = logging.LogRecord(
        "lorepin_cms.events", logging.ERROR, __file__, 1, "boom %s", ("x",), None
    )
    record.event = "unhandled_error"
    record.fields = {"fingerprint": "abc"}
    token = logs.request_id.set("req-1")
    try:
        line = logs.JsonLines().format(record)
    finally:
        logs.request_id.reset(token)
    assert line.startswith('{"event": "unhandled_error"')  # what `invoke errors` looks for
    fields = json.loads(line)
    assert (fields["level"], fields["message"], fields["request_id"], fields["fingerprint"]) == (
        "error",
        "boom x",
        "req-1",
        "abc",
    )
    assert fields["time"].endswith("+00:00")


def test_only_sane_request_ids_are_kept() -> None:
    assert logs.REQUEST_ID_FORMAT.fullmatch("0b6e5a1c-6a7d-4c43-9a3e-1f2b3c4d5e6f")
    for bad in ("", "a b", "x*/", "é", "x" * 129):
        assert not logs.REQUEST_ID_FORMAT.fullmatch(bad)


def test_health_checks_log_at_debug_level_and_failures_louder() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/api/pins")
    def pins() -> list[int]:
        return []

    app.add_middleware(logs.RequestLog)
    seen: list[tuple[str, int]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.fields["route"], record.levelno))  # type: ignore[attr-defined]

    keep = Keep(level=logging.DEBUG)
    logs.access.addHandler(keep)
    logs.access.setLevel(logging.DEBUG)
    try:
        with TestClient(app) as client:
            client.get("/healthz")
            client.get("/api/pins")
    finally:
        logs.access.removeHandler(keep)
        logs.access.setLevel(logging.NOTSET)
    assert seen == [("/healthz", logging.DEBUG), ("/api/pins", logging.INFO)]
