"""The CMS's logs: one JSON object per line on stderr, for every logger (uvicorn's too).

Each line says when, how bad, which service, environment, version and colour, and which
request it belongs to: the proxy's X-Request-Id, kept for the request's whole life in a
context variable. The same id rides along in a comment on every SQL statement the request
sends (in front), so PostgreSQL's slow-statement and pgaudit lines lead back to it
(`invoke logs.search --request-id`, docs/logging.md).

An access line per request (`"event": "request"`) replaces uvicorn's, which has no request
id and writes the client's address in full.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

from sqlalchemy import Engine, event
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from lorepin_cms.metrics import StatusSend, method_of, route_of

# A request id goes into SQL text: only these characters, never a comment's end.
REQUEST_ID_FORMAT = re.compile(r"[A-Za-z0-9._:-]{1,128}")
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

access = logging.getLogger("lorepin_cms.access")
PROBES = frozenset({"/healthz", "/readyz"})  # their answers log at debug level


class JsonLines(logging.Formatter):
    """A record as one JSON line: the fixed fields first (`event` leads, which `invoke
    errors` looks for), then the record's own `fields`."""

    def __init__(self, service: str = "cms") -> None:
        super().__init__()
        self.fixed = {
            "service": service,
            "env": os.environ.get("LOREPIN_ENV_NAME") or None,
            "version": os.environ.get("LOREPIN_VERSION") or None,
            "colour": os.environ.get("LOREPIN_COLOUR") or None,
        }

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "event": getattr(record, "event", "log"),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            **self.fixed,
            "request_id": request_id.get(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def config(level: str = "INFO") -> dict[str, Any]:
    """uvicorn's `log_config` (applied in every worker): each logger, uvicorn's included,
    writes JSON lines to stderr; uvicorn's access logger is off, the access line is ours."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonLines}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def tag_statements(engine: Engine) -> None:
    """Put the request's id in front of each SQL statement it sends, as a comment:
    PostgreSQL logs the statement with it. In front, not at the end (sqlcommenter's
    place): a statement of several lines is logged as several lines, and the first is
    the one with the log prefix (the duration, pgaudit's record)."""

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _tag(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> tuple[str, Any]:
        if rid := request_id.get():
            statement = f"/* request_id='{rid}' */ {statement}"
        return statement, parameters


class RequestLog:
    """ASGI middleware: takes the request's id (when it is a sane one) for everything the
    request logs and sends, and writes one access line when the response has gone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id")
        token = request_id.set(given if given and REQUEST_ID_FORMAT.fullmatch(given) else None)
        watching = StatusSend(send)
        started = perf_counter()
        try:
            await self.app(scope, receive, watching)
        finally:
            method, route, status = method_of(scope), route_of(scope), watching.status
            access.log(
                logging.WARNING
                if status >= 500
                # The engine's and the probes' health checks: every few seconds, all day.
                else logging.DEBUG
                if route in PROBES and status < 400
                else logging.INFO,
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    "event": "request",
                    "fields": {
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round((perf_counter() - started) * 1000, 2),
                    },
                },
            )
            request_id.reset(token)
