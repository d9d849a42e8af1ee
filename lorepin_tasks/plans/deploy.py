"""Blue-green deploys of a server environment, as data and commands. Pure: no I/O.

The backend (single host, Docker Compose): two colours of the CMS (`cms-blue`,
`cms-green`) behind the proxy; one serves, the other is idle or keeps the previous
release for an instant rollback. A deploy starts the idle colour with the new release,
proves it ready, switches the proxy to it, watches it, and stops the old one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lorepin_tasks.errors import ConfigError, Refused
from lorepin_tasks.plans import compose, proxy
from lorepin_tasks.settings import DeployPolicy, Environment

COLOURS = ("blue", "green")
LOCK_KEY = (0x4C50, 0x4450)  # "LP", "DP": the deploy lock of an environment's database
OPS = "lorepin_ops"
PROXY = "proxy"
COLLECTOR = "collector"  # the environment's central log (docs/logging.md)
BACKUP_SITE = "backup-site"  # the repository host of the second backup site


def service(colour: str) -> str:
    return f"cms-{colour}"


def other(colour: str) -> str:
    return COLOURS[1 - COLOURS.index(colour)]


@dataclass(frozen=True, kw_only=True)
class Colour:
    name: str
    version: str | None  # the release its container runs (None: no container)
    running: bool
    paused: bool = False  # kept for a rollback


@dataclass(frozen=True, kw_only=True)
class State:
    """What the engine says: each colour's container, and which one the proxy serves."""

    colours: Mapping[str, Colour]
    active: str | None  # the colour the proxy routes to (None: nothing deployed)

    @property
    def idle(self) -> str:
        return other(self.active) if self.active else COLOURS[0]

    @property
    def serving(self) -> str | None:
        """The release the proxy serves now."""
        return self.colours[self.active].version if self.active else None


def variables(state: State, **versions: str | None) -> dict[str, str]:
    """Each colour's image version for Compose: as they run, with `versions` changed."""
    current = {name: c.version for name, c in state.colours.items()}
    current.update(versions)
    return {
        f"LOREPIN_{name.upper()}_VERSION": version
        for name, version in current.items()
        if version is not None
    }


# -- preflight -------------------------------------------------------------------------


def release_tag(text: str) -> str:
    """The version a deploy or rollback names: a release (`1.4.0`, `v1.4.0`, `1.5.0-rc.1`),
    never a build's sha- tag (only releases have manifests, approvals and history)."""
    from lorepin_tasks.plans.images import version_tag

    tag = version_tag(text) if not text.startswith("sha-") else ""
    if not tag:
        raise ConfigError(f"invalid version {text!r}: a released version like 1.2.0 (or v1.2.0)")
    return tag


def from_build_manifest(data: Any, prefix: str, tag: str) -> dict[str, Any] | None:
    """A build manifest (`images.build`, brought by `artifacts.download`) in the release
    manifest's shape: image name -> local reference and ID. None: not a build manifest.
    It names no migration head: a rollback to it leaves the schema to its readiness."""
    from lorepin_tasks.plans.images import ref

    entries = data.get("images") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and e.get("name") and e.get("id") for e in entries
    ):
        return None
    return {
        "version": tag,
        "git_sha": data.get("git_revision"),
        "images": {
            e["name"]: {"image": ref(prefix, e["name"], tag), "id": e["id"]} for e in entries
        },
        "migration_head": data.get("migration_head"),
    }


def release_images(prefix: str, tag: str) -> dict[str, str]:
    """What a deploy of `tag` starts: image name -> reference (the manifest's keys)."""
    from lorepin_tasks.plans.images import IMAGES, ref
    from lorepin_tasks.plans.release import SERVICES

    return {IMAGES[s]: ref(prefix, IMAGES[s], tag) for s in SERVICES}


