"""Release notifications: a Slack-compatible incoming webhook (JSON `{"text": ...}`).

A failing webhook warns and never fails the caller: the release itself is what matters.
"""

from __future__ import annotations

import json
from collections.abc import Callable


def notify(url: str | None, text: str, *, say: Callable[[str], None], timeout: float = 5) -> bool:
    if not url:
        return False
    import http.client
    import urllib.error
    import urllib.request  # here: it costs `invoke --list` several ms

    if not url.startswith(("http://", "https://")):
        say("warning: the webhook URL is not http(s); notification skipped")
        return False
    try:
        request = urllib.request.Request(  # noqa: S310 (the configured webhook; http(s) only)
            url,
            data=json.dumps({"text": text}).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            ok = bool(200 <= response.status < 300)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # Never the exception's text: it may quote the URL, which is a secret.
        say(f"warning: the notification failed ({type(exc).__name__}); nothing else changes")
        return False
    if not ok:
        say("warning: the notification was refused; nothing else changes")
    return ok
