"""GitHub's REST API, as `invoke repo.protect` uses it: one JSON request at a time, with
the token in a header only (never in a URL, an argv or a message)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from lorepin_tasks.errors import LorePinError
from lorepin_tasks.plans import github as plan


def call(method: str, url: str, token: str, body: object = None) -> tuple[int, Any]:
    """(status, JSON answer) of one request; a one-line error when GitHub cannot be reached."""
    request = urllib.request.Request(  # noqa: S310 (https, or the loopback: plan.api_base)
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers=plan.headers(token),
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:  # noqa: S310
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LorePinError(f"cannot reach GitHub's API ({reason}); nothing changed") from None
    try:
        return status, json.loads(raw or b"null")
    except json.JSONDecodeError:
        return status, None
