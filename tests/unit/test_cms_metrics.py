"""The CMS counts what it answers by route template and says which errors were which."""

from __future__ import annotations

import json
import logging

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url

from lorepin_cms import metrics
from lorepin_cms.app import create_app
from lorepin_cms.config import Config
from lorepin_cms.logs import JsonLines
from tests.conftest import ROOT

NOWHERE = make_url("postgresql+psycopg://lorepin:x@127.0.0.1:9/lorepin")  # nothing listens


def app_without_database() -> TestClient:
    config = Config(
        database_url=NOWHERE,
        version="9.9.9",
        git_revision="abc",
        migrations_dir=ROOT / "migrations",
    )
    return TestClient(create_app(config), raise_server_exceptions=False)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counts() -> dict[str, float]:
    pin = {"route": "/api/pins/{pin_id}", "method": "GET"}
    return {
        "read_503": value("lorepin_http_requests_total", **pin, status="503"),
        "read_422": value("lorepin_http_requests_total", **pin, status="422"),
        "unmatched": value(
            "lorepin_http_requests_total", route="unmatched", method="GET", status="404"
        ),
        "odd_method": value(
            "lorepin_http_requests_total", route="/healthz", method="other", status="405"
        ),
        **{c: value("lorepin_errors_total", category=c) for c in ("database", "client", "server")},
    }


def test_requests_are_counted_by_route_template_status_and_error_category() -> None:
    before = counts()
    with app_without_database() as client:
        assert client.get("/api/pins/7").status_code == 503  # the database is down
        assert client.get("/api/pins/seven").status_code == 422
        assert client.get("/no/such/path/123").status_code == 404
        assert client.request("BREW", "/healthz").status_code == 405
    after = counts()
    assert {k: after[k] - before[k] for k in before} == {
        "read_503": 1, "read_422": 1, "unmatched": 1, "odd_method": 1,
        "database": 1, "client": 3, "server": 1,
    }  # fmt: skip
    assert value("lorepin_http_requests_in_flight") == 0


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(JsonLines().format(record))


def crash(depth: int) -> None:
    if depth:
        crash(depth - 1)
    raise RuntimeError("a bug")


def test_an_unhandled_error_is_one_json_event_with_a_stable_fingerprint() -> None:
    client = app_without_database()

    def boom() -> None:
        crash(2)

    client.app.add_api_route("/boom", boom)  # type: ignore[attr-defined]
    lines = Lines()
    metrics.events.addHandler(lines)
    try:
        for request_id in ("req-1", "req-2"):
            answer = client.get("/boom", headers={"X-Request-Id": request_id})
            assert answer.status_code == 500
            assert answer.json() == {"error": "internal error"}  # nothing of the bug leaks
    finally:
        metrics.events.removeHandler(lines)
    first, second = (json.loads(line) for line in lines.lines)
    assert first["event"] == "unhandled_error" and first["type"] == "RuntimeError"
    assert first["category"] == "server" and first["route"] == "/boom"
    assert (first["request_id"], second["request_id"]) == ("req-1", "req-2")
    assert first["fingerprint"] == second["fingerprint"]  # the same bug, the same id
    assert first["frames"][-1].endswith(":crash") and "a bug" not in json.dumps(first)
    assert value("lorepin_unhandled_errors_total", fingerprint=first["fingerprint"],
                 type="RuntimeError") == 2  # fmt: skip


def test_fingerprints_tell_different_bugs_apart() -> None:
    def fails(kind: type[Exception]) -> Exception:
        try:
            raise kind("x")
        except Exception as exc:
            return exc

    assert metrics.fingerprint(fails(KeyError)) != metrics.fingerprint(fails(ValueError))
    assert metrics.fingerprint(fails(KeyError)) == metrics.fingerprint(fails(KeyError))


def test_switched_off_the_cms_counts_nothing() -> None:
    config = Config(
        database_url=NOWHERE,
        version="9.9.9",
        git_revision="abc",
        migrations_dir=ROOT / "migrations",
        metrics=False,
    )
    before = value("lorepin_http_requests_total", route="/healthz", method="GET", status="200")
    with TestClient(create_app(config)) as client:
        assert client.get("/healthz").status_code == 200
    assert (
        value("lorepin_http_requests_total", route="/healthz", method="GET", status="200") == before
    )
