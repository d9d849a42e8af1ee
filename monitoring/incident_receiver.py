"""The incident receiver of a server environment (compose/monitoring.yaml).

Alertmanager posts every notification here (its webhook, format version 4). Each alert
group opens one incident in the environment's own database (`lorepin_ops.incidents`),
with a classification (the alerts' category) and a priority (P1-P4 from severity and
environment); a repeat of the same group is an event of that incident, not a new one;
when the whole group resolves, so does the incident. Everything that happens is an event
(`lorepin_ops.incident_events`) that `invoke incident.show` and the postmortem read.

The answer comes only after the database has it: Alertmanager retries what got no 200, so
no incident is lost while the database or this service is away. The message is then
passed on to the team's Slack-compatible webhook (a file secret; none: not passed on).

Python's standard library and Debian's python3-psycopg: nothing else in the image.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from psycopg.types.json import Jsonb

log = logging.getLogger("incident-receiver")


class JsonLines(logging.Formatter):
    """A record as one JSON line, in the shape of the CMS's (docs/logging.md): the central
    log and `invoke logs.search` read every service's lines alike."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "event": getattr(record, "event", "log"),
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": "incident-receiver",
            "env": os.environ.get("LOREPIN_ENV", "?"),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


DDL = """
CREATE SCHEMA IF NOT EXISTS lorepin_ops;
CREATE TABLE IF NOT EXISTS lorepin_ops.incidents (
    id bigserial PRIMARY KEY,
    group_key text NOT NULL,
    title text NOT NULL,
    classification text NOT NULL,
    severity text NOT NULL,
    priority text NOT NULL,
    status text NOT NULL DEFAULT 'open',  -- open, acknowledged, resolved
    opened_at timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_at timestamptz,
    resolved_by text,
    alerts jsonb NOT NULL DEFAULT '[]'
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open_per_group
    ON lorepin_ops.incidents (group_key) WHERE status <> 'resolved';
CREATE TABLE IF NOT EXISTS lorepin_ops.incident_events (
    id bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES lorepin_ops.incidents (id),
    at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL,  -- opened, firing, repeat, resolved, acknowledged, note, notified
    who text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);
"""
PRIORITY = {"critical": 1, "warning": 3}  # production; every other environment one lower


def priority(severity: str, environment_kind: str) -> str:
    base = PRIORITY.get(severity, 4)
    return f"P{min(4, base + (0 if environment_kind == 'production' else 1))}"


def summary(alerts: list[dict[str, Any]]) -> str:
    names = sorted({a["labels"].get("alertname", "?") for a in alerts})
    first = alerts[0].get("annotations", {}).get("summary") if alerts else None
    return f"{', '.join(names)}: {first}" if first else ", ".join(names)


def record(conn: psycopg.Connection[Any], payload: dict[str, Any], kind: str) -> tuple[int, str]:
    """One notification into the incident of its group; (incident id, what happened)."""
    key = payload["groupKey"]
    alerts = payload.get("alerts") or []
    firing = [a for a in alerts if a.get("status") == "firing"]
    common = payload.get("commonLabels") or {}
    found = conn.execute(
        "SELECT id FROM lorepin_ops.incidents WHERE group_key = %s AND status <> 'resolved' "
        "FOR UPDATE",
        (key,),
    ).fetchone()
    if found is None and not firing:
        return 0, "ignored"  # the resolution of an incident already resolved by hand
    if found is None:
        severity = common.get("severity") or firing[0]["labels"].get("severity", "warning")
        row = conn.execute(
            "INSERT INTO lorepin_ops.incidents "
            "(group_key, title, classification, severity, priority, alerts) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (key, summary(firing), common.get("category") or "unclassified", severity,
             priority(severity, kind), Jsonb(firing)),
        ).fetchone()  # fmt: skip
        assert row is not None
        incident, what = int(row[0]), "opened"
    else:
        incident = int(found[0])
        what = "resolved" if payload.get("status") == "resolved" else "repeat"
        # Every alert the incident has had (an alert that joins later, say CmsDown after
        # CmsNotReady, is part of it), and a title that names them all.
        known = conn.execute(
            "SELECT alerts FROM lorepin_ops.incidents WHERE id = %s", (incident,)
        ).fetchone()
        seen = {a["labels"].get("alertname") for a in (known[0] if known else [])}
        merged = [*(known[0] if known else []),
                  *(a for a in alerts if a["labels"].get("alertname") not in seen)]  # fmt: skip
        conn.execute(
            "UPDATE lorepin_ops.incidents SET alerts = %s, title = %s WHERE id = %s",
            (Jsonb(merged), summary(merged), incident),
        )
        if what == "resolved":
            conn.execute(
                "UPDATE lorepin_ops.incidents SET status = 'resolved', resolved_at = now(), "
                "resolved_by = 'alertmanager' WHERE id = %s",
                (incident,),
            )
    names = sorted({a["labels"].get("alertname", "?") for a in alerts})
    # When each alert began and ended, as Prometheus saw it (not when it was told).
    began = {a["labels"].get("alertname", "?"): a["startsAt"] for a in alerts
             if a.get("startsAt")}  # fmt: skip
    ended = {a["labels"].get("alertname", "?"): a["endsAt"] for a in alerts
             if a.get("status") == "resolved" and a.get("endsAt")}  # fmt: skip
    conn.execute(
        "INSERT INTO lorepin_ops.incident_events (incident_id, kind, who, detail) "
        "VALUES (%s, %s, 'alertmanager', %s)",
        (incident, what, Jsonb({"alerts": names, "receiver": payload.get("receiver"),
                                "status": payload.get("status"), "began": began,
                                "ended": ended})),
    )  # fmt: skip
    return incident, what


