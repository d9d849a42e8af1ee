"""Shared fixtures. Docker-backed tests are marked `docker`; without an engine they skip,
except under CI (CI=true), where a missing engine fails them: CI must test for real."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from lorepin_tasks import settings as settings_mod
from lorepin_tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
# testcontainers reads these when first imported (inside fixtures): no Ryuk (no registry
# to pull it from; fixtures clean up themselves) and every connection over loopback.
TESTCONTAINERS_ENV = {
    "TESTCONTAINERS_RYUK_DISABLED": "true",
    "TESTCONTAINERS_CONNECTION_MODE": "docker_host",
    "TC_HOST": "127.0.0.1",
}
# A PostgreSQL started from a Compose-built image inherits the image's Compose project
# label; these make it nobody's Compose container (Compose would count it as its own).
NOT_COMPOSE = {"com.docker.compose.project": "", "com.docker.compose.service": ""}


@pytest.fixture(scope="session", autouse=True)
def test_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite's process environment, restored afterwards: testcontainers' settings, and
    private XDG state and cache homes, so no test writes secrets, dumps, locks or caches
    into the user's (or the checkout)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in TESTCONTAINERS_ENV.items():
            patch.setenv(key, os.environ.get(key, value))
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


def migration_heads() -> tuple[str, str]:
    """The head revision of migrations/ and the one below it."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(ROOT / "migrations"))
    head = script.get_revision("head")
    assert head is not None and isinstance(head.down_revision, str)
    return head.revision, head.down_revision


