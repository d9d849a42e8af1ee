"""Docker Compose commands for an environment, as argv lists. Pure: no I/O.

The interpolation variables the Compose files read are built here too (`variables`),
so a test can assert the whole command and everything it depends on.
"""

from __future__ import annotations

from collections.abc import Sequence

from lorepin_tasks.runtime.git import Revision
from lorepin_tasks.settings import Environment, Settings

HTTP_SERVICE, HTTP_PORT = "cms", 8000
DB_SERVICE, DB_PORT = "db", 5432


def docker(env: Environment) -> list[str]:
    """`docker`, pointed at the environment's engine when it names a context."""
    return ["docker", "--context", env.docker_context] if env.docker_context else ["docker"]


def compose(env: Environment) -> list[str]:
    argv = [*docker(env), "compose", "--project-name", env.project]
    for path in env.compose_files:
        argv += ["--file", str(path)]
    return argv


def variables(settings: Settings, env: Environment, revision: Revision) -> dict[str, str]:
    """What the Compose files interpolate, plus the engine the environment targets."""
    values = {
        "COMPOSE_BAKE": "false",
        "LOREPIN_ENV": env.name,
        "LOREPIN_ENV_KIND": env.kind,
        "LOREPIN_IMAGE_PREFIX": settings.image_prefix,
        "LOREPIN_IMAGE_TAG": env.image_tag,
        "LOREPIN_HTTP_PORT": str(env.http_port),
        "LOREPIN_SECRETS_DIR": str(env.secrets_dir),
        "LOREPIN_VERSION": revision.version,
        "LOREPIN_GIT_REVISION": revision.sha,
        "LOREPIN_CREATED": revision.created,
    }
    if settings.base_image:
        values["BASE_IMAGE"] = settings.base_image
    if settings.ca_bundle:
        values["LOREPIN_CA_BUNDLE"] = str(settings.ca_bundle)
    if env.db_port is not None:
        values["LOREPIN_DB_PORT"] = str(env.db_port)
    if env.docker_host:
        values["DOCKER_HOST"] = env.docker_host
    return values


def build(env: Environment, services: Sequence[str] = (), *, no_cache: bool = False) -> list[str]:
    return [*compose(env), "build", *(["--no-cache"] if no_cache else []), *services]


def up(env: Environment, *, wait_timeout: int) -> list[str]:
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
        "--remove-orphans",
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


def volumes(env: Environment) -> list[str]:
    """The environment's volumes, found by Compose's own project label."""
    return [
        *docker(env),
        "volume",
        "ls",
        "--quiet",
        "--filter",
        f"label=com.docker.compose.project={env.project}",
    ]


def run(env: Environment, service: str, command: Sequence[str], *, name: str) -> list[str]:
    """A one-off container of `service` on the environment's network (not its deps).

    Not `--rm`: Compose (2.40 against engine 20.10) exits 0 whatever the container's exit
    code, so the code is read back with `exit_code(name)`, then the container removed.
    """
    return [*compose(env), "run", "--name", name, "--no-deps", "-T", service, *command]


def exit_code(env: Environment, container: str) -> list[str]:
    return [*docker(env), "inspect", "--format", "{{.State.ExitCode}}", container]


def remove(env: Environment, container: str) -> list[str]:
    return [*docker(env), "rm", "--force", container]


def exec_(env: Environment, service: str, command: Sequence[str]) -> list[str]:
    return [*compose(env), "exec", "-T", service, *command]
