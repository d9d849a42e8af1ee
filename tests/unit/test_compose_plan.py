from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lorepin_tasks import settings as settings_mod
from lorepin_tasks.domain.revision import Revision
from lorepin_tasks.plans import compose

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = settings_mod.load(
    {"base_image": "base:1"}, root=ROOT, environ={"XDG_STATE_HOME": "/state"}, host="box"
)
LOCAL = SETTINGS.environment("local")
FILES = (
    f"--file {ROOT}/compose/compose.yaml --file {ROOT}/compose/mocks.yaml "
    f"--file {ROOT}/compose/local.yaml"
)
PREFIX = f"docker compose --project-name lorepin-local {FILES}"


def line(argv: list[str]) -> str:
    return " ".join(argv)


def test_build_all_or_some_services() -> None:
    assert line(compose.build(LOCAL)) == f"{PREFIX} build"
    assert line(compose.build(LOCAL, ["db"])) == f"{PREFIX} build db"


def test_up_waits_and_never_builds_or_pulls() -> None:
    assert line(compose.up(LOCAL, wait_timeout=90)) == (
        f"{PREFIX} up --detach --wait --wait-timeout 90 --no-build --pull never --remove-orphans"
    )


def test_local_monitoring_is_known_to_up_but_started_only_by_monitor_up() -> None:
    monitoring = (
        f"--file {ROOT}/compose/monitoring.yaml --file {ROOT}/compose/monitoring-local.yaml"
    )
    known = compose.with_monitoring(LOCAL, ROOT, started=False)
    # Up knows its services (no orphans to remove) and starts none of them (no profile).
    assert line(compose.up(known, wait_timeout=90)).startswith(
        f"docker compose --project-name lorepin-local {FILES} {monitoring} up "
    )
    started = compose.with_monitoring(known, ROOT)  # files not named twice
    assert line(compose.down(started, volumes=False)) == (
        f"docker compose --project-name lorepin-local --profile * {FILES} {monitoring} "
        "down --remove-orphans"
    )


def test_down_keeps_volumes_unless_asked() -> None:
    assert line(compose.down(LOCAL, volumes=False)) == f"{PREFIX} down --remove-orphans"
    assert line(compose.down(LOCAL, volumes=True)) == f"{PREFIX} down --remove-orphans --volumes"


def test_read_only_commands() -> None:
    assert line(compose.ps(LOCAL)) == f"{PREFIX} ps --all --format json"
    assert line(compose.port(LOCAL, "cms", 8000)) == f"{PREFIX} port cms 8000"
    assert line(compose.logs(LOCAL, ["cms"], follow=True, tail="50")) == (
        f"{PREFIX} logs --tail 50 --follow cms"
    )
    assert line(compose.volumes(LOCAL)) == (
        "docker volume ls --filter label=com.docker.compose.project=lorepin-local "
        "--format {{json .}}"
    )
    # Only containers Compose made: a test's PostgreSQL run from a Compose-built image
    # inherits the image's project label, never the config-hash.
    assert line(compose.project_containers(LOCAL)) == (
        "docker ps --all --quiet --no-trunc --filter label=com.docker.compose.project="
        "lorepin-local --filter label=com.docker.compose.config-hash"
    )


def test_one_offs_are_labelled_so_a_killed_runs_leftovers_can_be_found() -> None:
    assert line(compose.run(LOCAL, "migrate", ["python", "-V"], name="x-1", kind="migrator")) == (
        f"{PREFIX} run --name x-1 --label dev.lorepin.oneoff=migrator --no-deps --pull never "
        "-T migrate "
        "python -V"
    )
    assert line(compose.oneoff_leftovers(LOCAL, "migrator")) == (
        "docker ps --all --quiet --filter label=com.docker.compose.project=lorepin-local "
        "--filter label=com.docker.compose.config-hash --filter label=dev.lorepin.oneoff=migrator "
        "--filter status=exited --filter status=created --filter status=dead"
    )


def test_docker_context_targets_another_engine() -> None:
    remote = replace(LOCAL, docker_context="staging-host", project="lorepin-staging")
    assert compose.build(remote)[:6] == [
        "docker",
        "--context",
        "staging-host",
        "compose",
        "--project-name",
        "lorepin-staging",
    ]


def test_variables_carry_settings_revision_and_engine() -> None:
    revision = Revision(version="1.2.3", sha="abc123", created="2026-11-25T10:00:00+00:00")
    env = replace(LOCAL, docker_host="ssh://deploy@example.invalid")
    values = compose.variables(SETTINGS, env, revision)
    assert values["BASE_IMAGE"] == "base:1"
    assert values["LOREPIN_ENV"] == "local"
    assert values["LOREPIN_IMAGE_TAG"] == "dev"
    assert values["LOREPIN_HTTP_PORT"] == "8080"
    assert values["LOREPIN_DB_PORT"] == "15432"
    assert values["LOREPIN_VERSION"] == "1.2.3"
    assert values["LOREPIN_GIT_REVISION"] == "abc123"
    assert values["LOREPIN_CREATED"] == "2026-11-25T10:00:00+00:00"
    assert values["LOREPIN_SECRETS_DIR"] == "/state/lorepin/lorepin-local/secrets"
    assert values["DOCKER_HOST"] == "ssh://deploy@example.invalid"
    assert values["LOREPIN_CHECKOUT"] == SETTINGS.checkout.id
    assert values["LOREPIN_CHECKOUT_PATH"] == f"box:{ROOT}"
    assert "LOREPIN_DB_PASSWORD" not in values


def test_reads_need_no_revision_and_builds_carry_their_inputs() -> None:
    values = compose.variables(SETTINGS, LOCAL, None, {"cms": "abc", "geocoder": "def"})
    assert "LOREPIN_VERSION" not in values
    assert values["LOREPIN_BUILD_INPUTS_CMS"] == "abc"
    assert values["LOREPIN_BUILD_INPUTS_GEOCODER"] == "def"


def test_a_server_environment_publishes_the_proxy_on_its_own_https_port() -> None:
    production = replace(LOCAL, name="production", kind="production", https_port=0)
    assert compose.variables(SETTINGS, production, None)["LOREPIN_HTTPS_PORT"] == "0"
    assert "LOREPIN_HTTPS_PORT" not in compose.variables(SETTINGS, LOCAL, None)
