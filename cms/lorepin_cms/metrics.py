"""The CMS's Prometheus metrics (the official `prometheus-client`).

Requests by route template (never the raw path: one series per route, not per pin),
method and status; their latency; requests in flight; errors by category; database pool
use; and unhandled errors by fingerprint. Under uvicorn's several workers the values live
in PROMETHEUS_MULTIPROC_DIR and `lorepin_cms.serve` adds them up on the metrics port,
which no proxy routes to (docs/monitoring.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import traceback
from pathlib import Path
from time import perf_counter
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Engine, event
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Under `lorepin_cms.serve` the directory is made fresh before any worker starts; run
# another way (uvicorn itself, as the local environment's reloading server does) with the
# image's PROMETHEUS_MULTIPROC_DIR set, it is made here, before the first value needs it.
if directory := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(directory, exist_ok=True)

REQUESTS = Counter(
    "lorepin_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "lorepin_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method and status.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT = Gauge(
    "lorepin_http_requests_in_flight",
    "HTTP requests being answered now.",
    multiprocess_mode="livesum",
)
ERRORS = Counter(
    "lorepin_errors_total",
    "Errors by category: client (4xx), server (5xx), database, geocoder (upstream).",
    ["category"],
)
UNHANDLED = Counter(
    "lorepin_unhandled_errors_total",
    "Errors no handler expected, by fingerprint (exception type and innermost frames).",
    ["fingerprint", "type"],
)
POOL_IN_USE = Gauge(
    "lorepin_db_pool_in_use",
    "Database connections checked out of the pools now.",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "lorepin_db_pool_size",
    "Database connections the pools may hold (all workers).",
    multiprocess_mode="livesum",
)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Events `invoke errors` reads: JSON lines like every other (lorepin_cms.logs).
events = logging.getLogger("lorepin_cms.events")


class StatusSend:
    """An ASGI `send` that remembers the status of the response it passed on."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500  # what the client gets when the app raises before it answers

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class Instrument:
    """ASGI middleware: counts and times every HTTP request by the route that answered it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watching = StatusSend(send)
        started = perf_counter()
        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, watching)
        finally:
            IN_FLIGHT.dec()
            status = watching.status
            labels = (route_of(scope), method_of(scope), str(status))
            REQUESTS.labels(*labels).inc()
            LATENCY.labels(*labels).observe(perf_counter() - started)
            if status >= 500:
                ERRORS.labels("server").inc()
            elif status >= 400:
                ERRORS.labels("client").inc()


def route_of(scope: Scope) -> str:
    """The route template that answered ("/api/pins/{pin_id}"), or the mount it fell in."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    return str(scope.get("root_path") or "unmatched")


def method_of(scope: Scope) -> str:
    method = str(scope.get("method", ""))
    return method if method in METHODS else "other"


def watch_pool(engine: Engine, size: int) -> None:
    """Keep POOL_IN_USE and POOL_SIZE true for `engine`'s pool."""
    POOL_SIZE.inc(size)

    @event.listens_for(engine, "checkout")
    def _out(*_: Any) -> None:
        POOL_IN_USE.inc()

    @event.listens_for(engine, "checkin")
    def _in(*_: Any) -> None:
        POOL_IN_USE.dec()


def fingerprint(exc: BaseException) -> str:
    """The same bug gives the same id: the exception type and its three innermost frames."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    parts = [type(exc).__qualname__, *(f"{Path(f.filename).name}:{f.name}" for f in frames)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def unhandled(exc: BaseException, scope: Scope, category: str) -> str:
    """Count and log an unexpected error once, as one JSON line `invoke errors` groups."""
    mark = fingerprint(exc)
    UNHANDLED.labels(mark, type(exc).__name__).inc()
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    events.error(
        "unhandled %s",
        type(exc).__name__,
        extra={
            "event": "unhandled_error",
            "fields": {
                "fingerprint": mark,
                "type": type(exc).__name__,
                "category": category,
                "route": route_of(scope),
                "method": method_of(scope),
                "request_id": Headers(scope=scope).get("x-request-id"),
                "frames": [f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in frames],
            },
        },
    )
    return mark
