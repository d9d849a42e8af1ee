"""The LorePin CMS HTTP service: pins API, health, readiness and version."""

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio.to_thread
from alembic.script import ScriptDirectory
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, Security
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from lorepin_cms import access, activity, caching, compat, errors, geocoder, logs, metrics
from lorepin_cms.config import Config
from lorepin_cms.errors import error_response
from lorepin_cms.json_body import JsonRoute
from lorepin_cms.limits import BodyLimit
from lorepin_cms.models import Pin, slugify
from lorepin_cms.schemas import (
    NO_NUL,
    SPACES,
    ErrorOut,
    Health,
    NotReady,
    PinCreate,
    PinOut,
    PinPage,
    PinUpdate,
    Ready,
    Status,
    VersionOut,
)

ERRORS = {
    401: "No token, or one that is not valid (unknown, wrong, expired or revoked).",
    403: "The token's role is not enough: drafts need a viewer, changes an editor.",
    404: "No such pin.",
    409: "The change conflicts with the stored data.",
    413: "The request body is over the limit (1 MiB unless LOREPIN_MAX_BODY_BYTES says otherwise).",
    422: "The request is invalid; `detail` lists the fields at fault and why.",
    429: "Too many failed authentications from this address: wait `Retry-After` seconds.",
    503: "The database is unavailable or overloaded; try again later.",
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses an operation can answer with."""
    return {s: {"model": ErrorOut, "description": ERRORS[s]} for s in statuses}


def expected_head(config: Config) -> str | None:
    """The Alembic head revision this build of the CMS expects the schema to be at."""
    return ScriptDirectory(str(config.migrations_dir)).get_current_head()


def own_history(config: Config) -> dict[str, compat.Revision]:
    """This build's revisions: where each sits and whether it is a contract revision."""
    found = {}
    for script in ScriptDirectory(str(config.migrations_dir)).walk_revisions():
        down = script.down_revision
        found[script.revision] = compat.Revision(
            down=down if isinstance(down, str) or down is None else ",".join(down),
            contract=bool(getattr(script.module, "contract", None)),
        )
    return found


security = logging.getLogger("lorepin_cms.security")
# OpenAPI's description of the tokens; the check itself is `caller` in create_app.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token, `lp_...` (`invoke cms.token.create`).",
)


def security_event(event: str, request: Request, **fields: Any) -> None:
    """A line of the security log: what happened, to which route, from which address."""
    client = request.client.host if request.client else None
    security.warning(
        event,
        extra={
            "event": "security",
            "fields": {"what": event, "client": client, "method": request.method,
                       "path": request.url.path, **fields},
        },
    )  # fmt: skip


APPLIED = text("SELECT revision, down_revision, contract FROM lorepin_ops.migration_checksums")


def connect(config: Config, pool_size: int, role: str = "") -> Engine:
    """An engine on the CMS's database with the CMS's session settings."""
    args: dict[str, object] = {
        "connect_timeout": 3,
        # Its sessions by name in pg_stat_activity, pgaudit's lines and `db.report`.
        "application_name": "-".join(
            ["lorepin-cms", *filter(None, [os.environ.get("LOREPIN_COLOUR"), role])]
        ),
    }
    if config.db_pooler == "transaction":
        # Each transaction may run on another server connection: a statement psycopg
        # prepared on one would be missing on the next (pgbouncer 1.18 does not track
        # them), and startup options never reach PostgreSQL (the pooler sets the timeouts).
        args["prepare_threshold"] = None
    else:
        args["options"] = (
            f"-c statement_timeout={config.db_statement_timeout_ms} "
            f"-c idle_in_transaction_session_timeout={config.db_idle_in_transaction_timeout_ms}"
        )
    return create_engine(
        config.database_url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=config.db_pool_timeout,
        connect_args=args,
    )


