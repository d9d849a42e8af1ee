"""The end-to-end suite against a deployed environment (`invoke e2e --env E`): what a
person sees through the environment's public address. The task gives, in the process's
environment: LOREPIN_E2E_URL (https://host:port of the proxy), LOREPIN_E2E_HTTP_URL (its
plain-HTTP address), LOREPIN_E2E_CA (the certificate it presents, or empty: the system's
roots), LOREPIN_E2E_VERSION (the release it serves), LOREPIN_E2E_TOKEN (an editor's token
made for the run, revoked after it) and LOREPIN_E2E_ARTIFACTS (where screenshots go).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Target:
    url: str
    http_url: str
    ca: str | None
    version: str
    token: str = field(repr=False)  # never in a report, a traceback or a log
    artifacts: Path = Path("dist/e2e")

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca or None)

    def call(self, method: str, path: str, body: object = None, *, token: str | None = None
             ) -> tuple[int, Message, Any]:  # fmt: skip
        """One request through the proxy: status, headers, body (JSON decoded)."""
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        request = urllib.request.Request(  # noqa: S310 (the environment under test)
            f"{self.url}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=15, context=self.context()) as answer:  # noqa: S310
                raw = answer.read()
                return answer.status, answer.headers, _decoded(raw)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, _decoded(exc.read())


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


@pytest.fixture(scope="session")
def target() -> Target:
    missing = [v for v in ("LOREPIN_E2E_URL", "LOREPIN_E2E_VERSION", "LOREPIN_E2E_TOKEN")
               if not os.environ.get(v)]  # fmt: skip
    if missing:
        pytest.fail(f"run this suite with `invoke e2e --env E` ({', '.join(missing)} unset)",
                    pytrace=False)  # fmt: skip
    artifacts = Path(os.environ.get("LOREPIN_E2E_ARTIFACTS") or "dist/e2e")
    artifacts.mkdir(parents=True, exist_ok=True)
    return Target(
        url=os.environ["LOREPIN_E2E_URL"].rstrip("/"),
        http_url=os.environ.get("LOREPIN_E2E_HTTP_URL", "").rstrip("/"),
        ca=os.environ.get("LOREPIN_E2E_CA") or None,
        version=os.environ["LOREPIN_E2E_VERSION"],
        token=os.environ["LOREPIN_E2E_TOKEN"],
        artifacts=artifacts,
    )
