"""Settings, resolved once per task into frozen dataclasses. The only reader of config.

Order, later wins: built-in defaults -> invoke.yaml (`lorepin:` tree) -> environment
variables -> task flags. Secrets never live here: only where to find them.

Environment variables:
  BASE_IMAGE           base image of every Dockerfile (default: what bootstrap recorded)
  LOREPIN_CA_BUNDLE    CA bundle handed to image builds as a secret (default: the host's)
  LOREPIN_IMAGE_PREFIX repository prefix of the project's images (default: lorepin)
  LOREPIN_PROJECT      Compose project name of the selected environment
  LOREPIN_HTTP_PORT    host port of the CMS (0: Docker picks a free one); of the proxy's
                       HTTP redirect in server environments
  LOREPIN_HTTPS_PORT   host port of the proxy's HTTPS in server environments
  LOREPIN_DB_PORT      host port of the database, where the environment publishes it
  LOREPIN_LOG_PORT     loopback port of a server environment's log collector
  LOREPIN_IMAGE_TAG    tag of the images the environment builds and runs
  LOREPIN_SECRETS_DIR  directory holding the selected environment's secret files
  LOREPIN_BACKUP_DIR   directory for the selected environment's pre-migration dumps
  LOREPIN_RELEASE_WEBHOOK_URL  Slack-compatible webhook for release news (a secret)
  LOREPIN_BACKUP_WEBHOOK_URL   the one server environments' scheduled backups report to
                       (a secret; default: the release one), written into the
                       environment's secrets_dir/backup_webhook by `invoke deploy`
  LOREPIN_ALERT_WEBHOOK_URL    the one the incident receiver passes alerts on to (a
                       secret; default: the backup one), written into
                       secrets_dir/alert_webhook by `invoke monitor.up`
  LOREPIN_AGE_IDENTITY the deployer's age identity (private key) file, which decrypts
                       the repository's secrets/<env>/*.age (default:
                       $XDG_CONFIG_HOME/lorepin/age.key, made by `invoke secrets.keygen`)
  XDG_STATE_HOME       per-user state (secrets, dumps, locks): $XDG_STATE_HOME/lorepin
  XDG_CACHE_HOME       per-user caches (resolved Compose models): $XDG_CACHE_HOME/lorepin
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

from lorepin_tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("local", "feature", "staging", "production")
SERVER_KINDS = ("staging", "production")  # deployed by version, behind the proxy
# Loopback and the private ranges (RFC 1918, RFC 4193): the default monitoring allow-list.
PRIVATE_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12",
                    "192.168.0.0/16", "fc00::/7")  # fmt: skip
LAB_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # a swarm lab (`invoke swarm.lab.up`)
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
TTL = re.compile(r"^(?P<n>[1-9][0-9]{0,3})(?P<unit>[smhd])$")
# Docker's repository path: lowercase components separated by '/'.
REPOSITORY = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
BASE_IMAGE_RECORD = Path(".lorepin/base-image.env")
DEFAULT_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
OVERRIDES = (
    "LOREPIN_PROJECT",
    "LOREPIN_HTTP_PORT",
    "LOREPIN_HTTPS_PORT",
    "LOREPIN_DB_PORT",
    "LOREPIN_MONITORING_PORT",
    "LOREPIN_LOG_PORT",
    "LOREPIN_IMAGE_TAG",
    "LOREPIN_SECRETS_DIR",
    "LOREPIN_BACKUP_DIR",
)

DEFAULTS: dict[str, Any] = {
    "image_prefix": "lorepin",
    "wait_timeout": 180,
    "environments": {
        "local": {
            "kind": "local",
            "project": "lorepin-local",
            "compose_files": ["compose/compose.yaml", "compose/mocks.yaml", "compose/local.yaml"],
            "http_port": 8080,
            "db_port": 15432,
            "image_tag": "dev",
        },
    },
    "feature": {
        "compose_files": ["compose/compose.yaml", "compose/mocks.yaml", "compose/feature.yaml"],
        "ttl": "72h",
        "seed_count": 3000,
    },
    "release": {
        "branch": "main",
        "major_on_zero": False,
        "initial_version": "0.1.0",
        "version_files": ["pyproject.toml"],
        "two_person_rule": True,
    },
    "db": {"lock_wait": 60},
    # `invoke perf`: how much worse than the previous version's report fails the run.
    "perf": {
        "p95_increase_percent": 25,
        "p99_increase_percent": 50,
        "noise_ms": 25,
        "error_percent": 1,
        "throughput_drop_percent": 20,
    },
}


@dataclass(frozen=True, kw_only=True)
class Checkout:
    """The checkout the toolkit runs from: every environment it makes carries its id."""

    id: str
    where: str  # host:path, for people

    @classmethod
    def of(cls, root: Path, host: str) -> Checkout:
        where = f"{host}:{root}"
        return cls(id=hashlib.sha256(where.encode()).hexdigest()[:16], where=where)


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WINDOW = re.compile(
    r"^(?P<first>[a-z]{3})(?:-(?P<last>[a-z]{3}))? (?P<start>\d\d:\d\d)-(?P<end>\d\d:\d\d)$"
)


@dataclass(frozen=True, kw_only=True)
class Window:
    """When deploys may run: days of the week (0 = Monday) and a time span, local time."""

    days: frozenset[int]
    start: time
    end: time
    text: str

    def contains(self, when: datetime) -> bool:
        return when.weekday() in self.days and self.start <= when.time() < self.end


@dataclass(frozen=True, kw_only=True)
class DeployPolicy:
    """How a server environment (staging, production) takes a new release."""

    approvals: int = 0  # approvals a release needs (by others than who cut it)
    windows: tuple[Window, ...] = ()  # none: any time
    timezone: str = "UTC"
    watch: int = 30  # seconds the new release is watched after the switch
    ready_timeout: int = 60  # seconds a new colour has to answer /readyz
    keep: int = 3  # release versions whose images stay on the engine after a deploy
    # An environment where the same version must have passed `invoke e2e` first (the
    # outcome is read from that environment's trail), e.g. staging for production.
    requires_e2e: str | None = None


@dataclass(frozen=True, kw_only=True)
class Autoscale:
    """The autoscaler of a swarm environment (`swarm.autoscale`): the CMS's p99 latency
    target, the seconds after any change before the next, the seconds p99 must stay under
    half the target before one replica goes, and how often it looks."""

    p99_ms: int = 250
    cooldown: int = 60
    scale_down_after: int = 300
    interval: int = 15


AUTOSCALE_BOUNDS = {"p99_ms": (1, 60_000), "cooldown": (1, 3600),
                    "scale_down_after": (1, 86_400), "interval": (1, 300)}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class SwarmPolicy:
    """A server environment on Docker Swarm (`backend: swarm`, docs/production-swarm.md):
    the swarm it runs on (a lab of `invoke swarm.lab.up`, by name) and the CMS's replicas:
    how many a deploy starts, and the bounds `invoke scale` and the autoscaler keep to."""

    lab: str = "lab"
    replicas: int = 2
    min: int = 1
    max: int = 4
    autoscale: Autoscale | None = None  # off unless set


def _swarm(raw: Mapping[str, Any], where: str) -> SwarmPolicy:
    known = {f.name for f in dataclasses.fields(SwarmPolicy)}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"{where}: swarm: unknown setting {unknown[0]!r} "
                          f"(known: {', '.join(sorted(known))})")  # fmt: skip
    lab = str(raw.get("lab", "lab"))
    if not LAB_NAME.match(lab):
        raise ConfigError(f"{where}: swarm.lab must be lowercase letters and digits "
                          f"(max 8), got {lab!r}")  # fmt: skip
    sizes = {k: _int(raw[k], f"{where}: swarm.{k}", low=1, high=64)
             for k in ("replicas", "min", "max") if k in raw}  # fmt: skip
    policy = SwarmPolicy(lab=lab, autoscale=_autoscale(raw.get("autoscale"), where), **sizes)
    if not policy.min <= policy.replicas <= policy.max:
        raise ConfigError(f"{where}: swarm needs min <= replicas <= max, got "
                          f"{policy.min} <= {policy.replicas} <= {policy.max}")  # fmt: skip
    return policy


def _autoscale(raw: Any, where: str) -> Autoscale | None:
    if raw is None or raw is False:
        return None
    if raw is True:
        return Autoscale()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: swarm.autoscale must be a mapping, true or false")
    if unknown := sorted(set(raw) - set(AUTOSCALE_BOUNDS)):
        raise ConfigError(f"{where}: swarm.autoscale: unknown setting {unknown[0]!r} "
                          f"(known: {', '.join(sorted(AUTOSCALE_BOUNDS))})")  # fmt: skip
    return Autoscale(**{k: _int(v, f"{where}: swarm.autoscale.{k}", low=AUTOSCALE_BOUNDS[k][0],
                                high=AUTOSCALE_BOUNDS[k][1]) for k, v in raw.items()})  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class DbClient:
    """How the CMS uses its database (invoke.yaml's `database:`): connections per worker,
    seconds a request waits for one, and the statement and idle-in-transaction timeouts
    set on each (milliseconds)."""

    pool_size: int = 16
    pool_timeout: int = 5
    statement_timeout_ms: int = 15_000
    idle_in_transaction_timeout_ms: int = 30_000

    def variables(self) -> dict[str, str]:
        return {
            "LOREPIN_DB_POOL_SIZE": str(self.pool_size),
            "LOREPIN_DB_POOL_TIMEOUT": str(self.pool_timeout),
            "LOREPIN_DB_STATEMENT_TIMEOUT_MS": str(self.statement_timeout_ms),
            "LOREPIN_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": str(self.idle_in_transaction_timeout_ms),
        }


def _db_client(raw: Mapping[str, Any], where: str) -> DbClient:
    limits = {"pool_size": 1000, "pool_timeout": 600, "statement_timeout_ms": 3_600_000,
              "idle_in_transaction_timeout_ms": 3_600_000}  # fmt: skip
    unknown = sorted(set(raw) - set(limits))
    if unknown:
        raise ConfigError(f"{where}: database: unknown setting {unknown[0]!r} "
                          f"(known: {', '.join(limits)})")  # fmt: skip
    return DbClient(**{k: _int(v, f"{where}: database.{k}", low=1, high=limits[k])
                       for k, v in raw.items()})  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class BackupPolicy:
    """How an environment's backups are encrypted and kept (grandfather-father-son)."""

    recipients: tuple[str, ...] = ()  # age public keys beside the environment's own key
    keep_last: int = 3
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 6
    rto: int = 300  # seconds: recovery time objective (dr.drill fails above it)
    rpo: int = 60  # seconds: recovery point objective
    # Server kinds: seconds between physical backups of each type, run on the second site.
    schedule: tuple[tuple[str, int], ...] = (("full", 86400), ("incr", 3600))


@dataclass(frozen=True, kw_only=True)
class Environment:
    """One place the CMS runs: which engine, which Compose files, which ports, which policy."""

    name: str
    kind: str
    project: str
    compose_files: tuple[Path, ...]
    http_port: int
    db_port: int | None
    image_tag: str
    state_dir: Path  # per-user: secrets, dumps, the environment's lock
    secrets_dir: Path
    backups_dir: Path
    docker_host: str | None = None
    docker_context: str | None = None
    backup_before_migrate: bool = False
    https_port: int | None = None  # server kinds: the proxy's HTTPS port (0: Docker picks)
    url: str | None = None  # server kinds: the public URL people use
    deploy: DeployPolicy | None = None  # server kinds only: they are deployed, not `up`
    backup: BackupPolicy = BackupPolicy()
    profiles: tuple[str, ...] = ()  # Compose profiles every command of it enables
    # Server kinds: a streaming replica of the database (`db.failover` promotes it);
    # "synchronous": a commit returns once the replica has it too (no committed row is
    # lost in a failover; writes wait while the replica is down), "asynchronous": no
    # wait (a failover may lose the last commits). None: no replica.
    replica: str | None = None
    # Server kinds: how long Prometheus keeps its samples (`invoke monitor.up`), and the
    # networks whose clients may reach the monitoring's pages through the proxy.
    monitoring_retention: str = "15d"
    monitoring_allow: tuple[str, ...] = PRIVATE_NETWORKS
    # `local` only: the loopback port its monitoring's Prometheus is published on (local
    # has no proxy to reach it through); 0: Docker picks. None elsewhere.
    monitoring_port: int | None = None
    # Server kinds: the central log (docs/logging.md). Its collector's loopback port,
    # where the engine's syslog driver delivers every container's lines (fixed: each
    # container keeps the address it was created with); days its files are kept; and
    # the database statements slower than this many milliseconds that it logs.
    log_port: int | None = None
    log_retention_days: int = 14
    slow_query_ms: int = 250
    database: DbClient = DbClient()
    # The CMS's user activity (invoke.yaml's `activity:`): recorded or not, days kept.
    activity_retention_days: int = 30
    activity_enabled: bool = True
    # The age public keys the repository's secrets/<env>/*.age are encrypted to (invoke.yaml's
    # `secrets.recipients`): every person or runner that deploys the environment.
    secrets_recipients: tuple[str, ...] = ()
    # The host firewall (invoke.yaml's `firewall:`, `invoke security.firewall`): who may
    # reach SSH, and on which port.
    firewall_admin_networks: tuple[str, ...] = ()
    firewall_ssh_port: int = 22
    # Who may load the admin page through the proxy (invoke.yaml's `admin.allow`).
    admin_allow: tuple[str, ...] = PRIVATE_NETWORKS
    # Server kinds: None runs on one engine with Compose (blue-green); a SwarmPolicy runs
    # on a Docker Swarm (invoke.yaml's `backend: swarm` and `swarm:`).
    swarm: SwarmPolicy | None = None

    @property
    def is_server(self) -> bool:
        return self.deploy is not None

    @property
    def monitorable(self) -> bool:
        """Server kinds, and local on request (`monitor.up`): never a feature environment."""
        return self.is_server or self.kind == "local"

    @property
    def generates_secrets(self) -> bool:
        """Throwaway kinds get random secrets on first use; long-lived ones must be given them."""
        return self.kind in ("local", "feature")

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "lock"


@dataclass(frozen=True, kw_only=True)
class ReleasePolicy:
    branch: str
    major_on_zero: bool
    initial_version: str
    version_files: tuple[str, ...]
    two_person_rule: bool


@dataclass(frozen=True, kw_only=True)
class FeaturePolicy:
    compose_files: tuple[str, ...]  # relative: a branch builds from its own tree
    ttl: timedelta
    seed_count: int


@dataclass(frozen=True, kw_only=True)
class PerfPolicy:
    """When `invoke perf` calls a run a regression against the previous version's report:
    an endpoint's p95 or p99 grown by more than these percents (and by more than noise_ms,
    below which a change is noise), errors above error_percent of its requests, or the
    throughput down by more than throughput_drop_percent."""

    p95_increase_percent: int = 25
    p99_increase_percent: int = 50
    noise_ms: int = 25
    error_percent: int = 1
    throughput_drop_percent: int = 20


def _perf(raw: Mapping[str, Any]) -> PerfPolicy:
    known = {f.name for f in dataclasses.fields(PerfPolicy)}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"perf.{unknown[0]} is not a setting (one of {', '.join(sorted(known))})")
    return PerfPolicy(**{k: _int(v, f"perf.{k}", low=0, high=1000) for k, v in raw.items()})


