"""API flows with tokens, as an editor and as the public, through the proxy."""

from __future__ import annotations

import uuid

from deployed.conftest import Target


def test_it_serves_the_release_and_is_ready(target: Target) -> None:
    status, _, body = target.call("GET", "/version")
    assert status == 200 and body["version"] == target.version
    assert target.call("GET", "/readyz")[0] == 200


def test_a_pin_goes_from_draft_to_published_to_deleted(target: Target) -> None:
    title = f"e2e {uuid.uuid4().hex[:8]}"
    pin = {"title": title, "latitude": 48.85, "longitude": 2.35, "tags": ["test-data", "e2e"]}
    status, _, made = target.call("POST", "/api/pins", pin, token=target.token)
    assert status == 201 and made["status"] == "draft", made
    path = f"/api/pins/{made['id']}"
    try:
        assert target.call("GET", path)[0] == 404  # a draft is for signed-in eyes only
        assert target.call("GET", path, token=target.token)[0] == 200
        status, _, changed = target.call("PATCH", path, {"status": "published"},
                                         token=target.token)  # fmt: skip
        assert status == 200 and changed["status"] == "published"
        status, _, public = target.call("GET", path)
        assert status == 200 and public["title"] == title
        status, _, page = target.call("GET", "/api/pins?tag=e2e&limit=100")
        assert status == 200 and made["id"] in [p["id"] for p in page["items"]]
    finally:
        assert target.call("DELETE", path, token=target.token)[0] == 204
    assert target.call("GET", path, token=target.token)[0] == 404


def test_bad_input_and_missing_or_wrong_tokens_are_refused(target: Target) -> None:
    wrong = {"title": "x", "latitude": 100, "longitude": 0, "tags": []}
    assert target.call("POST", "/api/pins", wrong, token=target.token)[0] == 422
    good = {"title": "x", "latitude": 1, "longitude": 1, "tags": ["test-data"]}
    assert target.call("POST", "/api/pins", good)[0] == 401
    assert target.call("POST", "/api/pins", good, token="lp_nobody.wrong")[0] == 401  # noqa: S106
    assert target.call("GET", "/api/pins?limit=1000")[0] == 422
    assert target.call("GET", "/api/pins/0")[0] == 422