HEAD, BEFORE_HEAD = migration_heads()
REVISION_COUNT = int(HEAD)  # revisions are numbered 0001, 0002, ... in order


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def engine_problem() -> str | None:
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker CLI unusable: {exc}"
    return None if proc.returncode == 0 else (proc.stderr.strip() or "docker info failed")


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = engine_problem()
    if problem is None:
        return
    message = f"no Docker engine answers ({problem}); run scripts/bootstrap.sh"
    if in_ci():
        pytest.fail(f"CI requires the Docker-backed tests to run: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def netns_tools() -> None:
    """Root, `ip` and `nft`: what a test needs to make network namespaces and firewall them."""
    import shutil

    missing = [t for t in ("ip", "nft") if shutil.which(t) is None]
    problem = ("not root" if os.geteuid() != 0 else "") or (
        f"no {', '.join(missing)} (scripts/bootstrap.sh installs nftables)" if missing else ""
    )
    if not problem:
        return
    if in_ci():
        pytest.fail(f"CI requires the network-namespace tests to run: {problem}", pytrace=False)
    pytest.skip(problem)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("docker"):
            item.fixturenames.insert(0, "docker_engine")  # type: ignore[attr-defined]
        if item.get_closest_marker("netns"):
            item.fixturenames.insert(0, "netns_tools")  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def project_settings() -> Settings:
    config = yaml.safe_load((ROOT / "invoke.yaml").read_text())["lorepin"]
    return settings_mod.load(config, root=ROOT)


def invoke(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the real `invoke` CLI from the repository root, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"invoke {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def published_port(container: str, port: int) -> int:
    """The host port Docker published a container's port on (on 127.0.0.1)."""
    answer = subprocess.run(
        ["docker", "port", container, str(port)], capture_output=True, text=True, check=True
    )
    return int(answer.stdout.split()[0].rpartition(":")[2])


def request(
    method: str, url: str, body: object = None, token: str | None = None
) -> tuple[int, object]:
    """A JSON request to a test's own container over 127.0.0.1: (status, body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
        url,
        data=data,
        method=method,
        headers={"content-type": "application/json", **(bearer(token) if token else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_token(
    run: Callable[..., subprocess.CompletedProcess[str]], env: str, role: str = "editor"
) -> str:
    """A new user of `role` in the environment and a token of theirs, made as an operator
    does (`invoke cms.user.add`, `cms.token.create`); `run` runs invoke in the checkout."""
    name = f"e2e-{role}-{uuid.uuid4().hex[:8]}"
    added = run("cms.user.add", "--env", env, "--name", name, "--role", role)
    assert added.returncode == 0, added.stderr[-2000:]
    made = run("cms.token.create", "--env", env, "--user", name)
    assert made.returncode == 0, made.stderr[-2000:]
    return made.stdout.strip()


def grant(url: str, role: str = "editor") -> str:
    """A new user of `role` in the (migrated) CMS database at `url`, and a token of theirs
    valid for a day: the token, as `invoke cms.token.create` gives it."""
    from sqlalchemy import create_engine

    from lorepin_cms import access

    name = f"test-{role}-{uuid.uuid4().hex[:8]}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return access.user_with_token(conn, name, role, 1)
    finally:
        engine.dispose()


def invoke_in_background(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`invoke ...` started in a session of its own (kill it with os.killpg), quietly."""
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@contextmanager
def local_stack(prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A local-kind stack of its own (unique project, Docker-chosen ports, private
    secrets and backups), up for the block; everything of the project removed after it,
    throwaway containers and networks named after it included, even when a test failed."""
    project = unique_project(prefix)
    env = {
        "LOREPIN_PROJECT": project,
        "LOREPIN_HTTP_PORT": "0",
        "LOREPIN_DB_PORT": "0",
        "LOREPIN_IMAGE_TAG": "e2e",
        "LOREPIN_SECRETS_DIR": str(tmp_path_factory.mktemp("secrets")),
        "LOREPIN_BACKUP_DIR": str(tmp_path_factory.mktemp("backups")),
    }

    def names(*argv: str) -> list[str]:
        found = subprocess.run(argv, capture_output=True, text=True, check=False)
        return found.stdout.split()

    try:
        up = invoke("up", env=env, timeout=900)
        assert up.returncode == 0, up.stderr[-3000:]
        yield env
    finally:
        invoke("down", "--volumes", "--yes", env=env, timeout=300)
        if left := names("docker", "ps", "-aq", "--filter", f"name={project}"):
            subprocess.run(["docker", "rm", "-f", "-v", *left], capture_output=True, check=False)
        if nets := names("docker", "network", "ls", "-q", "--filter", f"name={project}"):
            subprocess.run(["docker", "network", "rm", *nets], capture_output=True, check=False)
        subprocess.run(
            ["docker", "volume", "rm", f"{project}_db-data"], capture_output=True, check=False
        )


def unique_project(prefix: str = "lorepin-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


HINT = re.compile(r"`(invoke [^`]+)`")


def run_hints(
    output: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    destructive: tuple[str, ...] = ("down", "feature.down", "db.downgrade"),
) -> list[str]:
    """Run every `invoke ...` hint an error printed, as the user would; each must work.

    Hints that delete something run with --dry-run (they must still parse and plan).
    """
    hints = HINT.findall(output)
    for hint in hints:
        argv = shlex.split(hint)[1:]
        if argv[0] in destructive:
            argv.append("--dry-run")
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", *argv],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, f"the hint `{hint}` failed:\n{proc.stdout}\n{proc.stderr}"
    return hints


def free_port() -> int:
    """A loopback port nothing listens on now (for a port that must be known up front)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def random_password() -> str:
    return secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def postgres_image(docker_engine: None, project_settings: Settings) -> str:
    """The project's PostgreSQL image, built the way `invoke build` builds it."""
    # Under a project of its own: building touches no environment, and the developer's
    # `lorepin-local` may belong to another checkout (which `build` would rightly refuse).
    only_build = {"LOREPIN_IMAGE_TAG": "test", "LOREPIN_PROJECT": "lorepin-test-build"}
    proc = invoke("build", "--service", "db", env=only_build, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"building the postgres image failed:\n{proc.stderr[-3000:]}", pytrace=False)
    return f"{project_settings.image_prefix}/postgres:test"


@pytest.fixture(scope="session")
def postgres_server(postgres_image: str) -> Iterator[str]:
    """One throwaway PostgreSQL for the session; tests get their own databases on it."""
    from testcontainers.community.postgres import PostgresContainer

    server = PostgresContainer(
        postgres_image, username="lorepin", password="test-only", dbname="lorepin", driver="psycopg"
    )
    # No image healthcheck: testcontainers waits for the server itself, and a probe every
    # 2 s for the whole session is CPU the other tests need.
    server = server.with_kwargs(labels=NOT_COMPOSE, healthcheck={"test": ["NONE"]})
    with server as pg:
        yield pg.get_connection_url()


@pytest.fixture
def database_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
