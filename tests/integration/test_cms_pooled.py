"""The CMS behind a real pgbouncer in transaction mode, as it runs on Swarm: pgbouncer from
the project's PostgreSQL image with the configuration the toolkit gives it
(plans/swarm.pgbouncer_ini), in front of the session's real PostgreSQL."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from lorepin_cms import activity
from lorepin_cms.app import connect, create_app
from lorepin_tasks.plans import swarm as plan
from lorepin_tasks.settings import DbClient
from tests.conftest import NOT_COMPOSE, bearer, grant, published_port
from tests.integration.test_cms_api import PIN, config_for, migrate

pytestmark = pytest.mark.docker

SID = "0b7e4c1a-2f3d-4e5f-8a9b-0c1d2e3f4a5b"


def _docker(*argv: str) -> str:
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def old_activity(url: str, count: int) -> None:
    """`count` rows of activity past the 30-day retention."""
    event = {"at": datetime.now(UTC) - timedelta(days=40), "session_id": SID, "user_id": None,
             "method": "GET", "route": "/", "status": 200, "duration_ms": 1.0}  # fmt: skip
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(activity.INSERT, [event] * count)
    finally:
        engine.dispose()


@pytest.fixture
def pooled(database_url: str, postgres_image: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(the database's URL through pgbouncer, pgbouncer's container)."""
    url = make_url(database_url)
    server = _docker("ps", "-q", "--filter", f"publish={url.port}")
    address = _docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", server)
    config = tmp_path / "pgbouncer.ini"
    config.write_text(plan.pgbouncer_ini(2, DbClient(pool_size=4), host=address,
                                         database=str(url.database),
                                         user=str(url.username)))  # fmt: skip
    password = tmp_path / "password"
    password.write_text(str(url.password))
    config.chmod(0o644)
    password.chmod(0o644)
    tmp_path.chmod(0o755)
    labels = [a for k, v in NOT_COMPOSE.items() for a in ("--label", f"{k}={v}")]
    container = _docker(
        "run", "-d", "--read-only", "--user", "postgres", "--no-healthcheck", *labels,
        "--tmpfs", "/tmp", "--tmpfs", "/var/lib/postgresql/data",
        "-v", f"{config}:/etc/lorepin/pgbouncer.ini:ro", "-v", f"{password}:/run/secrets/pw:ro",
        "-e", f"LOREPIN_DB_USER={url.username}", "-e", "LOREPIN_DB_PASSWORD_FILE=/run/secrets/pw",
        "-p", "127.0.0.1::6432", "--entrypoint", "lorepin-pgbouncer",
        postgres_image, "/etc/lorepin/pgbouncer.ini",
    )  # fmt: skip
    try:
        through = url.set(port=published_port(container, plan.POOLER_PORT))
        engine = create_engine(through, connect_args={"prepare_threshold": None})
        deadline = time.monotonic() + 30
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(_docker("logs", container)) from None
                time.sleep(0.2)
        engine.dispose()
        yield through.render_as_string(hide_password=False), container
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", container], capture_output=True, timeout=60)


def test_the_cms_serves_through_pgbouncer_with_its_timeouts_and_no_lock_left(
    database_url: str, pooled: tuple[str, str]
) -> None:
    through, container = pooled
    migrate(database_url)
    config = dataclasses.replace(config_for(through), db_pooler="transaction", db_pool_size=4)
    token = grant(database_url)
    with TestClient(create_app(config)) as client:
        made = client.post("/api/pins", json=PIN, headers=bearer(token))
        assert made.status_code == 201, made.text
        # More than psycopg's prepare threshold (5): each would be a prepared statement on
        # whichever server connection ran it, missing on the next, without the setting.
        for _ in range(12):
            assert client.get(f"/api/pins/{made.json()['id']}").status_code == 200
        assert client.get("/readyz").status_code == 200
    engine = connect(config, 2)
    try:
        with engine.connect() as conn:
            # Set by pgbouncer on its server connections: the client's options never arrive.
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "15s"
            assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "30s"
        old_activity(database_url, 3)
        assert activity.Recorder(engine, 30).prune() == 3
    finally:
        engine.dispose()
    direct = create_engine(database_url)
    try:
        with direct.connect() as conn:
            # The prune's lock went with its transaction: none is left on a server
            # connection for other clients to inherit.
            held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            assert conn.execute(text(held)).scalar() == 0
    finally:
        direct.dispose()
    # What db.report shows of the pool, asked inside pgbouncer's container.
    shown = subprocess.run(plan.show_pools(["docker"], container), capture_output=True,
                           text=True, timeout=30, check=True)  # fmt: skip
    pools = plan.pool_report([line.split("\t") for line in shown.stdout.splitlines()])
    assert [(p["database"], p["cl_waiting"]) for p in pools] == [
        (make_url(database_url).database, 0)
    ]
    assert int(str(pools[0]["sv_idle"])) + int(str(pools[0]["sv_active"])) >= 1


def test_a_prune_skips_its_turn_while_another_worker_prunes(database_url: str) -> None:
    migrate(database_url)
    engine = create_engine(database_url)
    try:
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"),
                           {"a": activity.PRUNE_LOCK[0], "b": activity.PRUNE_LOCK[1]})  # fmt: skip
            old_activity(database_url, 1)
            assert activity.Recorder(engine, 30).prune() == 0
            holder.rollback()
        assert activity.Recorder(engine, 30).prune() == 1
    finally:
        engine.dispose()