@dataclass(frozen=True, kw_only=True)
class Settings:
    root: Path
    checkout: Checkout
    state_home: Path
    cache_dir: Path  # this checkout's caches: safe to delete
    base_image: str | None
    ca_bundle: Path | None
    image_prefix: str
    wait_timeout: int
    environments: Mapping[str, Environment]  # as configured, without LOREPIN_* overrides
    overrides: Mapping[str, str]  # the LOREPIN_* variables of the selected environment
    release: ReleasePolicy
    feature: FeaturePolicy
    lock_wait: float  # seconds a migration waits for another one
    perf: PerfPolicy = PerfPolicy()
    webhook_url: str | None
    backup_webhook_url: str | None = None  # where the second site's schedule reports
    alert_webhook_url: str | None = None  # where the incident receiver passes alerts on
    age_identity: Path = Path("age.key")  # the deployer's key to the repository's secrets

    def environment(self, name: str) -> Environment:
        """The selected environment, with the LOREPIN_* overrides applied."""
        if name not in self.environments:
            valid = ", ".join(sorted(self.environments))
            raise ConfigError(f"unknown environment {name!r}; valid environments: {valid}")
        return _with_overrides(self.environments[name], self.overrides, self.state_home, self.root)


def _int(value: Any, what: str, *, low: int, high: int) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{what} must be a whole number, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise ConfigError(f"{what} must be between {low} and {high}, got {value!r}")
    return number


