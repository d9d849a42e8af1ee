"""The CMS's activity recording without a database: the cookie it trusts and issues, and
the bound on what a worker buffers."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine
from starlette.datastructures import Headers, MutableHeaders

from lorepin_cms import activity

SID = "0b7e4c1a-2f3d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    ("cookie", "session"),
    [
        (f"lorepin_sid={SID}", SID),
        (f"a=1; lorepin_sid={SID}; b=2", SID),
        ("lorepin_sid=forged", None),
        (f"lorepin_sid={SID.upper()}", None),  # not as this CMS writes them
        (f"lorepin_sid={SID}x", None),
        ("lorepin_sid", None),
        ('lorepin_sid="unterminated', None),
        ("", None),
        # A browser's other cookies, however odd, never hide the session's.
        (f'consent={{"ads":false}}; lorepin_sid={SID}', SID),
        (f"name=hello world; lorepin_sid={SID}; e=\u00e9", SID),
        (f'a="b; c\\d;; lorepin_sid={SID}', SID),
    ],
)
def test_only_a_session_id_this_cms_could_have_issued_is_taken(
    cookie: str, session: str | None
) -> None:
    assert activity.session_of(Headers({"cookie": cookie})) == session


@pytest.mark.parametrize(
    ("cache", "secure", "expected_cache", "flags"),
    [
        ("no-cache", True, "private, no-cache", "Path=/; HttpOnly; SameSite=Lax; Secure"),
        (None, False, "private", "Path=/; HttpOnly; SameSite=Lax"),
    ],
)
def test_the_cookie_is_first_party_out_of_scripts_reach_and_never_shared_cached(
    cache: str | None, secure: bool, expected_cache: str, flags: str
) -> None:
    headers = MutableHeaders({"cache-control": cache} if cache else {})
    activity.set_cookie(headers, SID, secure)
    assert headers["set-cookie"] == f"lorepin_sid={SID}; {flags}"
    assert headers["cache-control"] == expected_cache


def test_a_full_buffer_drops_and_counts_what_does_not_fit() -> None:
    recorder = activity.Recorder(create_engine("sqlite://"), 30)
    dropped = activity.DROPPED._value.get()
    event = activity.Event(datetime.now(UTC), SID, None, "GET", "/api/pins", 200, 1.0)
    for _ in range(activity.MAX_BUFFERED + 5):
        recorder.add(event)
    assert len(recorder.buffer) == activity.MAX_BUFFERED
    assert activity.DROPPED._value.get() - dropped == 5


def test_the_session_cookie_is_found_in_a_second_cookie_header() -> None:
    raw = [(b"cookie", b"theme=dark"), (b"cookie", f"lorepin_sid={SID}".encode())]
    assert activity.session_of(Headers(raw=raw)) == SID


def test_a_batch_the_database_did_not_take_waits_within_the_bound() -> None:
    away = create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none",
                         connect_args={"connect_timeout": 1})  # fmt: skip
    recorder = activity.Recorder(away, 30)
    dropped = activity.DROPPED._value.get()
    event = activity.Event(datetime.now(UTC), SID, None, "GET", "/api/pins", 200, 1.0)
    recorder.buffer = [event] * (activity.MAX_BUFFERED - 2)
    recorder.flush()  # refused: all kept
    assert len(recorder.buffer) == activity.MAX_BUFFERED - 2
    for _ in range(5):
        recorder.add(event)
    assert len(recorder.buffer) == activity.MAX_BUFFERED
    assert activity.DROPPED._value.get() - dropped == 3


@pytest.mark.parametrize(
    ("scope", "route"),
    [
        ({"path": "/api/pins/7", "route": SimpleNamespace(path="/api/pins/{pin_id}")},
         "/api/pins/{pin_id}"),
        ({"path": "/admin/", "root_path": "/admin"}, "/admin"),  # the page: a visit
        ({"path": "/admin/admin.js", "root_path": "/admin"}, None),  # its files: part of it
        ({"path": "/admin/admin.css", "root_path": "/admin"}, None),
        ({"path": "/healthz", "route": SimpleNamespace(path="/healthz")}, None),
        ({"path": "/version", "route": SimpleNamespace(path="/version")}, None),
    ],
)  # fmt: skip
def test_a_visit_is_a_page_or_an_api_call_never_a_probe_or_a_pages_file(
    scope: dict[str, object], route: str | None
) -> None:
    assert activity.visited(scope) == route
