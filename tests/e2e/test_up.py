"""`invoke up` end to end: one real stack under a unique project name, used over HTTP on
127.0.0.1 by the independent checks, then taken through its life (data kept, secret lost,
secret wrong, down --volumes); nothing of the project may remain."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import (
    HEAD,
    ROOT,
    invoke,
    invoke_in_background,
    new_token,
    published_port,
    request,
    run_hints,
    unique_project,
)
from tests.release_helpers import clone_project, invoke_in

pytestmark = pytest.mark.docker


def leftovers(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    found = {}
    for kind, argv in {
        "containers": ["docker", "ps", "-aq", "--filter", label],
        "networks": ["docker", "network", "ls", "-q", "--filter", label],
        "volumes": ["docker", "volume", "ls", "-q", "--filter", label],
    }.items():
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
        found[kind] = out
    return found


def remove_project(project: str) -> None:
    """Belt and braces when the task itself is what broke: whatever carries the project's
    label goes (its monitoring's too)."""
    found = leftovers(project)
    for argv, ids in (
        (["docker", "rm", "-f", "-v"], found["containers"]),
        (["docker", "network", "rm"], found["networks"]),
        (["docker", "volume", "rm", "-f"], found["volumes"]),
    ):
        if ids:
            subprocess.run([*argv, *ids], capture_output=True, check=False)


def stack_env(tmp: Path, prefix: str) -> dict[str, str]:
    return {
        "LOREPIN_PROJECT": unique_project(prefix),
        "LOREPIN_HTTP_PORT": "0",  # Docker picks free ports: runs beside `local` safely
        "LOREPIN_DB_PORT": "0",
        "LOREPIN_IMAGE_TAG": "e2e",  # never retags the developer's own `dev` images
        "LOREPIN_SECRETS_DIR": str(tmp / "secrets"),
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = stack_env(tmp_path_factory.mktemp("up"), "lorepin-e2e")
    try:
        up = invoke("up", env=env, timeout=900)
        assert up.returncode == 0, up.stderr[-4000:]
        assert "is ready" in up.stdout
        yield env
    finally:
        invoke("down", "--volumes", "--yes", env=env, timeout=300)
        left = leftovers(env["LOREPIN_PROJECT"])
        remove_project(env["LOREPIN_PROJECT"])
    assert not any(left.values()), f"down --volumes left {left}"


def status(env: dict[str, str]) -> dict[str, object]:
    report: dict[str, object] = json.loads(invoke("status", "--json", env=env, check=True).stdout)
    return report


def test_up_serves_pins_and_keeps_the_secret_out_of_sight(stack: dict[str, str]) -> None:
    report = status(stack)
    url = str(report["url"])
    assert url.startswith("http://127.0.0.1:")
    assert {s["service"]: s["state"] for s in report["services"]} == {  # type: ignore[attr-defined]
        "db": "running",
        "migrate": "exited",
        "cms": "running",
        "geocoder": "running",  # the mock of the external geocoding API
    }
    assert report["ready"] is True

    code, version = request("GET", f"{url}/version")
    assert code == 200 and isinstance(version, dict)
    assert version["schema_revision"] == version["schema_expected"] == HEAD
    token = new_token(lambda *a: invoke(*a, env=stack), "local")
    code, created = request(
        "POST",
        f"{url}/api/pins",
        {"title": "Stone of the ford", "latitude": 51.5, "longitude": -0.12, "tags": ["river"]},
        token,
    )
    assert code == 201 and isinstance(created, dict)
    code, read = request("GET", f"{url}/api/pins/{created['id']}", None, token)
    assert read == created

    # The database password is a file secret: never in the containers' config.
    project = stack["LOREPIN_PROJECT"]
    inspect = subprocess.run(
        ["docker", "inspect", f"{project}-db-1", f"{project}-cms-1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    secrets = Path(stack["LOREPIN_SECRETS_DIR"])
    for name in ("db_password", "cms_db_password", "monitor_db_password"):
        secret = (secrets / name).read_text().strip()
        assert secret and secret not in inspect

    # The CMS connects as its own role, which changes rows and nothing else.
    cms_password = (secrets / "cms_db_password").read_text().strip()

    def as_cms(sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "exec", "-e", f"PGPASSWORD={cms_password}",
             f"{project}-db-1", "psql", "-h", "127.0.0.1", "-U", "lorepin_cms", "-d", "lorepin",
             "-v", "ON_ERROR_STOP=1", "-tAXc", sql],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    sessions = as_cms("SELECT DISTINCT usename FROM pg_stat_activity "
                      "WHERE application_name LIKE 'lorepin-cms%'")  # fmt: skip
    assert sessions.stdout.split() == ["lorepin_cms"], sessions.stderr
    assert as_cms("UPDATE pins SET title = title WHERE false").returncode == 0
    for ddl in ("DROP TABLE pins", "ALTER TABLE pins ADD COLUMN x int", "CREATE TABLE x (y int)"):
        refused = as_cms(ddl)
        why = refused.stderr
        assert refused.returncode != 0 and ("must be owner" in why or "permission denied" in why)


def test_users_and_tokens_are_managed_with_invoke_and_audited(stack: dict[str, str]) -> None:
    url = str(status(stack)["url"])

    def cms(*args: str) -> subprocess.CompletedProcess[str]:
        return invoke(*args, env=stack)

    def tokens() -> list[dict[str, str]]:
        listed: list[dict[str, str]] = json.loads(cms("cms.token.list", "--json").stdout)
        return [t for t in listed if t["user"] == "ana"]

    assert cms("cms.user.add", "--name", "ana", "--role", "editor").returncode == 0
    refusals = {
        ("cms.user.add", "--name", "ana", "--role", "viewer"): (6, "user 'ana' already exists"),
        ("cms.user.add", "--name", "Ana Smith", "--role", "viewer"): (2, "invalid user name"),
        ("cms.user.add", "--name", "bo", "--role", "owner"): (2, "unknown role 'owner'"),
        ("cms.token.create", "--user", "nobody"): (2, "no user 'nobody' in 'local'"),
        ("cms.token.create", "--user", "ana", "--role", "admin"): (6, "cannot be admin"),
        ("cms.token.create", "--user", "ana", "--expires", "2y"): (2, "--expires must be"),
        ("cms.token.revoke", "--key", "x' OR '1'='1"): (2, "invalid token key"),
        ("cms.token.revoke", "--key", "ZZZZZZZZZZZZ"): (2, "no token 'ZZZZZZZZZZZZ'"),
    }
    for args, (code, says) in refusals.items():
        refused = cms(*args)
        assert (refused.returncode, refused.stderr.count("\n")) == (code, 1), refused.stderr
        assert refused.stderr.startswith("error: ") and says in refused.stderr

    dry = cms("cms.token.create", "--user", "ana", "--dry-run")
    shown = dry.stdout + dry.stderr
    assert dry.returncode == 0 and "psql" in shown and "INSERT INTO api_tokens" in shown
    assert "lp_" not in shown and tokens() == []  # nothing made

    made = cms("cms.token.create", "--user", "ana", "--expires", "2w")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()  # stdout holds the token alone
    assert made.stdout.count("\n") == 1 and "not shown again" in made.stderr
    draft = {"title": "Unfinished cairn", "latitude": 1.0, "longitude": 2.0, "status": "draft"}
    code, pin = request("POST", f"{url}/api/pins", draft, token)
    assert code == 201 and isinstance(pin, dict)
    assert request("GET", f"{url}/api/pins/{pin['id']}")[0] == 404  # a draft is not public
    assert request("GET", f"{url}/api/pins/{pin['id']}", None, token)[0] == 200
    assert request("POST", f"{url}/api/pins", draft)[0] == 401

    [listed] = tokens()
    key = token.split("_")[1]
    pasted = cms("cms.token.revoke", "--key", token)  # the whole token instead of its key
    assert pasted.returncode == 2 and "that is a whole token" in pasted.stderr
    assert token.split("_", 2)[2] not in pasted.stderr + pasted.stdout
    assert (listed["key"], listed["role"], listed["state"]) == (key, "editor", "active")
    assert token.split("_", 2)[2] not in cms("cms.token.list").stdout

    assert cms("cms.token.revoke", "--key", key).returncode == 0
    assert request("POST", f"{url}/api/pins", draft, token)[0] == 401  # at once
    again = cms("cms.token.revoke", "--key", key)
    assert again.returncode == 3 and "already revoked" in again.stderr
    assert tokens()[0]["state"] == "revoked"

    # Each change is in the audit trail, with the token's key and never its secret.
    trail = subprocess.run(
        ["docker", "exec", f"{stack['LOREPIN_PROJECT']}-db-1", "psql", "-U", "lorepin",
         "-d", "lorepin", "-tAc", "SELECT record::text FROM lorepin_ops.audit ORDER BY seq"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    records = [json.loads(line) for line in trail.splitlines() if line]
    mine = [(r["action"], r["detail"].get("user"), r["detail"].get("key")) for r in records
            if r["detail"].get("user") == "ana" or r["detail"].get("key") == key]  # fmt: skip
    assert mine == [("cms.user.add", "ana", None), ("cms.token.create", "ana", key),
                    ("cms.token.revoke", None, key)]  # fmt: skip
    assert token.split("_", 2)[2] not in trail


def test_generated_test_data_is_served_the_same_for_a_seed_and_all_or_nothing(
    stack: dict[str, str],
) -> None:
    """`data.generate` adds exactly what it says by COPY, the plan's rows for the seed, which
    the CMS serves; a second run of the seed is refused; a run killed mid-COPY keeps
    nothing."""
    from lorepin_tasks.plans import testdata

    url = str(status(stack)["url"])
    db = f"{stack['LOREPIN_PROJECT']}-db-1"

    def query(sql: str) -> list[str]:
        return subprocess.run(
            ["docker", "exec", db, "psql", "-U", "lorepin", "-d", "lorepin", "-tAXc", sql],
            capture_output=True, text=True, check=True,
        ).stdout.split("\n")[:-1]  # fmt: skip

    def counts() -> tuple[int, int]:
        pins, users = query("SELECT (SELECT count(*) FROM pins), (SELECT count(*) FROM "
                            "cms_users WHERE name LIKE '%.td%')")[0].split("|")  # fmt: skip
        return int(pins), int(users)

    before = counts()
    done = invoke("data.generate", "--pins", "3000", "--users", "40", "--seed", "11", env=stack)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "added 40 users and 3,000 pins" in done.stdout
    assert counts() == (before[0] + 3000, before[1] + 40)
    made = query("SELECT title FROM pins WHERE 'test-data' = ANY(tags) ORDER BY id LIMIT 5")
    pools = testdata.pools(11)
    expected = [row.split("\t")[0] for row in testdata.pin_rows(11, 5, pools)]
    assert made == expected  # the seed's rows, in order (Faker's titles need no escapes)
    code, page = request("GET", f"{url}/api/pins?tag=test-data&limit=100")
    assert code == 200 and isinstance(page, dict)
    assert 2000 < page["total"] < 2600  # about three in four are published, and public
    assert {p["status"] for p in page["items"]} == {"published"}

    again = invoke("data.generate", "--pins", "1", "--seed", "11", env=stack)
    assert (again.returncode, again.stderr.count("\n")) == (6, 1), again.stderr
    assert "has test data of seed 11 already" in again.stderr
    assert counts() == (before[0] + 3000, before[1] + 40)

    # Someone else writes meanwhile: the run counts only its own rows.
    token = new_token(lambda *a: invoke(*a, env=stack), "local")
    run = invoke_in_background("data.generate", "--pins", "200000", "--seed", "13", env=stack)
    time.sleep(1)
    code, _ = request("POST", f"{url}/api/pins", {"title": "Written meanwhile",
                      "latitude": 1.0, "longitude": 2.0, "tags": []}, token)  # fmt: skip
    assert code == 201 and run.wait(120) == 0
    assert counts() == (before[0] + 203_001, before[1] + 40)
    before = (before[0] + 1, before[1])  # the pin written meanwhile is no test data

    run = invoke_in_background("data.generate", "--pins", "2000000", "--seed", "12", env=stack)
    try:
        deadline = time.monotonic() + 90
        while query("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY public.pins%'"
                    ) != ["1"]:  # fmt: skip
            assert time.monotonic() < deadline and run.poll() is None, "no COPY started"
            time.sleep(0.2)
        time.sleep(1)  # rows are flowing
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(10)
    deadline = time.monotonic() + 30
    while query("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%'") != ["0"]:
        assert time.monotonic() < deadline, "the COPY outlived its run"
        time.sleep(0.2)
    assert counts() == (before[0] + 203_000, before[1] + 40)  # not one row of the killed run

    # Cleanup takes what is marked and old enough: the generated pins (dated in 2025), not
    # the users made a moment ago, and never a pin someone wrote.
    gone = invoke("data.cleanup", "--older-than", "10m", "--yes", env=stack)
    assert gone.returncode == 0, gone.stderr[-2000:]
    assert "removed 203,000 test pins and 0 test users" in gone.stdout
    assert counts() == (before[0], before[1] + 40)
    nothing = invoke("data.cleanup", "--older-than", "10m", "--yes", env=stack)
    assert nothing.returncode == 3 and "has no test data older than 10m" in nothing.stderr

    # Anonymization by the project's rules: a personal column without a rule stops it
    # before anything; then every user name becomes a pseudonym and every token goes.
    assert request("GET", f"{url}/api/pins?status=draft", None, token)[0] == 200
    names = set(query("SELECT name FROM cms_users"))
    query("ALTER TABLE cms_users ADD COLUMN email text")
    refused = invoke("data.anonymize", "--env", "local", "--yes", env=stack)
    assert (refused.returncode, refused.stderr.count("\n")) == (2, 1), refused.stderr
    assert "cms_users.email may identify a person and has no rule" in refused.stderr
    assert set(query("SELECT name FROM cms_users")) == names
    query("ALTER TABLE cms_users DROP COLUMN email")
    done = invoke("data.anonymize", "--env", "local", "--yes", env=stack)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no original value is left" in done.stdout
    after = set(query("SELECT name FROM cms_users"))
    assert len(after) == len(names) and not after & names
    assert all(n.startswith("user-") for n in after)
    assert query("SELECT count(*) FROM api_tokens") == ["0"]
    assert request("GET", f"{url}/api/pins?status=draft", None, token)[0] == 401
    listed = invoke("backup.list", "--json", env=stack)
    assert "before-anonymize" in listed.stdout  # the data before it, kept


def test_a_warm_up_builds_nothing_and_status_shows_names_not_ids(stack: dict[str, str]) -> None:
    again = invoke("up", env=stack, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "images up to date (cms, db, geocoder)" in again.stderr
    assert " build" not in again.stderr
    text_status = invoke("status", env=stack, check=True).stdout
    assert f"schema {HEAD} (expected {HEAD})" in text_status
    assert "lorepin/postgres:e2e" in text_status and "sha256:" not in text_status


def test_logs_of_one_service_and_of_all(stack: dict[str, str]) -> None:
    db = invoke("logs", "--service", "db", "--tail", "5", env=stack)
    assert db.returncode == 0, db.stderr
    assert db.stdout.strip() and all(line.startswith("db-") for line in db.stdout.splitlines())
    short = invoke("logs", "-s", "migrate", "--tail", "all", env=stack)
    assert short.returncode == 0 and "database at" in short.stdout


def test_local_is_monitored_on_request_and_up_leaves_its_monitoring_alone(
    stack: dict[str, str],
) -> None:
    env = {**stack, "LOREPIN_MONITORING_PORT": "0"}  # Docker picks: beside anyone's 9090
    project = stack["LOREPIN_PROJECT"]
    try:
        started = invoke("monitor.up", "--env", "local", env=env, timeout=900)
        assert started.returncode == 0, started.stderr[-3000:]
        console = started.stdout.strip().splitlines()[-1].strip()
        assert console.startswith("http://127.0.0.1:") and console.endswith("/consoles/cms.html")
        # Every target is scraped and up (the CMS's metrics port too); nothing fires.
        deadline = time.monotonic() + 60
        while (watched := invoke("monitor.status", "--env", "local", env=env)).returncode != 0 or (
            "unknown " in watched.stdout  # not scraped yet
        ):
            assert time.monotonic() < deadline, watched.stdout + watched.stderr
            time.sleep(2)
        jobs = {line.split()[1] for line in watched.stdout.splitlines() if line.startswith("up ")}
        assert {"cms", "postgres", "node", "probe_colour", "probe_db", "prometheus"} <= jobs
        assert "proxy" not in jobs  # local has none
        with urllib.request.urlopen(console, timeout=10) as page:  # noqa: S310 (127.0.0.1)
            assert page.status == 200 and "<title>LorePin: CMS" in page.read().decode()
        # A taken port is refused before anything changes: the running monitoring stays.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = str(taken.getsockname()[1])
            refused = invoke(
                "monitor.up", "--env", "local", env={**env, "LOREPIN_MONITORING_PORT": port}
            )
        assert refused.returncode == 2 and f"127.0.0.1:{port} is taken" in refused.stderr
        assert invoke("monitor.status", "--env", "local", env=env).returncode == 0
        logs = invoke("logs", "--service", "prometheus", "--tail", "5", env=env)
        assert logs.returncode == 0 and logs.stdout.startswith("prometheus-"), logs.stderr
        # A second `up` (its --remove-orphans) keeps the monitoring running.
        assert invoke("up", env=env, timeout=300).returncode == 0
        assert invoke("monitor.status", "--env", "local", env=env).returncode == 0
        assert invoke("errors", "--env", "local", env=env).returncode == 0
        assert status(env)["alerts"] == []  # `invoke status` reads the monitoring too
        stopped = invoke("monitor.down", "--env", "local", env=env)
        assert stopped.returncode == 0, stopped.stderr
        names = subprocess.run(
            ["docker", "ps", "-a", "--format", "{{.Names}}", "--filter",
             f"label=com.docker.compose.project={project}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert sorted(n.removeprefix(f"{project}-") for n in names) == [
            "cms-1",
            "db-1",
            "geocoder-1",
            "migrate-1",
        ]
        assert f"{project}_prometheus-data" in leftovers(project)["volumes"]  # data kept
    finally:  # the module's stack as it was: no monitoring, no monitoring data
        invoke("monitor.down", "--env", "local", env=env)
        ours = [v for v in leftovers(project)["volumes"] if not v.endswith("_db-data")]
        if ours:
            subprocess.run(["docker", "volume", "rm", *ours], capture_output=True, check=True)


def test_another_checkout_cannot_touch_this_environment(
    stack: dict[str, str], tmp_path: Path
) -> None:
    other = clone_project(tmp_path)  # a second checkout, on the same engine
    for args in (["down", "--volumes", "--yes"], ["up"], ["db.migrate"], ["build"]):
        refused = invoke_in(other, *args, env=stack)
        assert refused.returncode == 6, refused.stderr
        assert f"project {stack['LOREPIN_PROJECT']} belongs to another checkout" in refused.stderr
        assert str(ROOT) in refused.stderr  # it says whose
    assert status(stack)["ready"] is True and leftovers(stack["LOREPIN_PROJECT"])["volumes"]


def test_kill_9_during_a_migration_leaves_nothing_behind(stack: dict[str, str]) -> None:
    project = stack["LOREPIN_PROJECT"]
    oneoffs = [
        "docker",
        "ps",
        "-aq",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        "label=dev.lorepin.oneoff=migrator",
    ]
    db = next(s for s in status(stack)["services"] if s["service"] == "db")  # type: ignore[attr-defined]
    assert db["state"] == "running"
    port = published_port(f"{project}-db-1", 5432)
    password = (Path(stack["LOREPIN_SECRETS_DIR"]) / "db_password").read_text().strip()
    engine = create_engine(f"postgresql+psycopg://lorepin:{password}@127.0.0.1:{port}/lorepin")
    try:
        # Autocommit: pg_stat_activity is a snapshot per transaction.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
            # Hold the migration lock, so the migrator waits inside its container.
            holder.execute(text("SELECT pg_advisory_lock(19536, 19785)"))
            migrating = invoke_in_background("db.migrate", env=stack)
            deadline = time.monotonic() + 60
            waiting = text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name LIKE 'lorepin-migrate%'"
            )
            while not holder.execute(waiting).scalar():
                assert time.monotonic() < deadline, "the migrator never reached the lock"
                time.sleep(0.1)
            # Nothing else changes the environment meanwhile: not down, not up.
            for args in (["down", "--volumes", "--yes"], ["up"]):
                busy = invoke(*args, env=stack)
                assert busy.returncode == 5, busy.stderr
                assert "is being changed by " in busy.stderr and "(db.migrate, pid " in busy.stderr
            os.killpg(migrating.pid, signal.SIGKILL)  # the task and its compose client
            migrating.wait(10)
            holder.execute(text("SELECT pg_advisory_unlock(19536, 19785)"))
    finally:
        engine.dispose()
    # The container outlives the killed client; it finishes once the lock is free.
    deadline = time.monotonic() + 60
    while subprocess.run(
        [*oneoffs, "--filter", "status=running"], capture_output=True, text=True, check=True
    ).stdout.split():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert subprocess.run(oneoffs, capture_output=True, text=True, check=True).stdout.split()

    current = invoke("db.current", "--json", env=stack, check=True)
    assert json.loads(current.stdout)["current"] == HEAD
    assert not subprocess.run(oneoffs, capture_output=True, text=True, check=True).stdout.split()


def test_a_taken_port_is_named_not_hidden(tmp_path: Path) -> None:
    env = stack_env(tmp_path, "lorepin-e2e-port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env["LOREPIN_HTTP_PORT"] = str(taken.getsockname()[1])
        try:
            up = invoke("up", env=env, timeout=900)
            assert up.returncode == 1
            message = up.stderr.strip().splitlines()[-1]
            assert message.startswith("error: service 'cms' of 'local' could not start: ")
            assert "address already in use" in message or "already allocated" in message
            run_hints(up.stderr, env)
        finally:
            invoke("down", "--volumes", "--yes", env=env, timeout=300)
            remove_project(env["LOREPIN_PROJECT"])


def test_life_of_the_data_down_lost_secret_wrong_secret_down_volumes(
    stack: dict[str, str],
) -> None:
    project = stack["LOREPIN_PROJECT"]
    refused = invoke("down", "--volumes", env={**stack, "CI": ""})
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert leftovers(project)["volumes"], "the data volume must survive"
    kept = invoke("down", env=stack, check=True)
    assert "data volumes kept" in kept.stdout
    remaining = leftovers(project)
    assert remaining["containers"] == [] and len(remaining["volumes"]) == 1

    secret = Path(stack["LOREPIN_SECRETS_DIR"]) / "db_password"
    original = secret.read_text()
    secret.unlink()
    lost = invoke("up", env=stack)
    assert lost.returncode == 2
    assert "exists but its secret" in lost.stderr and "is missing" in lost.stderr
    assert not secret.exists(), "no new password may be invented over existing data"
    assert leftovers(project)["containers"] == []
    run_hints(lost.stderr, stack)  # `invoke down --volumes --env local`, as a dry run

    secret.write_text("not-the-password\n")
    wrong = invoke("up", env=stack, timeout=900)
    assert wrong.returncode == 1
    message = wrong.stderr.strip().splitlines()[-1]
    assert message.startswith("error: service 'migrate' of 'local' exited with code 1")
    assert "password authentication failed" in message
    assert run_hints(message, stack) == ["invoke logs --service migrate --env local"]

    secret.write_text(original)
    assert invoke("up", env=stack, timeout=900).returncode == 0
    assert len(leftovers(project)["volumes"]) == 1

    down = invoke("down", "--volumes", "--yes", env=stack, check=True)
    assert "is down" in down.stdout
    assert leftovers(project) == {"containers": [], "networks": [], "volumes": []}