def create_app(config: Config | None = None) -> FastAPI:
    config = config or Config.from_env()
    # Sync handlers run on AnyIO's worker threads, each holding at most one connection and
    # only while it runs (handlers open and close their session). With no more threads than
    # connections no thread ever waits for the pool; a wait means the database is in
    # trouble, and pool_timeout turns it into a prompt 503.
    engine = connect(config, config.db_pool_size)
    if config.metrics:
        metrics.watch_pool(engine, config.db_pool_size)
    logs.tag_statements(engine)  # PostgreSQL's lines name the request (docs/logging.md)
    sessions = sessionmaker(engine, expire_on_commit=False)
    head = expected_head(config)
    mine = own_history(config)
    failures = access.FailureLimit(config.auth_failures_per_minute)

    def caller(request: Request) -> access.Caller | None:
        """Who sends the request: None without a token; a 401 for a token that does not
        hold, a 429 once an address has failed too often (each a security event)."""
        header = request.headers.get("authorization")
        if header is None:
            return None
        client = request.client.host if request.client else "-"
        if wait := failures.retry_after(client):
            security_event("auth.limited", request)
            raise HTTPException(
                429,
                "too many failed authentications: try again later",
                headers={"Retry-After": str(wait)},
            )
        try:
            with engine.connect() as conn:
                who = access.authenticate(conn, header, datetime.now(UTC))
        except access.Unauthenticated as exc:
            failures.failed(client)
            security_event("auth.failed", request, reason=exc.reason, key=exc.key)
            raise HTTPException(
                401, "the token is not valid", headers={"WWW-Authenticate": "Bearer"}
            ) from None
        if who is not None:
            request.state.user = who.user  # the activity record's user
        return who

    Caller = Annotated[access.Caller | None, Depends(caller)]

    def needs(role: str) -> Callable[..., access.Caller]:
        def check(
            who: Caller,
            request: Request,
            _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],  # OpenAPI's
        ) -> access.Caller:
            if who is None:
                security_event("auth.missing", request, needed=role)
                raise HTTPException(
                    401, f"this needs a token with the role {role} or higher",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            if not access.at_least(who.role, role):
                security_event("auth.forbidden", request, user=who.user, role=who.role,
                               needed=role)  # fmt: skip
                raise HTTPException(
                    403, f"this needs the role {role} or higher; the token has {who.role}"
                )
            return who

        return check

    Editor = Annotated[access.Caller, Depends(needs("editor"))]

    def sees_drafts(who: access.Caller | None) -> bool:
        return who is not None and access.at_least(who.role, "viewer")

    # The activity's writer has a connection of its own: requests never wait for it.
    recorder = (
        activity.Recorder(connect(config, 1, "activity"), config.activity_retention_days)
        if config.activity
        else None
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = config.db_pool_size
        async with anyio.create_task_group() as tasks:
            if recorder:
                tasks.start_soon(recorder.run)
            yield
            tasks.cancel_scope.cancel()
        engine.dispose()
        if recorder:
            recorder.engine.dispose()

    app = FastAPI(title="LorePin CMS", version=config.version, lifespan=lifespan)
    app.router.route_class = JsonRoute

    def schema_revision() -> str | None:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    errors.install(app)
    app.add_middleware(caching.HttpCache)  # inside the others: they count its 304s
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.metrics:
        app.add_middleware(metrics.Instrument)  # it sees BodyLimit's 413s too
    if recorder:
        app.add_middleware(activity.Record, recorder=recorder)
    app.add_middleware(logs.RequestLog)  # outermost: every line of a request has its id

    @app.get("/healthz")
    async def healthz() -> Health:
        # async and touching nothing: answers even when every thread and connection is busy.
        return Health(status="alive")

    @app.get(
        "/readyz",
        response_model=Ready,
        responses={
            503: {
                "model": ErrorOut | NotReady,
                "description": "The database is unreachable, or its schema is not the "
                "revision this build expects.",
            }
        },
    )
    def readyz() -> JSONResponse:
        try:
            current = schema_revision()
            applied = {} if current == head else applied_history()
        except (DBAPIError, SQLAlchemyError) as exc:
            return error_response(503, "database unreachable or not migrated", type(exc).__name__)
        judged = compat.verdict(current, head, mine, applied)
        if not judged.ready:
            return JSONResponse(
                status_code=503,
                content={
                    "status": "schema mismatch",
                    "schema": current,
                    "expected": head,
                    "reason": judged.reason,
                },
            )
        body: dict[str, Any] = {"status": "ready", "schema": current}
        if current != head:
            body["note"] = judged.reason  # why a schema other than the head will do
        return JSONResponse(body)

    def applied_history() -> dict[str, compat.Revision]:
        """What the ledger says of the applied revisions (empty before it kept that)."""
        with engine.connect() as conn:
            try:
                rows = conn.execute(APPLIED).all()
            except DBAPIError:  # no ledger, or one from before revisions were described
                return {}
        return {
            r.revision: compat.Revision(down=r.down_revision, contract=r.contract) for r in rows
        }

    @app.get("/version")
    def version() -> VersionOut:
        try:
            current = schema_revision()
        except SQLAlchemyError:
            current = None
        return VersionOut(
            version=config.version,
            git_revision=config.git_revision,
            schema_revision=current,
            schema_expected=head,
        )

    # Each handler opens its own session and so gives its connection back when it returns,
    # not after the response is serialised and sent (which takes another worker thread).

    @app.post("/api/pins", status_code=201, responses=documented(401, 403, 409, 413, 422, 429, 503))
    def create_pin(data: PinCreate, _: Editor) -> PinOut:
        fields = data.model_dump()
        if fields["place_name"] is None:
            fields["place_name"] = geocoder.place_name(
                config.geocoder_url, data.latitude, data.longitude
            )
        pin = Pin(**fields, slug=slugify(data.title))
        with sessions() as db:
            db.add(pin)
            db.commit()
            db.refresh(pin)
            return PinOut.model_validate(pin)

    @app.get("/api/pins", responses={304: caching.NOT_MODIFIED, **documented(401, 422, 429, 503)})
    def list_pins(
        who: Caller,
        tag: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
        status: Status | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> PinPage:
        query = select(Pin)
        if not sees_drafts(who):  # published pins are public; drafts need a token
            if status == "draft":
                raise HTTPException(
                    401, "drafts need a token (any role)",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            query = query.where(Pin.status == "published")
        if tag is not None:
            query = query.where(Pin.tags.contains([tag.strip(SPACES).lower()]))
        if status is not None:
            query = query.where(Pin.status == status)
        with sessions() as db:
            total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = db.scalars(
                query.order_by(Pin.created_at.desc(), Pin.id.desc()).limit(limit).offset(offset)
            )
            items = [PinOut.model_validate(p) for p in rows]
        return PinPage(items=items, total=total, limit=limit, offset=offset)

    def get_or_404(db: Session, pin_id: int, drafts: bool = True) -> Pin:
        pin = db.get(Pin, pin_id)
        if pin is None or (pin.status == "draft" and not drafts):  # a draft's id is no clue
            raise HTTPException(404, f"pin {pin_id} not found")
        return pin

    PinId = Annotated[int, Path(ge=1, le=2**63 - 1)]

    @app.get(
        "/api/pins/{pin_id}",
        responses={304: caching.NOT_MODIFIED, **documented(401, 404, 422, 429, 503)},
    )
    def read_pin(pin_id: PinId, who: Caller) -> PinOut:
        with sessions() as db:
            return PinOut.model_validate(get_or_404(db, pin_id, sees_drafts(who)))

    @app.patch("/api/pins/{pin_id}", responses=documented(401, 403, 404, 409, 413, 422, 429, 503))
    def update_pin(pin_id: PinId, data: PinUpdate, _: Editor) -> PinOut:
        changes = data.model_dump(exclude_unset=True)
        if not changes:
            raise HTTPException(422, "nothing to update: send at least one field")
        with sessions() as db:
            pin = get_or_404(db, pin_id)
            for field, value in changes.items():
                setattr(pin, field, value)
            if "title" in changes:
                pin.slug = slugify(changes["title"])
            pin.updated_at = func.now()
            db.commit()
            db.refresh(pin)
            return PinOut.model_validate(pin)

    @app.delete(
        "/api/pins/{pin_id}", status_code=204, responses=documented(401, 403, 404, 422, 429, 503)
    )
    def delete_pin(pin_id: PinId, _: Editor) -> Response:
        with sessions() as db:
            db.delete(get_or_404(db, pin_id))
            db.commit()
        return Response(status_code=204)

    if config.admin_dir.is_dir():  # built by the image's assets stage (cms/admin)
        app.mount("/admin", StaticFiles(directory=config.admin_dir, html=True), name="admin")

        @app.get("/", include_in_schema=False)
        def home() -> RedirectResponse:
            return RedirectResponse("/admin/")

    app.state.engine = engine
    return app
