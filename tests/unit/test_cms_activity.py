"""The CMS's activity recording without a database: the cookie it trusts and issues, and
the bound on what a worker buffers."""

from __future__ import annotations

from datetime import UTC, datetime

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
