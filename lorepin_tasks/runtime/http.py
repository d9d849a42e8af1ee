"""HTTP checks against the environment's own endpoints (stdlib only)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorepin_tasks.errors import LorePinError


def get(url: str, *, timeout: float = 3.0, cafile: Path | None = None) -> tuple[int, Any]:
    """Status and decoded JSON body (None when not JSON); status 0 when unreachable.

    `cafile`: the certificate an HTTPS answer must be signed by (a staging proxy's own).
    """
    import ssl
    import urllib.error
    import urllib.request  # here: it costs `invoke --list` several ms

    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def wait_ready(
    url: str, *, timeout: float, say: Callable[[str], None], hint: str, interval: float = 0.25
) -> float:
    """Poll until `url` answers 200; return the seconds it took. Reports while waiting."""
    started = time.monotonic()
    last: tuple[int, Any] = (0, None)
    next_report = started + 5
    while (now := time.monotonic()) - started < timeout:
        last = get(url)
        if last[0] == 200:
            return now - started
        if now >= next_report:
            answer = last[0] or "none"
            say(f"  still waiting for {url} ({now - started:.0f} s, last answer {answer})")
            next_report = now + 5
        time.sleep(interval)
    raise LorePinError(
        f"{url} not ready after {timeout:.0f} s (last answer {last[0] or 'none'}: {last[1]}); "
        f"see `{hint}`"
    )
