"""Docker Compose and Docker commands for an environment, as argv lists. Pure: no I/O.

The interpolation variables the Compose files read are built here too (`variables`),
so a test can assert the whole command and everything it depends on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from lorepin_tasks.domain.revision import Revision
from lorepin_tasks.settings import Environment, Settings

HTTP_SERVICE, HTTP_PORT = "cms", 8000
DB_SERVICE, DB_PORT = "db", 5432
MONITORING_FILE = "compose/monitoring.yaml"  # an environment's monitoring (monitor.up)
MONITORING_LOCAL_FILE = "compose/monitoring-local.yaml"  # local's, over it (no proxy)
REPLICA_SERVICE = "db-replica"  # server environments with a replica (db.failover)
PGDATA = "/var/lib/postgresql/data"  # the data directory in the project's PostgreSQL image
LABEL = "dev.lorepin"
PROJECT_LABEL = "com.docker.compose.project"
# Only containers Compose created carry it: images built by Compose carry the project
# label too, and a container run from such an image (a test's PostgreSQL) inherits it.
COMPOSE_CONTAINER_LABEL = "com.docker.compose.config-hash"
ONEOFF_LABEL = f"{LABEL}.oneoff"  # one-off containers (`compose run`) of the toolkit
BUILD_INPUTS_LABEL = f"{LABEL}.build-inputs"


def docker(env: Environment) -> list[str]:
    """`docker`, pointed at the environment's engine when it names a context."""
    return ["docker", "--context", env.docker_context] if env.docker_context else ["docker"]


def with_monitoring(env: Environment, root: Path, *, started: bool = True) -> Environment:
    """The environment with its monitoring's Compose files: what `monitor.*` run, and what
    `down` must know to remove the monitoring's containers and volumes too. Not `started`:
    its services stay out of the command (their profile is off), yet Compose knows them,
    so `up --remove-orphans` leaves a running monitoring alone."""
    wanted = [MONITORING_FILE] + ([MONITORING_LOCAL_FILE] if env.kind == "local" else [])
    paths = [root / f for f in wanted if root / f not in env.compose_files]
    files = (*env.compose_files, *paths)
    return replace(env, compose_files=files, profiles=("*",) if started else env.profiles)


def compose(env: Environment) -> list[str]:
    argv = [*docker(env), "compose", "--project-name", env.project]
    for profile in env.profiles:
        argv += ["--profile", profile]
    for path in env.compose_files:
        argv += ["--file", str(path)]
    return argv


def build_inputs_variable(service: str) -> str:
    """The variable that carries a service's build-inputs hash into its image label."""
    return f"LOREPIN_BUILD_INPUTS_{service.upper().replace('-', '_')}"