def whole_number(value: str, what: str, *, low: int, high: int) -> int:
    """A task flag that must be a number (flags arrive as text: a typo is exit 2, not a
    traceback from Invoke's parser)."""
    return _int(value.strip() if isinstance(value, str) else value, what, low=low, high=high)


def parse_ttl(text: str) -> timedelta:
    match = TTL.match(text.strip())
    if not match:
        raise ConfigError(f"invalid ttl {text!r}: a number and s, m, h or d, like 90m, 72h, 7d")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match["unit"]]
    return timedelta(seconds=int(match["n"]) * seconds)


def user_path(value: str, what: str) -> Path:
    """A path a person typed: `~` and `~user` expanded, or a one-line error."""
    try:
        return Path(value).expanduser()
    except RuntimeError:  # ~nosuchuser
        raise ConfigError(f"{what}: {value!r} names no known home directory") from None


def config_home(environ: Mapping[str, str]) -> Path:
    """Per-user configuration (XDG): the deployer's age identity."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "lorepin"


def state_home(environ: Mapping[str, str]) -> Path:
    """Per-user state (XDG): secrets, pre-migration dumps and locks, keyed by project.

    Outside the checkout on purpose: deleting a checkout never deletes the password a
    database was initialised with, nor the dump taken before a migration.
    """
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "~")) / ".local/state")
    return Path(base).expanduser() / "lorepin"


def cache_home(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "~")) / ".cache")
    return Path(base).expanduser() / "lorepin"


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} in invoke.yaml must be a mapping, got {value!r}"[:200])
    return value


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} must be a list of paths, got {value!r}"[:200])
    return tuple(value)


def private_dir(value: Any, what: str, root: Path) -> Path:
    """A directory for secrets or dumps: absolute, and outside the checkout (where a
    stray `git add` would publish it)."""
    if not isinstance(value, str | Path) or not str(value).strip():
        raise ConfigError(f"{what} must be a directory path, got {value!r}")
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ConfigError(f"{what} must be an absolute path, got {str(value)!r}")
    if path.resolve().is_relative_to(root.resolve()):
        raise ConfigError(
            f"{what} {path} is inside the checkout: keep secrets and dumps out of git"
        )
    return path


def _environment(name: str, raw: Mapping[str, Any], root: Path, state: Path) -> Environment:
    where = f"environment '{name}'"
    if not ENV_NAME.match(name):
        raise ConfigError(f"{where}: names are lowercase letters, digits and '-' (max 31)")
    kind = raw.get("kind", "")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    project = str(raw.get("project") or f"lorepin-{name}")
    if not PROJECT_NAME.match(project):
        raise ConfigError(f"{where}: invalid Compose project name {project!r}")
    files = tuple(
        root / f for f in _strings(raw.get("compose_files") or [], f"{where}: compose_files")
    )
    if not files:
        raise ConfigError(f"{where}: compose_files is empty")
    for f in files:
        if not f.is_file():
            raise ConfigError(f"{where}: compose file {f.relative_to(root)} does not exist")
    tag = str(raw.get("image_tag") or name)
    if not IMAGE_TAG.match(tag):
        raise ConfigError(f"{where}: invalid image tag {tag!r}")
    db_port = raw.get("db_port")
    monitoring = _mapping(raw.get("monitoring"), f"{where}: monitoring")
    logs = _mapping(raw.get("logs"), f"{where}: logs")
    activity = _mapping(raw.get("activity"), f"{where}: activity")
    stored = _mapping(raw.get("secrets"), f"{where}: secrets")
    firewall = _mapping(raw.get("firewall"), f"{where}: firewall")
    admin = _mapping(raw.get("admin"), f"{where}: admin")
    if unknown := sorted(set(admin) - {"allow"}):
        raise ConfigError(f"{where}: admin: unknown setting {unknown[0]!r} (known: allow)")
    if unknown := sorted(set(firewall) - {"admin_networks", "ssh_port"}):
        raise ConfigError(f"{where}: firewall: unknown setting {unknown[0]!r} "
                          "(known: admin_networks, ssh_port)")  # fmt: skip
    if unknown := sorted(set(stored) - {"recipients"}):
        raise ConfigError(f"{where}: secrets: unknown setting {unknown[0]!r} (known: recipients)")
    # Keyed by Compose project, like the engine's volumes: every checkout that drives the
    # same project finds the password its database was initialised with.
    state_dir = state / project
    return Environment(
        name=name,
        kind=kind,
        project=project,
        compose_files=files,
        http_port=_int(raw.get("http_port", 8080), f"{where}: http_port", low=0, high=65535),
        db_port=None if db_port is None else _int(db_port, f"{where}: db_port", low=0, high=65535),
        image_tag=tag,
        state_dir=state_dir,
        secrets_dir=private_dir(raw["secrets_dir"], f"{where}: secrets_dir", root)
        if raw.get("secrets_dir") is not None
        else state_dir / "secrets",
        backups_dir=private_dir(raw["backups_dir"], f"{where}: backups_dir", root)
        if raw.get("backups_dir") is not None
        else state_dir / "backups",
        docker_host=raw.get("docker_host"),
        docker_context=raw.get("docker_context"),
        # Long-lived environments keep a dump from just before any schema change.
        backup_before_migrate=bool(
            raw.get("backup_before_migrate", kind in ("staging", "production"))
        ),
        https_port=_int(raw.get("https_port", 8443), f"{where}: https_port", low=0, high=65535)
        if kind in SERVER_KINDS
        else None,
        url=str(raw["url"]) if raw.get("url") else None,
        deploy=_deploy(_mapping(raw.get("deploy"), f"{where}: deploy"), where)
        if kind in SERVER_KINDS
        else None,
        backup=_backup(_mapping(raw.get("backup"), f"{where}: backup"), where),
        # Server environments name the services each step starts; every other command
        # (down, logs, ps) must see all of them, colours and one-offs included.
        profiles=("*",) if kind in SERVER_KINDS else (),
        replica=_replica(raw.get("replica"), kind, where),
        monitoring_retention=_retention(monitoring.get("retention", "15d"), where),
        monitoring_allow=_networks(monitoring.get("allow"), where, "monitoring.allow"),
        monitoring_port=_int(
            monitoring.get("port", 9090), f"{where}: monitoring.port", low=0, high=65535
        )
        if kind == "local"
        else None,
        log_port=_int(logs.get("port", 8514), f"{where}: logs.port", low=1, high=65535)
        if kind in SERVER_KINDS
        else None,
        log_retention_days=_int(
            logs.get("retention_days", 14), f"{where}: logs.retention_days", low=1, high=3650
        ),
        slow_query_ms=_int(
            logs.get("slow_query_ms", 250), f"{where}: logs.slow_query_ms", low=0, high=3600000
        ),
        database=_db_client(_mapping(raw.get("database"), f"{where}: database"), where),
        activity_retention_days=_int(
            activity.get("retention_days", 30),
            f"{where}: activity.retention_days",
            low=1,
            high=3650,
        ),
        activity_enabled=_activity_enabled(activity, where),
        secrets_recipients=_recipients(stored.get("recipients"), f"{where}: secrets.recipients"),
        firewall_admin_networks=_networks(
            firewall.get("admin_networks") or [], where, "firewall.admin_networks", empty=True
        ),
        admin_allow=_networks(admin.get("allow"), where, "admin.allow"),
        firewall_ssh_port=_int(
            firewall.get("ssh_port", 22), f"{where}: firewall.ssh_port", low=1, high=65535
        ),
        swarm=_backend(raw, kind, where),
    )


def _backend(raw: Mapping[str, Any], kind: str, where: str) -> SwarmPolicy | None:
    backend = raw.get("backend", "compose")
    if backend not in ("compose", "swarm"):
        raise ConfigError(f"{where}: backend must be compose or swarm, got {backend!r}")
    if backend == "compose":
        if raw.get("swarm") is not None:
            raise ConfigError(f"{where}: swarm: is for `backend: swarm`")
        return None
    if kind not in SERVER_KINDS:
        raise ConfigError(f"{where}: backend: swarm is for server environments")
    return _swarm(_mapping(raw.get("swarm"), f"{where}: swarm"), where)


def _activity_enabled(raw: Mapping[str, Any], where: str) -> bool:
    """`activity: {enabled: false}` turns the CMS's recording (and its cookie) off."""
    unknown = sorted(set(raw) - {"enabled", "retention_days"})
    if unknown:
        raise ConfigError(f"{where}: activity: unknown setting {unknown[0]!r} "
                          "(known: enabled, retention_days)")  # fmt: skip
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: activity.enabled must be true or false, got {enabled!r}")
    return enabled