def release_problems(
    manifest: Mapping[str, Any], expected: Mapping[str, str], found: Mapping[str, str | None]
) -> list[str]:
    """What is wrong with the release's images here. `expected`: image name -> the
    reference the deploy starts; `found`: reference -> its image ID on the engine, or None."""
    problems = []
    entries = manifest.get("images") or {}
    for name, ref in expected.items():
        entry = entries.get(name) if isinstance(entries, Mapping) else None
        if not isinstance(entry, Mapping) or not entry.get("id"):
            problems.append(f"its manifest names no {name} image: restore it")
            continue
        wanted, have = entry.get("id"), found.get(ref)
        if entry.get("image") != ref:
            problems.append(f"its manifest's {name} image is {entry.get('image')}, not {ref}")
        elif have is None:
            problems.append(f"image {ref} is not on this engine (`invoke artifacts.download`)")
        elif have != wanted:
            problems.append(f"image {ref} is {have[:19]}, not the release's {str(wanted)[:19]}")
    return problems


def in_window(policy: DeployPolicy, now: datetime) -> bool:
    if not policy.windows:
        return True
    from zoneinfo import ZoneInfo

    local = now.astimezone(ZoneInfo(policy.timezone))
    return any(w.contains(local) for w in policy.windows)


def window_override(
    policy: DeployPolicy, now: datetime, *, outside_window: bool, reason: str
) -> str | None:
    """None inside a window; the recorded reason outside one (refused without it)."""
    if in_window(policy, now):
        return None
    spans = ", ".join(w.text for w in policy.windows)
    if not outside_window:
        raise Refused(
            f"outside the deploy windows ({spans}, {policy.timezone}): deploy then, or "
            "pass --outside-window --reason TEXT (recorded)"
        )
    if not reason.strip():
        raise ConfigError("--outside-window needs --reason TEXT: why it cannot wait")
    return reason.strip()


def approval_problem(
    policy: DeployPolicy, tag: str, cutter: str | None, approvals: Sequence[Mapping[str, str]]
) -> str | None:
    """Why the release may not go to this environment yet (None: it may)."""
    if policy.approvals == 0:
        return None
    by = {
        str(a.get("approved_by", "")).strip().lower()
        for a in approvals
        if str(a.get("approved_by", "")).strip().lower() != (cutter or "").strip().lower()
    }
    if len(by) >= policy.approvals:
        return None
    return (
        f"{tag} has {len(by)} of the {policy.approvals} approval(s) it needs here "
        f"(`invoke release.approve {tag}` by someone other than its cutter)"
    )


# -- commands --------------------------------------------------------------------------


def infra(env: Environment) -> tuple[str, ...]:
    """The services a deploy starts once and never recreates: the log collector, the
    database (and its replica), the backups' second site and the proxy."""
    replica = (compose.REPLICA_SERVICE,) if env.replica else ()
    return (COLLECTOR, compose.DB_SERVICE, *replica, BACKUP_SITE, PROXY)


def infra_up(env: Environment, *, wait_timeout: int) -> list[str]:
    return compose.up(env, wait_timeout=wait_timeout, services=infra(env))


def colour_up(env: Environment, colour: str) -> list[str]:
    """Start (or replace) a colour; its readiness is polled directly, not Docker's health
    checks, whose interval would add seconds to every switch."""
    return [
        *compose.compose(env),
        "up",
        "--detach",
        "--no-build",
        "--pull",
        "never",
        "--no-deps",
        service(colour),
    ]


def colour_stop(env: Environment, colour: str) -> list[str]:
    """Stop a colour: SIGTERM lets uvicorn finish the requests it has."""
    return [*compose.compose(env), "stop", "--timeout", "30", service(colour)]


def container(env: Environment, name: str) -> str:
    """A service's container, as Compose names it. The steps of a switch and a rollback
    talk to containers with plain `docker` (about 0.1 s a call, against 0.4 s for
    `docker compose`, which reads the whole model first)."""
    return f"{env.project}-{name}-1"


def colour_pause(env: Environment, colour: str) -> list[str]:
    """Keep the previous release for an instant rollback: frozen (no CPU), not stopped,
    so bringing it back is an unpause and a switch, not a cold start."""
    return [*compose.docker(env), "pause", container(env, service(colour))]


def colour_unpause(env: Environment, colour: str) -> list[str]:
    return [*compose.docker(env), "unpause", container(env, service(colour))]


def in_proxy(env: Environment, *command: str) -> list[str]:
    return [*compose.docker(env), "exec", "-i", container(env, PROXY), *command]


def proxy_load(env: Environment) -> list[str]:
    """Load a whole proxy config (JSON on stdin) through Caddy's admin API."""
    return in_proxy(
        env,
        "curl",
        "-fsS",
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        "@-",
        f"{proxy.ADMIN}/load",
    )


