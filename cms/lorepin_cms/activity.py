"""User activity, privacy-first (docs/logging.md, "User activity").

Each request a visitor makes (not the probes') becomes one row of `activity`: when, the
route template (never the path's values), method, status, latency, and a session id,
a random UUID from the first-party cookie `lorepin_sid` that this middleware issues when a
request has none. Never the client's address, its headers or any body. `user_id` is for
authenticated requests (none yet: the CMS has no users).

Requests never wait for the database on this account: events go to a bounded buffer that
one task per worker writes in batches every second, on a connection of its own. When the
database is away the events wait in the buffer; once it is full, what does not fit is
dropped and counted (`lorepin_activity_dropped_total`): activity is worth less than the
request. The same task deletes rows older than the retention, in batches, once an hour.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from time import perf_counter

import anyio
import anyio.to_thread
from prometheus_client import Counter
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lorepin_cms.metrics import StatusSend, method_of, route_of

COOKIE = "lorepin_sid"
SESSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# The engine's and the probes' checks, and deploys' version checks: not visitors.
NOT_ACTIVITY = frozenset({"/healthz", "/readyz", "/version"})
# A page's own files (the admin page's script and style): part of its view, not visits.
ASSET = re.compile(r"\.(?:js|mjs|css|map|png|jpe?g|gif|svg|ico|woff2?|ttf)$")
FLUSH_EVERY_S = 1.0
PRUNE_EVERY_S = 3600.0
MAX_BUFFERED = 10_000  # a minute of a busy worker; beyond it events are dropped
PRUNE_BATCH = 10_000
# One worker prunes at a time (any other skips its turn): pg_try_advisory_xact_lock's key.
PRUNE_LOCK = (0x4C50, 0x4143)

RECORDED = Counter("lorepin_activity_recorded", "Activity events written to the database")
DROPPED = Counter(
    "lorepin_activity_dropped", "Activity events dropped (buffer full or database away)"
)
SESSIONS = Counter("lorepin_sessions_started", "Session cookies issued to visitors")

log = logging.getLogger("lorepin_cms.activity")

INSERT = text(
    "INSERT INTO activity (at, session_id, user_id, method, route, status, duration_ms) "
    "VALUES (:at, :session_id, :user_id, :method, :route, :status, :duration_ms)"
)
PRUNE = text(
    "DELETE FROM activity WHERE id IN (SELECT id FROM activity "
    "WHERE at < now() - make_interval(days => :days) LIMIT :batch)"
)


@dataclass(frozen=True, slots=True)
class Event:
    at: datetime
    session_id: str
    user_id: str | None
    method: str
    route: str
    status: int
    duration_ms: float


def visited(scope: Scope) -> str | None:
    """The route template a request counts as a visit of, or None (a probe, a file)."""
    route = route_of(scope)
    if route in NOT_ACTIVITY or ASSET.search(str(scope.get("path", ""))):
        return None
    return route


def session_of(headers: Headers) -> str | None:
    """The visitor's session id from its cookie, when it is one this CMS could have issued.
    Parsed as browsers send cookies (Starlette's lenient parser, every Cookie header): one
    odd cookie of another site's script must not cost the visitor its session."""
    for header in headers.getlist("cookie"):
        value = cookie_parser(header).get(COOKIE, "")
        if SESSION_ID.fullmatch(value):
            return value
    return None


def set_cookie(headers: MutableHeaders, session_id: str, secure: bool) -> None:
    """Issue the session cookie: first-party, for this browser session, out of scripts'
    reach. A response that sets it is for this visitor alone: no shared cache may keep it."""
    attributes = "Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    headers.append("set-cookie", f"{COOKIE}={session_id}; {attributes}")
    cache = headers.get("cache-control")
    if not cache:
        headers["cache-control"] = "private"
    elif "private" not in cache:
        headers["cache-control"] = f"private, {cache}"


class Recorder:
    """The buffer of one worker's events and the task that writes and prunes them."""

    def __init__(self, engine: Engine, retention_days: int) -> None:
        self.engine = engine
        self.retention_days = retention_days
        self.buffer: list[Event] = []
        self.limiter = anyio.CapacityLimiter(1)  # not the request threads' limiter

    def add(self, event: Event) -> None:
        if len(self.buffer) >= MAX_BUFFERED:
            DROPPED.inc()
            return
        self.buffer.append(event)

    def flush(self) -> int:
        """Write the buffered events in one statement. When the database does not take
        them they wait for the next tick, within MAX_BUFFERED (what is over is dropped and
        counted)."""
        batch, self.buffer = self.buffer, []
        if not batch:
            return 0
        try:
            with self.engine.begin() as conn:
                conn.execute(INSERT, [asdict(e) for e in batch])
        except SQLAlchemyError as exc:
            waiting = batch + self.buffer
            self.buffer = waiting[:MAX_BUFFERED]
            DROPPED.inc(len(waiting) - len(self.buffer))
            log.warning(
                "activity not recorded yet: %s",
                type(exc).__name__,
                extra={"event": "activity_waiting", "fields": {"events": len(self.buffer)}},
            )
            return 0
        RECORDED.inc(len(batch))
        return len(batch)

    def prune(self) -> int:
        """Delete rows past the retention, in batches; skipped while another worker does it.
        The lock is a transaction's, taken again for each batch: a session's lock would
        outlive its transaction behind a transaction-mode pooler (LOREPIN_DB_POOLER),
        left on a server connection that other clients then use."""
        deleted = 0
        try:
            with self.engine.connect() as conn:
                while True:
                    got = conn.execute(
                        text("SELECT pg_try_advisory_xact_lock(:a, :b)"),
                        {"a": PRUNE_LOCK[0], "b": PRUNE_LOCK[1]},
                    ).scalar()
                    if not got:
                        conn.rollback()
                        break
                    gone = conn.execute(
                        PRUNE, {"days": self.retention_days, "batch": PRUNE_BATCH}
                    ).rowcount
                    conn.commit()
                    deleted += gone
                    if gone < PRUNE_BATCH:
                        break
        except SQLAlchemyError as exc:
            log.warning(
                "activity retention not applied: %s",
                type(exc).__name__,
                extra={"event": "activity_prune_failed"},
            )
            return deleted
        if deleted:
            log.info(
                "%d activity rows past %d days deleted",
                deleted,
                self.retention_days,
                extra={"event": "activity_pruned", "fields": {"rows": deleted}},
            )
        return deleted

    async def run(self) -> None:
        """Write every FLUSH_EVERY_S and prune every PRUNE_EVERY_S (and at start) until
        cancelled; a last write on the way out."""
        pruned_at = float("-inf")
        try:
            while True:
                if perf_counter() - pruned_at >= PRUNE_EVERY_S:
                    await anyio.to_thread.run_sync(self.prune, limiter=self.limiter)
                    pruned_at = perf_counter()
                await anyio.sleep(FLUSH_EVERY_S)
                await anyio.to_thread.run_sync(self.flush, limiter=self.limiter)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.flush, limiter=self.limiter)


class Record:
    """ASGI middleware: the session cookie, and one activity event per visitor request."""

    def __init__(self, app: ASGIApp, recorder: Recorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        session = session_of(headers)
        fresh = session is None
        session = session or str(uuid.uuid4())
        secure = scope.get("scheme") == "https" or headers.get("x-forwarded-proto") == "https"

        async def with_cookie(message: Message) -> None:
            if fresh and message["type"] == "http.response.start" and visited(scope):
                set_cookie(MutableHeaders(scope=message), session, secure)
                SESSIONS.inc()
            await send(message)

        watching = StatusSend(with_cookie)
        started = perf_counter()
        try:
            await self.app(scope, receive, watching)
        finally:
            if route := visited(scope):
                self.recorder.add(
                    Event(
                        at=datetime.now(UTC),
                        session_id=session,
                        user_id=(scope.get("state") or {}).get("user"),  # access.caller's
                        method=method_of(scope),
                        route=route,
                        status=watching.status,
                        duration_ms=round((perf_counter() - started) * 1000, 2),
                    )
                )