def forward(hook: str, text: str) -> bool:
    """The message to the team's Slack-compatible webhook; False when it did not take it."""
    request = urllib.request.Request(  # noqa: S310 (the configured webhook)
        hook, data=json.dumps({"text": text}).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return bool(200 <= answer.status < 300)
    except OSError as exc:
        log.warning("the webhook did not take the message: %s", type(exc).__name__)
        return False


class Receiver(BaseHTTPRequestHandler):
    settings: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/healthz" else 404, {"status": "alive"})

    def do_POST(self) -> None:
        if not self.path.startswith("/alerts"):
            self._answer(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("content-length") or 0)
            payload = json.loads(self.rfile.read(min(length, 1 << 20)))
            payload["groupKey"]
        except (ValueError, KeyError, TypeError):
            self._answer(400, {"error": "not an Alertmanager webhook payload"})
            return
        try:
            with connect(self.settings["dsn"]) as conn:
                incident, what = record(conn, payload, self.settings["kind"])
        except psycopg.Error as exc:  # Alertmanager tries again: nothing is lost
            log.error("the database did not take it (%s): answering 503", type(exc).__name__)
            self._answer(503, {"error": "database unavailable"})
            return
        self._answer(200, {"incident": incident, "event": what})
        hook = read(self.settings.get("hook_file", ""))
        if incident and hook:
            env = self.settings["env"]
            text = f"LorePin CMS: {env}: incident {incident} {what}: {summary(payload['alerts'])}"
            ok = forward(hook, text)
            with connect(self.settings["dsn"]) as conn:
                conn.execute(
                    "INSERT INTO lorepin_ops.incident_events (incident_id, kind, who, detail) "
                    "VALUES (%s, 'notified', 'incident-receiver', %s)",
                    (incident, Jsonb({"delivered": ok})),
                )

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def connect(dsn: str) -> psycopg.Connection[Any]:
    """A connection with the password the secret file holds now: `invoke
    db.rotate-password` changes it in place, and the next connection takes it."""
    password = read(os.environ.get("LOREPIN_DB_PASSWORD_FILE", ""))
    return psycopg.connect(dsn, password=password, connect_timeout=5)


def read(path: str) -> str:
    try:
        return Path(path).read_text().strip() if path else ""
    except OSError:
        return ""


def main() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    dsn = psycopg.conninfo.make_conninfo(
        host=os.environ.get("LOREPIN_DB_HOST", "db"),
        user=os.environ.get("LOREPIN_DB_USER", "lorepin"),
        dbname=os.environ.get("LOREPIN_DB_NAME", "lorepin"),
        application_name="incident-receiver",
        target_session_attrs="read-write",
    )
    Receiver.settings = {
        "dsn": dsn,
        "env": os.environ.get("LOREPIN_ENV", "?"),
        "kind": os.environ.get("LOREPIN_ENV_KIND", "staging"),
        "hook_file": os.environ.get("LOREPIN_ALERT_WEBHOOK_FILE", ""),
    }
    while True:  # the database may be starting, failing over or restoring: wait for it
        try:
            with connect(dsn) as conn:
                conn.execute(DDL)
            break
        except psycopg.Error as exc:
            log.warning("waiting for the database (%s)", type(exc).__name__)
            time.sleep(2)
    server = ThreadingHTTPServer(("0.0.0.0", 9095), Receiver)  # noqa: S104 (its network's)
    log.info("listening on :9095")
    server.serve_forever()


if __name__ == "__main__":
    main()
