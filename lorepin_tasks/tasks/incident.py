"""Incidents of a server environment: `incident.list`, `incident.show`, `incident.ack`,
`incident.note`, `incident.resolve` and `incident.postmortem`.

The incident receiver of the environment's monitoring opens them from Alertmanager's
notifications (monitoring/incident_receiver.py) in the environment's own database; these
tasks read and change them there, and write the postmortem draft with its timeline
(docs/incident-response.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, NothingToDo, Refused
from lorepin_tasks.plans import incident as plan
from lorepin_tasks.runtime import git, monitoring
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session, literal
from lorepin_tasks.runtime.trail import Trail
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    JSON_HELP,
    MONITORED_ENV_HELP,
    monitored_env,
    task,
)

ID_HELP = "the incident's number (12 or INC-12; `invoke incident.list` shows them)"
WHAT = "incidents are for"


def number(text: str) -> int:
    try:
        return plan.incident_id(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def fetch(session: Session, ctx: EnvContext, ident: int) -> dict[str, Any]:
    """The incident and its events; a one-line error when there is no such incident."""
    if session.scalar(plan.EXISTS) != "t":
        raise ConfigError(f"no incident {ident} in '{ctx.env.name}' (it has had none)")
    shown = session.scalar(plan.show_sql(ident))
    if not shown:
        raise ConfigError(
            f"no incident {ident} in '{ctx.env.name}' "
            f"(`invoke incident.list --env {ctx.env.name} --all`)"
        )
    found: dict[str, Any] = json.loads(shown)
    return found


@task(name="list", help={"env": MONITORED_ENV_HELP, "all": "resolved ones too", "json": JSON_HELP})
def list_(c: Context, env: str = "", all_: bool = False, json_: bool = False) -> None:
    """The environment's incidents: open and acknowledged ones (--all: every one)."""
    ctx = monitored_env(c, env, False, what=WHAT)
    if all_:
        with monitoring.incidents_database(ctx) as session:
            exists = session.scalar(plan.EXISTS) == "t"
            rows = json.loads(session.scalar(plan.list_sql(every=True)) or "[]") if exists else []
    else:
        rows = monitoring.open_incidents(ctx)
    if json_:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(f"no {'' if all_ else 'open '}incident in '{ctx.env.name}'")
        return
    print(f"{'ID':>6} {'PRI':<4} {'STATUS':<13} {'OPENED (UTC)':<20} {'CLASS':<13} TITLE")
    for r in rows:
        print(
            f"{'INC-' + str(r['id']):>6} {r['priority']:<4} {r['status']:<13} "
            f"{r['opened_at'][:19].replace('T', ' '):<20} {r['classification']:<13} {r['title']}"
        )


@task(help={"env": MONITORED_ENV_HELP, "id": ID_HELP, "json": JSON_HELP})
def show(c: Context, id: str, env: str = "", json_: bool = False) -> None:
    """One incident: what, since when, who acknowledged it, and every event."""
    ident = number(id)
    ctx = monitored_env(c, env, False, what=WHAT)
    with monitoring.incidents_database(ctx) as session:
        found = fetch(session, ctx, ident)
    if json_:
        print(json.dumps(found, indent=2))
        return
    i = found["incident"]
    print(f"INC-{i['id']} {i['priority']} {i['status']}: {plan.one_line(i['title'])}")
    print(f"  classification {i['classification']}, severity {i['severity']}")
    print(f"  opened {i['opened_at']}")
    if i.get("acknowledged_at"):
        print(f"  acknowledged {i['acknowledged_at']} by {i['acknowledged_by']}")
    if i.get("resolved_at"):
        print(f"  resolved {i['resolved_at']} by {i['resolved_by']}")
    for at, what in plan.timeline(i, found["events"], []):
        print(f"  {at:%Y-%m-%d %H:%M:%S} {what}")