def _networks(raw: Any, where: str, name: str, *, empty: bool = False) -> tuple[str, ...]:
    """An allow-list of networks (CIDRs or addresses); None: the private ones."""
    import ipaddress

    if raw is None:
        return PRIVATE_NETWORKS
    if not isinstance(raw, list) or not (raw or empty):
        raise ConfigError(f"{where}: {name} must be a list of networks like 10.0.0.0/8")
    try:
        return tuple(str(ipaddress.ip_network(str(n), strict=False)) for n in raw)
    except ValueError:
        raise ConfigError(
            f"{where}: {name} must be a list of networks like 10.0.0.0/8, got {raw!r}"
        ) from None


RETENTION = re.compile(r"^[1-9][0-9]{0,4}[hdwy]$")


def _retention(raw: Any, where: str) -> str:
    """Prometheus's retention time: a whole number of hours, days, weeks or years."""
    if not isinstance(raw, str) or not RETENTION.match(raw):
        raise ConfigError(
            f"{where}: monitoring.retention must look like 15d, 12h, 8w or 1y, got {raw!r}"
        )
    return raw


REPLICA_MODES = ("synchronous", "asynchronous")


def _replica(raw: Any, kind: str, where: str) -> str | None:
    if raw in (None, False, "none"):
        return None
    if kind not in SERVER_KINDS:
        raise ConfigError(f"{where}: a replica is for server environments, not {kind}")
    if raw not in REPLICA_MODES:
        raise ConfigError(
            f"{where}: replica must be synchronous, asynchronous or none, got {raw!r}"
        )
    return str(raw)


