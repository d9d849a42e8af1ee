"""How failures reach clients: one JSON shape, `{"error": ..., "detail": ...}`, and a status
that says whose fault it is (4xx the request's, 503 an outage, 500 ours)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import Scope

from lorepin_cms import metrics
from lorepin_cms.schemas import PATTERN_MESSAGES

log = logging.getLogger("lorepin_cms")

# The database (or the way to it) is down, overloaded or too slow: worth retrying later.
OUTAGES: tuple[type[Exception], ...] = (
    sa.OperationalError,
    sa.InterfaceError,
    sa.TimeoutError,  # no pool connection within pool_timeout
    sa.DisconnectionError,
)


def error_response(
    status: int, message: str, detail: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = jsonable_encoder(detail)
    return JSONResponse(status_code=status, content=body, headers=headers)


def database_error(exc: sa.SQLAlchemyError, scope: Scope | None = None) -> JSONResponse:
    """The response for a failed database call; never the SQL or the driver's message."""
    metrics.ERRORS.labels("database").inc()
    if isinstance(exc, OUTAGES) or getattr(exc, "connection_invalidated", False):
        log.warning("database unavailable: %s", type(exc).__name__)
        return error_response(503, "database unavailable")
    if isinstance(exc, sa.DataError):  # a value validation should have refused
        log.warning("database refused a value: %s", exc.orig or exc)
        return error_response(422, "invalid data")
    if isinstance(exc, sa.IntegrityError):
        log.info("database constraint: %s", exc.orig or exc)
        return error_response(409, "conflicts with the stored data")
    log.error("database error %s", type(exc).__name__, exc_info=exc)
    if scope is not None:
        metrics.unhandled(exc, scope, "database")
    return error_response(500, "internal error")


def _message(error: Mapping[str, Any]) -> str:
    """Pydantic's message for a validation error, in words where it would quote a regex."""
    pattern = error.get("ctx", {}).get("pattern")
    if error["type"] == "string_pattern_mismatch" and pattern in PATTERN_MESSAGES:
        return PATTERN_MESSAGES[pattern]
    return str(error["msg"])


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route answers at the request's path.

    Starlette's own 405 names only the methods of the first route with that path.
    """
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, Route) and route.matches(scope)[0] is Match.PARTIAL:
            methods |= route.methods or set()
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Make every error `app` answers take the shape and status above."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e["loc"]), "msg": _message(e), "type": e["type"]} for e in exc.errors()
        ]
        return error_response(422, "invalid request", errors)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return error_response(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(sa.SQLAlchemyError)
    async def _db(request: Request, exc: sa.SQLAlchemyError) -> JSONResponse:
        return database_error(exc, request.scope)

    @app.exception_handler(Exception)  # Starlette re-raises it after: the server logs the trace
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        metrics.unhandled(exc, request.scope, "server")
        return error_response(500, "internal error")
