"""HTTP caching of the public reads: an ETag on every 200 of `GET /api/pins...`, and a 304
without a body when the client's If-None-Match still holds. `Cache-Control: no-cache`:
a client (or a proxy) keeps the answer but asks each time, so an edit shows at once and
an unchanged list costs a few bytes instead of the whole page (docs/database-performance.md).
"""

from __future__ import annotations

import hashlib

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/api/pins"
CACHE_CONTROL = "no-cache"
NOT_MODIFIED = {"description": "Not modified: the ETag in If-None-Match is still current."}


def etag(body: bytes) -> str:
    return f'W/"{hashlib.sha256(body).hexdigest()[:32]}"'


def still_current(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    given = {t.strip() for t in if_none_match.split(",")}
    return "*" in given or tag in given or tag.removeprefix("W/") in given


class HttpCache:
    """ASGI middleware: reads of pins get an ETag; a matching If-None-Match gets a 304."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or not str(scope["path"]).startswith(PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffering_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                if message["status"] != 200:  # errors pass as they are
                    await send(message)
                return
            if start is None or start["status"] != 200:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            tag = etag(body)
            headers = MutableHeaders(raw=start["headers"])
            headers["ETag"] = tag
            # What a token may see (drafts) is not what everyone may: shared caches keep
            # only the public answer, and key it apart from the token holders'.
            private = "authorization" in Headers(scope=scope)
            headers["Cache-Control"] = f"private, {CACHE_CONTROL}" if private else CACHE_CONTROL
            headers["Vary"] = "Authorization"
            if still_current(Headers(scope=scope).get("if-none-match"), tag):
                del headers["content-length"]
                del headers["content-type"]
                await send({**start, "status": 304})
                await send({"type": "http.response.body", "body": b""})
                return
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffering_send)