def variables(
    settings: Settings,
    env: Environment,
    revision: Revision | None = None,
    build_inputs: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What the Compose files interpolate, plus the engine the environment targets.

    The revision is needed by builds only (image metadata); other commands leave it out
    and the files fall back to their defaults.
    """
    values = {
        "COMPOSE_BAKE": "false",
        "LOREPIN_ENV": env.name,
        "LOREPIN_ENV_KIND": env.kind,
        "LOREPIN_CHECKOUT": settings.checkout.id,
        "LOREPIN_CHECKOUT_PATH": settings.checkout.where,
        "LOREPIN_IMAGE_PREFIX": settings.image_prefix,
        "LOREPIN_IMAGE_TAG": env.image_tag,
        "LOREPIN_HTTP_PORT": str(env.http_port),
        "LOREPIN_SECRETS_DIR": str(env.secrets_dir),
        **env.database.variables(),
        "LOREPIN_ACTIVITY_RETENTION_DAYS": str(env.activity_retention_days),
        "LOREPIN_ACTIVITY": "on" if env.activity_enabled else "off",
    }
    if revision is not None:
        values["LOREPIN_VERSION"] = revision.version
        values["LOREPIN_GIT_REVISION"] = revision.sha
        values["LOREPIN_CREATED"] = revision.created
    for service, digest in (build_inputs or {}).items():
        values[build_inputs_variable(service)] = digest
    if settings.base_image:
        values["BASE_IMAGE"] = settings.base_image
    if settings.ca_bundle:
        values["LOREPIN_CA_BUNDLE"] = str(settings.ca_bundle)
    if env.https_port is not None:  # server kinds: the proxy's public port
        values["LOREPIN_HTTPS_PORT"] = str(env.https_port)
    if env.is_server:  # the second site's backup schedule, in seconds per type
        values["LOREPIN_MONITORING_RETENTION"] = env.monitoring_retention
        values["LOREPIN_LOG_RETENTION_DAYS"] = str(env.log_retention_days)
        values["LOREPIN_DB_SLOW_MS"] = str(env.slow_query_ms)
        values["LOREPIN_BACKUP_SCHEDULE"] = " ".join(
            f"{kind}={seconds}" for kind, seconds in env.backup.schedule
        )
    if env.log_port is not None:  # server kinds: the log collector (docs/logging.md)
        values["LOREPIN_LOG_PORT"] = str(env.log_port)
    if env.monitoring_port is not None:  # local: Prometheus on the loopback (monitor.up)
        values["LOREPIN_MONITORING_PORT"] = str(env.monitoring_port)
    if env.replica:  # the CMS asks both for the one that takes writes (libpq's failover)
        values["LOREPIN_DB_HOSTS"] = f"{DB_SERVICE},{REPLICA_SERVICE}"
        if env.replica == "synchronous":
            values["LOREPIN_DB_SYNC_STANDBY"] = "replica"  # its application_name
    if env.db_port is not None:
        values["LOREPIN_DB_PORT"] = str(env.db_port)
    if env.docker_host:
        values["DOCKER_HOST"] = env.docker_host
    # Builds skip buildx's git provenance walk (~0.7 s of git calls per build): the
    # images carry their revision in the OCI labels already.
    values["BUILDX_GIT_INFO"] = "false"
    return values


def engine_version(env: Environment) -> list[str]:
    """The engine's version: answers only when the engine does."""
    return [*docker(env), "version", "--format", "{{.Server.Version}}"]


def config(env: Environment) -> list[str]:
    """The resolved model (services, images, build contexts and args) as JSON."""
    return [*compose(env), "config", "--format", "json"]


def build(env: Environment, services: Sequence[str] = (), *, no_cache: bool = False) -> list[str]:
    return [*compose(env), "build", *(["--no-cache"] if no_cache else []), *services]


def up(
    env: Environment, *, wait_timeout: int, services: Sequence[str] = (), recreate: bool = False
) -> list[str]:
    """The whole stack (orphans removed), or some services: created once, never recreated
    (unless `recreate`: then those whose configuration or image changed are)."""
    # Images are built by `build` first; `up` never builds or pulls, so it never reaches
    # for a registry and always runs exactly what was just built.
    return [
        *compose(env),
        "up",
        "--detach",
        "--wait",
        "--wait-timeout",
        str(wait_timeout),
        "--no-build",
        "--pull",
        "never",
        *(
            [*([] if recreate else ["--no-recreate"]), *services]
            if services
            else ["--remove-orphans"]
        ),
    ]


def down(env: Environment, *, volumes: bool) -> list[str]:
    return [*compose(env), "down", "--remove-orphans", *(["--volumes"] if volumes else [])]


def ps(env: Environment) -> list[str]:
    return [*compose(env), "ps", "--all", "--format", "json"]


def port(env: Environment, service: str, container_port: int) -> list[str]:
    return [*compose(env), "port", service, str(container_port)]


def logs(env: Environment, services: Sequence[str], *, follow: bool, tail: str) -> list[str]:
    return [
        *compose(env),
        "logs",
        "--tail",
        tail,
        *(["--follow"] if follow else []),
        *services,
    ]


def _project_filter(env: Environment) -> list[str]:
    return [
        "--filter",
        f"label={PROJECT_LABEL}={env.project}",
        "--filter",
        f"label={COMPOSE_CONTAINER_LABEL}",
    ]


def project_containers(env: Environment) -> list[str]:
    """The IDs of every container Compose made for the project (one-offs included)."""
    return [*docker(env), "ps", "--all", "--quiet", "--no-trunc", *_project_filter(env)]


def project_owners(env: Environment) -> list[str]:
    """Which checkout made each of the project's containers, where, and for which
    environment (one tab-separated line per container)."""
    return [
        *docker(env),
        "ps",
        "--all",
        *_project_filter(env),
        "--format",
        f'{{{{.Label "{LABEL}.checkout"}}}}\t{{{{.Label "{LABEL}.checkout-path"}}}}'
        f'\t{{{{.Label "{LABEL}.env"}}}}',
    ]


def volumes(env: Environment) -> list[str]:
    """The environment's volumes (name and labels), found by Compose's project label."""
    return [
        *docker(env),
        "volume",
        "ls",
        "--filter",
        f"label={PROJECT_LABEL}={env.project}",
        "--format",
        "{{json .}}",
    ]


def run(
    env: Environment, service: str, command: Sequence[str], *, name: str, kind: str
) -> list[str]:
    """A one-off container of `service` on the environment's network (not its deps).

    Not `--rm`: Compose (2.40 against engine 20.10) exits 0 whatever the container's exit
    code, so the code is read back with `exit_code(name)`, then the container removed.
    The label lets the next run of the same kind remove what a killed run left behind.
    """
    return [
        *compose(env),
        "run",
        "--name",
        name,
        "--label",
        f"{ONEOFF_LABEL}={kind}",
        "--no-deps",
        "--pull",
        "never",  # only what was built or released here: never a registry's namesake
        "-T",
        service,
        *command,
    ]


def oneoff_running(env: Environment, kind: str) -> list[str]:
    """Running one-off containers of a kind (another run's, or a killed run's still going)."""
    return [
        *docker(env),
        "ps",
        "--quiet",
        *_project_filter(env),
        "--filter",
        f"label={ONEOFF_LABEL}={kind}",
    ]


def oneoff_leftovers(env: Environment, kind: str) -> list[str]:
    """Finished one-off containers of a kind (a killed run's); running ones are others'."""
    return [
        *docker(env),
        "ps",
        "--all",
        "--quiet",
        *_project_filter(env),
        "--filter",
        f"label={ONEOFF_LABEL}={kind}",
        "--filter",
        "status=exited",
        "--filter",
        "status=created",
        "--filter",
        "status=dead",
    ]


def inspect(env: Environment, *refs: str) -> list[str]:
    return [*docker(env), "inspect", *refs]


def image_inspect(env: Environment, *refs: str) -> list[str]:
    return [*docker(env), "image", "inspect", *refs]


def exit_code(env: Environment, container: str) -> list[str]:
    return [*docker(env), "inspect", "--format", "{{.State.ExitCode}}", container]


def remove(env: Environment, *containers: str) -> list[str]:
    return [*docker(env), "rm", "--force", *containers]


def exec_(env: Environment, service: str, command: Sequence[str]) -> list[str]:
    return [*compose(env), "exec", "-T", service, *command]
