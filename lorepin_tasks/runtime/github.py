"""GitHub's REST API, as `invoke repo.protect` uses it: one JSON request at a time, with
the token in a header only (never in a URL, an argv or a message)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from lorepin_tasks.errors import LorePinError
from lorepin_tasks.plans import github as plan


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers, never followed: the token must not travel to another host."""

    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def call(
    method: str, url: str, token: str, body: object = None, *, changed: bool = False
) -> tuple[int, Any]:
    """(status, JSON answer) of one request; a one-line error when GitHub cannot be reached
    (`changed`: after a request that may have changed something, and says so)."""
    request = urllib.request.Request(  # noqa: S310 (https, or the loopback: plan.api_base)
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers=plan.headers(token),
        method=method,
    )
    try:
        with OPENER.open(request, timeout=20) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", type(exc).__name__)
        after = "the change was sent: check the branch on GitHub" if changed else "nothing changed"
        raise LorePinError(f"cannot reach GitHub's API ({reason}); {after}") from None
    try:
        return status, json.loads(raw or b"null")
    except json.JSONDecodeError:
        return status, None