def parse_window(text: str, what: str) -> Window:
    """`Mon-Fri 09:00-16:00`: days (a range or one) and a local time span."""
    match = WINDOW.match(str(text).strip().lower())
    try:
        if not match:
            raise ValueError
        first, last = DAYS.index(match["first"]), DAYS.index(match["last"] or match["first"])
        start, end = time.fromisoformat(match["start"]), time.fromisoformat(match["end"])
    except ValueError:
        raise ConfigError(f"{what}: invalid window {text!r}: like 'Mon-Fri 09:00-16:00'") from None
    if end <= start:
        raise ConfigError(f"{what}: window {text!r} ends before it starts")
    days = range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]
    return Window(days=frozenset(days), start=start, end=end, text=str(text).strip())


def _deploy(raw: Mapping[str, Any], where: str) -> DeployPolicy:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    known = ("approvals", "windows", "timezone", "watch", "ready_timeout", "keep", "requires_e2e")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown deploy setting {unknown[0]!r} (known: {', '.join(known)})"
        )
    tz = str(raw.get("timezone", "UTC"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown deploy.timezone {tz!r}") from None
    windows = raw.get("windows") or []
    if not isinstance(windows, list | tuple):
        raise ConfigError(f"{where}: deploy.windows must be a list like ['Mon-Fri 09:00-16:00']")
    return DeployPolicy(
        approvals=_int(raw.get("approvals", 0), f"{where}: deploy.approvals", low=0, high=10),
        windows=tuple(parse_window(w, f"{where}: deploy.windows") for w in windows),
        timezone=tz,
        watch=_int(raw.get("watch", 30), f"{where}: deploy.watch", low=0, high=3600),
        ready_timeout=_int(
            raw.get("ready_timeout", 60), f"{where}: deploy.ready_timeout", low=5, high=3600
        ),
        keep=_int(raw.get("keep", 3), f"{where}: deploy.keep", low=2, high=100),
        requires_e2e=str(raw["requires_e2e"]) if raw.get("requires_e2e") else None,
    )


AGE_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")


def _recipients(raw: Any, where: str) -> tuple[str, ...]:
    recipients = raw or []
    if not isinstance(recipients, list | tuple) or not all(
        isinstance(r, str) and AGE_RECIPIENT.match(r) for r in recipients
    ):
        raise ConfigError(f"{where} must be a list of age public keys (age1...)")
    return tuple(recipients)


def _backup(raw: Mapping[str, Any], where: str) -> BackupPolicy:
    keep = _mapping(raw.get("keep"), f"{where}: backup.keep")
    known = {"recipients", "keep", "rto", "rpo", "schedule"}
    unknown = sorted(set(raw) - known) or sorted(set(keep) - {"last", "daily", "weekly", "monthly"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown backup setting {unknown[0]!r} (known: recipients, rto, rpo, "
            "schedule, keep.last, keep.daily, keep.weekly, keep.monthly)"
        )
    recipients = _recipients(raw.get("recipients"), f"{where}: backup.recipients")
    defaults = BackupPolicy()

    def count(name: str, low: int) -> int:
        return _int(
            keep.get(name, getattr(defaults, f"keep_{name}")),
            f"{where}: backup.keep.{name}",
            low=low,
            high=1000,
        )

    return BackupPolicy(
        recipients=recipients,
        keep_last=count("last", 1),
        keep_daily=count("daily", 0),
        keep_weekly=count("weekly", 0),
        keep_monthly=count("monthly", 0),
        schedule=_schedule(raw.get("schedule"), where) if "schedule" in raw else defaults.schedule,
        rto=_int(raw.get("rto", defaults.rto), f"{where}: backup.rto", low=1, high=86400),
        rpo=_int(raw.get("rpo", defaults.rpo), f"{where}: backup.rpo", low=0, high=86400),
    )


def _schedule(raw: Any, where: str) -> tuple[tuple[str, int], ...]:
    """`{full: 24h, incr: 1h}`: how often each type of physical backup runs."""
    table = _mapping(raw, f"{where}: backup.schedule")
    if unknown := sorted(set(table) - {"full", "diff", "incr"}):
        raise ConfigError(
            f"{where}: backup.schedule: unknown type {unknown[0]!r} (full, diff, incr)"
        )
    found = []
    for kind in ("full", "diff", "incr"):
        if kind in table:
            every = parse_ttl(str(table[kind]))
            if every.total_seconds() < 60:
                raise ConfigError(f"{where}: backup.schedule.{kind} must be at least 1m")
            found.append((kind, int(every.total_seconds())))
    return tuple(found)


def _with_overrides(
    env: Environment, overrides: Mapping[str, str], state: Path, root: Path
) -> Environment:
    if not overrides:
        return env
    project = overrides.get("LOREPIN_PROJECT", env.project)
    if not PROJECT_NAME.match(project):
        raise ConfigError(f"LOREPIN_PROJECT: invalid Compose project name {project!r}")
    tag = overrides.get("LOREPIN_IMAGE_TAG", env.image_tag)
    if not IMAGE_TAG.match(tag):
        raise ConfigError(f"LOREPIN_IMAGE_TAG: invalid image tag {tag!r}")
    db_port = overrides.get("LOREPIN_DB_PORT", env.db_port)
    # Derived (not configured) state follows the project when it is overridden.
    old_state, new_state = env.state_dir, state / project

    def follow(path: Path, variable: str) -> Path:
        if variable in overrides:
            return private_dir(overrides[variable], variable, root)
        return new_state / path.relative_to(old_state) if path.is_relative_to(old_state) else path

    return replace(
        env,
        project=project,
        image_tag=tag,
        http_port=_int(
            overrides.get("LOREPIN_HTTP_PORT", env.http_port),
            "LOREPIN_HTTP_PORT",
            low=0,
            high=65535,
        ),
        db_port=None if db_port is None else _int(db_port, "LOREPIN_DB_PORT", low=0, high=65535),
        https_port=None
        if env.https_port is None
        else _int(
            overrides.get("LOREPIN_HTTPS_PORT", env.https_port),
            "LOREPIN_HTTPS_PORT",
            low=0,
            high=65535,
        ),
        monitoring_port=None
        if env.monitoring_port is None
        else _int(
            overrides.get("LOREPIN_MONITORING_PORT", env.monitoring_port),
            "LOREPIN_MONITORING_PORT",
            low=0,
            high=65535,
        ),
        log_port=None
        if env.log_port is None
        else _int(
            overrides.get("LOREPIN_LOG_PORT", env.log_port), "LOREPIN_LOG_PORT", low=1, high=65535
        ),
        state_dir=new_state,
        secrets_dir=follow(env.secrets_dir, "LOREPIN_SECRETS_DIR"),
        backups_dir=follow(env.backups_dir, "LOREPIN_BACKUP_DIR"),
    )


def check_project_file(path: Path) -> None:
    """invoke.yaml must be YAML with a mapping at the top: Invoke would print a traceback."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) if path.exists() else {}
    except (yaml.YAMLError, ValueError, OSError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{path.name} is not valid YAML{line}: fix or restore it") from None
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{path.name} must hold a mapping (lorepin: ...): fix or restore it")


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _recorded_base_image(root: Path) -> str | None:
    try:
        text = (root / BASE_IMAGE_RECORD).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "BASE_IMAGE" and value.strip():
            return value.strip()
    return None


def _ca_bundle(environ: Mapping[str, str]) -> Path | None:
    for candidate in (
        environ.get("LOREPIN_CA_BUNDLE"),
        environ.get("PIP_CERT"),
        environ.get("SSL_CERT_FILE"),
        *DEFAULT_CA_BUNDLES,
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _release(raw: Mapping[str, Any]) -> ReleasePolicy:
    initial = str(raw["initial_version"])
    if not SEMVER.match(initial) or "+" in initial:
        raise ConfigError(f"release.initial_version {initial!r} is not a SemVer like 0.1.0")
    return ReleasePolicy(
        branch=str(raw["branch"]),
        major_on_zero=bool(raw["major_on_zero"]),
        initial_version=initial,
        version_files=_strings(raw["version_files"], "release.version_files"),
        two_person_rule=bool(raw["two_person_rule"]),
    )


def _feature(raw: Mapping[str, Any]) -> FeaturePolicy:
    files = _strings(raw["compose_files"], "feature.compose_files")
    if not files:
        raise ConfigError("feature.compose_files must be a non-empty list of paths")
    return FeaturePolicy(
        compose_files=files,
        ttl=parse_ttl(str(raw["ttl"])),
        seed_count=_int(raw["seed_count"], "feature.seed_count", low=0, high=1_000_000),
    )


def load(
    project_config: Any = None,
    *,
    root: Path = ROOT,
    environ: Mapping[str, str] = os.environ,
    host: str | None = None,
) -> Settings:
    """Resolve defaults, invoke.yaml's `lorepin:` tree and environment variables."""
    raw = _merge(DEFAULTS, _mapping(project_config, "lorepin"))
    for section in ("environments", "feature", "release", "db", "perf"):
        raw[section] = _mapping(raw[section], f"lorepin.{section}")
    state = state_home(environ)
    envs = {
        str(name): _environment(str(name), _mapping(spec, f"environment '{name}'"), root, state)
        for name, spec in raw["environments"].items()
    }
    for name, env in envs.items():
        needs = env.deploy.requires_e2e if env.deploy else None
        if needs and (needs == name or needs not in envs or envs[needs].deploy is None):
            raise ConfigError(
                f"environment '{name}': deploy.requires_e2e must name another server "
                f"environment, got {needs!r}"
            )
    prefix = environ.get("LOREPIN_IMAGE_PREFIX") or str(raw["image_prefix"])
    if not REPOSITORY.match(prefix):
        raise ConfigError(
            f"image prefix {prefix!r} is not a repository path (lowercase, e.g. lorepin)"
        )
    lock_wait = raw["db"].get("lock_wait", 60)
    checkout = Checkout.of(root, host or socket.gethostname())
    return Settings(
        root=root,
        checkout=checkout,
        state_home=state,
        cache_dir=cache_home(environ) / checkout.id,
        base_image=environ.get("BASE_IMAGE") or raw.get("base_image") or _recorded_base_image(root),
        ca_bundle=_ca_bundle(environ),
        image_prefix=prefix,
        wait_timeout=_int(raw["wait_timeout"], "wait_timeout", low=10, high=3600),
        environments=envs,
        overrides={k: environ[k] for k in OVERRIDES if environ.get(k)},
        release=_release(raw["release"]),
        feature=_feature(raw["feature"]),
        lock_wait=float(_int(lock_wait, "db.lock_wait", low=0, high=3600)),
        perf=_perf(raw["perf"]),
        webhook_url=environ.get("LOREPIN_RELEASE_WEBHOOK_URL") or None,
        age_identity=user_path(environ["LOREPIN_AGE_IDENTITY"], "LOREPIN_AGE_IDENTITY")
        if environ.get("LOREPIN_AGE_IDENTITY")
        else config_home(environ) / "age.key",
        backup_webhook_url=environ.get("LOREPIN_BACKUP_WEBHOOK_URL")
        or environ.get("LOREPIN_RELEASE_WEBHOOK_URL")
        or None,
        alert_webhook_url=environ.get("LOREPIN_ALERT_WEBHOOK_URL")
        or environ.get("LOREPIN_BACKUP_WEBHOOK_URL")
        or environ.get("LOREPIN_RELEASE_WEBHOOK_URL")
        or None,
    )