def change(c: Context, env: str, id: str, dry_run: bool, kind: str, text: str = "") -> None:
    """Acknowledge, annotate or resolve one incident, and record it as its event."""
    ident = number(id)
    ctx = monitored_env(c, env, dry_run, what=WHAT)
    who = git.who_am_i(ctx.run, ctx.settings.root)
    update = {"acknowledged": plan.ack_sql, "resolved": plan.resolve_sql}.get(kind)
    event = plan.event_sql(ident, kind, literal(who), literal(json.dumps({"text": text})))
    if ctx.run.dry_run:
        for sql in (update(ident, literal(who)) if update else None, event):
            if sql:
                ctx.run.say(f"+ in the database of '{ctx.env.name}': {sql}")
        return
    with monitoring.incidents_database(ctx) as session:
        state = fetch(session, ctx, ident)["incident"]["status"]
        if update is not None:
            if not session.query(f"BEGIN; {update(ident, literal(who))}"):
                session.query("ROLLBACK")
                raise NothingToDo(f"INC-{ident} is already {state}: nothing changed")
            session.query(f"{event}; COMMIT")
        else:
            session.query(event)
    print(f"INC-{ident} {kind} by {who}")


@task(help={"env": MONITORED_ENV_HELP, "id": ID_HELP, "dry_run": DRY_HELP})
def ack(c: Context, id: str, env: str = "", dry_run: bool = False) -> None:
    """Acknowledge an open incident: someone is on it (recorded with your name)."""
    change(c, env, id, dry_run, "acknowledged")


@task(help={"env": MONITORED_ENV_HELP, "id": ID_HELP, "message": "the note", "dry_run": DRY_HELP})
def note(c: Context, id: str, message: str, env: str = "", dry_run: bool = False) -> None:
    """Add a note to an incident's timeline (what you saw, what you tried)."""
    if not message.strip():
        raise ConfigError("an empty note says nothing: -m 'what you saw or did'")
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("the note is not valid UTF-8 text") from None
    change(c, env, id, dry_run, "note", message.strip())


@task(help={"env": MONITORED_ENV_HELP, "id": ID_HELP, "message": "how it ended (optional)",
            "dry_run": DRY_HELP})  # fmt: skip
def resolve(c: Context, id: str, env: str = "", message: str = "", dry_run: bool = False) -> None:
    """Resolve an incident by hand (the receiver resolves one when its alerts do)."""
    change(c, env, id, dry_run, "resolved", message.strip())


@task(
    help={
        "env": MONITORED_ENV_HELP,
        "id": ID_HELP,
        "out": "where to write it (default dist/postmortems/<env>-INC-<id>.md)",
        "draft": "write one for an incident that is still open, marked DRAFT",
        "dry_run": DRY_HELP,
    }
)
def postmortem(
    c: Context,
    id: str,
    env: str = "",
    out: str = "",
    draft: bool = False,
    dry_run: bool = False,
) -> None:
    """Write the incident's postmortem: the facts and the timeline (its events, and the
    deploys, rollbacks, restores and failovers around it) filled in, the rest to write."""
    ident = number(id)
    ctx = monitored_env(c, env, dry_run, what=WHAT)
    name = f"{ctx.env.name}-INC-{ident}.md"
    path = Path(out) if out else ctx.settings.root / "dist" / "postmortems" / name
    if out.endswith("/") or path.is_dir():  # a directory: the usual name inside it
        path = path / name
    with monitoring.incidents_database(ctx) as session:
        found = fetch(session, ctx, ident)
        # Local is not deployed: it has no deploy trail to put around the incident.
        trail = Trail(session, ctx.env.state_dir / "audit.jsonl")
        records = trail.records() if ctx.env.is_server else []
    incident = found["incident"]
    if incident["status"] != "resolved" and not draft:
        raise Refused(
            f"INC-{ident} is {incident['status']}: resolve it first, or write a draft "
            f"(`invoke incident.postmortem {ident} --env {ctx.env.name} --draft`)"
        )
    text = plan.postmortem(
        ctx.env.name, incident, found["events"], records, draft=incident["status"] != "resolved"
    )
    if ctx.run.dry_run:
        ctx.run.say(f"# would write {path}")
        return
    try:
        if path.is_file() and not plan.untouched(path.read_text(errors="replace")):
            raise Refused(f"{path} has been written in by someone: not overwritten (use --out)")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"wrote {path}")


ns = Collection("incident", list_, show, ack, note, resolve, postmortem)