def proxy_upstream(env: Environment) -> list[str]:
    """The upstream the proxy routes to now (fails when nothing is routed)."""
    return in_proxy(
        env,
        "curl",
        "-fsS",
        f"{proxy.ADMIN}/id/{proxy.CMS_ID}/upstreams/0/dial",
    )


def probe(env: Environment, colour: str, path: str) -> list[str]:
    """A request to one colour directly, from the proxy's side of the network."""
    return in_proxy(
        env,
        "curl",
        "-sS",
        "-m",
        "5",
        "-w",
        "\n%{http_code}",
        f"http://{service(colour)}:8000{path}",
    )


def access_log(env: Environment, since: str) -> list[str]:
    return [*compose.docker(env), "logs", "--since", since, container(env, PROXY)]


def psql(env: Environment, who: str, *, service: str = compose.DB_SERVICE) -> list[str]:
    """A psql session in the database container (local socket, no password)."""
    return psql_in(compose.docker(env), container(env, service), who)


def psql_in(docker: list[str], container_: str, who: str) -> list[str]:
    """A psql session in this container of that engine (`docker` points at it)."""
    return [
        *docker,
        "exec",
        "-i",
        "-e",
        f"PGAPPNAME={f'lorepin-deploy {who}'[:63]}",
        "-e",
        # No NOTICEs piling up on stderr; the toolkit's own commits (lock, trail) never
        # wait for a synchronous replica that is away (the trail is mirrored here too).
        "PGOPTIONS=-c client_min_messages=warning -c synchronous_commit=local",
        container_,
        "psql",
        "-U",
        "lorepin",
        "-d",
        "lorepin",
        "-qtAX",
        "-F",
        "\t",
        "-v",
        "ON_ERROR_STOP=1",
    ]


def tls_certificate(cert: Path, key: Path, hosts: Sequence[str]) -> list[str]:
    """A self-signed certificate for a staging proxy (production is given a real one)."""
    names = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    return [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-days",
        "397",
        "-subj",
        f"/CN={hosts[0]}",
        "-addext",
        f"subjectAltName={names}",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    ]


def tls_public_keys(cert: Path, key: Path) -> tuple[list[str], list[str]]:
    """The public key of the certificate (failing when it has expired) and of the key: a
    usable pair prints the same one twice."""
    return (
        ["openssl", "x509", "-noout", "-pubkey", "-checkend", "0", "-in", str(cert)],
        ["openssl", "pkey", "-pubout", "-in", str(key)],
    )


def proxy_config(
    colour: str | None,
    public_https_port: int,
    server_name: str,
    monitoring: proxy.Monitoring | None = None,
    admin_allow: tuple[str, ...] = (),
) -> str:
    route = proxy.Route(
        upstream=proxy.upstream(service(colour)) if colour else None,
        public_https_port=public_https_port,
        server_name=server_name,
        monitoring=monitoring,
        admin_allow=admin_allow,
    )
    return json.dumps(proxy.config(route))


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def server_name(env: Environment) -> str:
    """The host people use (from the environment's URL, an IPv6 one unbracketed)."""
    from urllib.parse import urlsplit

    return (urlsplit(env.url).hostname if env.url else None) or "localhost"


def upstream_colour(dial: str) -> str | None:
    """The colour an upstream names ("cms-green:8000" -> "green")."""
    name = dial.strip().strip('"').partition(":")[0].removeprefix("cms-")
    return name if name in COLOURS else None


