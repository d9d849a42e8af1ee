"""JSON request bodies that are not UTF-8 are malformed JSON like any other: a 422."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class Utf8JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body)
            except UnicodeDecodeError as exc:
                # FastAPI answers JSONDecodeError with its 422 (and anything else with a 400).
                text = body.decode("utf-8", "replace")
                raise json.JSONDecodeError("not UTF-8", text, exc.start) from exc
        return self._json


class JsonRoute(APIRoute):
    """An API route whose handler reads JSON bodies with Utf8JsonRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_utf8(request: Request) -> Response:
            return await handle(Utf8JsonRequest(request.scope, request.receive))

        return handle_utf8