# -- the record in the environment's database ----------------------------------------

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {OPS};
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE TABLE IF NOT EXISTS {OPS}.audit (
    seq bigint PRIMARY KEY,
    at timestamptz NOT NULL,
    record jsonb NOT NULL,
    prev text NOT NULL,
    hash text NOT NULL
);
CREATE TABLE IF NOT EXISTS {OPS}.deploy_lock_holder (
    pid integer PRIMARY KEY,
    who text NOT NULL,
    action text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
)
"""


# The relations DDL makes: when all are there (and the extension), DDL is not sent again.
# Sent every time, each `IF NOT EXISTS` is a no-op, yet pgaudit logs it as a schema
# statement, which would bury the real ones in audit.report.
# The CMS's database role, there and able to log in (lorepin_cms.db_roles).
CMS_ROLE_SQL = "SELECT 1 FROM pg_roles WHERE rolname = 'lorepin_cms' AND rolcanlogin"
OPS_RELATIONS = tuple(re.findall(r"CREATE TABLE IF NOT EXISTS (\S+) \(", DDL))


def ddl_needed_sql() -> str:
    """'t' when the toolkit's schema (or pg_stat_statements) is not all there yet."""
    names = ", ".join(f"'{n}'" for n in OPS_RELATIONS)
    return (
        f"SELECT NOT (SELECT bool_and(to_regclass(n) IS NOT NULL) FROM unnest(ARRAY[{names}]) n)"
        " OR NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
    )


SCHEMA_SQL = (
    "SELECT 'current', coalesce((SELECT version_num FROM alembic_version LIMIT 1), ''), false "
    f"UNION ALL SELECT revision, coalesce(down_revision, ''), contract "
    f"FROM {OPS}.migration_checksums"
)


Ledger = Mapping[str, tuple[str | None, bool]]  # revision -> (the one below it, contract?)


def contract_between(current: str | None, head: str | None, ledger: Ledger) -> str | None:
    """The contract revision applied above `head` (an older release's schema head), if any.

    `ledger` is what the migrator recorded of the applied revisions. None also when `head`
    is not below `current` in it: the release's readiness judges that case.
    """
    walk, found = current, None
    while walk and walk != head:
        if walk not in ledger:
            return None
        below, contract = ledger[walk]
        found = walk if contract else found
        walk = below
    return found if walk == head else None


def schema_facts(rows: Sequence[Sequence[str]]) -> tuple[str | None, Ledger]:
    """(current revision, ledger) from SCHEMA_SQL's rows."""
    current = next((r[1] or None for r in rows if r and r[0] == "current"), None)
    ledger = {r[0]: (r[1] or None, r[2] == "t") for r in rows if len(r) == 3 and r[0] != "current"}
    return current, ledger


def lock_sql() -> str:
    return f"SELECT pg_try_advisory_lock({LOCK_KEY[0]}, {LOCK_KEY[1]})"


def holder_sql() -> str:
    return (
        f"SELECT coalesce(h.who, a.application_name), coalesce(h.action, ''), "
        f"to_char(coalesce(h.since, a.backend_start) AT TIME ZONE 'UTC', "
        f"'YYYY-MM-DD HH24:MI:SS') FROM pg_locks l "
        f"JOIN pg_stat_activity a ON a.pid = l.pid "
        f"LEFT JOIN {OPS}.deploy_lock_holder h ON h.pid = l.pid "
        f"WHERE l.locktype = 'advisory' AND l.classid = {LOCK_KEY[0]} "
        f"AND l.objid = {LOCK_KEY[1]} AND l.granted AND l.database = "
        f"(SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1"
    )


def claim_sql(who: str, action: str) -> str:
    """Record who holds the lock (`who` and `action` as SQL literals: pg.literal)."""
    return (
        f"INSERT INTO {OPS}.deploy_lock_holder (pid, who, action) VALUES "
        f"(pg_backend_pid(), {who}, {action}) ON CONFLICT (pid) DO "
        "UPDATE SET who = excluded.who, action = excluded.action, since = now()"
    )


def release_sql() -> str:
    return f"DELETE FROM {OPS}.deploy_lock_holder WHERE pid = pg_backend_pid()"


@dataclass(frozen=True, kw_only=True)
class Step:
    name: str
    seconds: float
    ok: bool


def record(
    *,
    seq: int,
    at: str,
    who: str,
    action: str,
    env: str,
    version: str | None,
    outcome: str,
    detail: Mapping[str, Any] | None = None,
    steps: Sequence[Step] = (),
) -> dict[str, Any]:
    """One audit record (before it is sealed into the chain)."""
    return {
        "seq": seq,
        "at": at,
        "who": who,
        "action": action,
        "env": env,
        "version": version,
        "outcome": outcome,
        "detail": dict(detail or {}),
        "steps": [{"name": s.name, "seconds": round(s.seconds, 2), "ok": s.ok} for s in steps],
    }
