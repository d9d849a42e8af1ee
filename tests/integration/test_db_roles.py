"""Least privilege on a real PostgreSQL: the migrator keeps the CMS's role, which reads
and writes rows and can change nothing else; the reporting role only reads."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from lorepin_cms.app import create_app
from lorepin_cms.config import Config
from lorepin_cms.db_roles import GRANTS
from lorepin_cms.migrator import Migrator, Options
from tests.conftest import ROOT, bearer, grant, random_password

pytestmark = pytest.mark.docker

REFUSED = "42501"  # insufficient_privilege


def as_role(url: str, user: str, password: str) -> str:
    return make_url(url).set(username=user, password=password).render_as_string(False)


def refused(url: str, statement: str) -> str:
    """The SQLSTATE the statement fails with (it must fail)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn, pytest.raises(DBAPIError) as info:
            conn.execute(text(statement))
        return str(getattr(info.value.orig, "sqlstate", ""))
    finally:
        engine.dispose()


def runs(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


MONITOR_PASSWORD = random_password()


def migrate(url: str, cms_password: str | None, monitor_password: str | None = None) -> None:
    options = Options(who="tester", cms_password=cms_password, monitor_password=monitor_password)
    m = Migrator(url, options, out=io.StringIO())
    m.upgrade()
    m.engine.dispose()


def value(url: str, sql: str) -> object:
    """What one query answers, as the owner."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()


@pytest.fixture
def migrated(database_url: str) -> Iterator[tuple[str, str]]:
    """A database at head, with the roles kept for a CMS password of this test."""
    password = random_password()
    migrate(database_url, password, MONITOR_PASSWORD)
    yield database_url, password


def test_the_cms_role_writes_rows_and_cannot_alter_drop_or_create(
    migrated: tuple[str, str],
) -> None:
    owner, password = migrated
    cms = as_role(owner, "lorepin_cms", password)
    for statement in (
        "INSERT INTO pins SELECT * FROM pins WHERE false",
        "UPDATE pins SET title = title WHERE false",
        "DELETE FROM pins WHERE false",
        "INSERT INTO cms_users (name, role) VALUES ('ana', 'editor')",
        "SELECT revision FROM lorepin_ops.migration_checksums",
        "SELECT version_num FROM alembic_version",
    ):
        runs(cms, statement)
    for statement in (
        "ALTER TABLE pins ADD COLUMN x int",
        "DROP TABLE pins",
        "TRUNCATE pins",
        "CREATE TABLE mine (x int)",
        "CREATE INDEX ON pins (title)",
        "UPDATE alembic_version SET version_num = version_num",
        "SELECT * FROM lorepin_ops.migration_log",
        "ALTER ROLE lorepin_cms SUPERUSER",
        "CREATE SCHEMA mine",
    ):
        assert refused(cms, statement) == REFUSED, statement


def test_the_cms_serves_as_its_role(migrated: tuple[str, str]) -> None:
    """/readyz (its schema check reads the migrator's checksums), a token and a write, all as
    lorepin_cms."""
    owner, password = migrated
    config = Config(
        database_url=make_url(as_role(owner, "lorepin_cms", password)),
        version="t",
        git_revision="t",
        migrations_dir=ROOT / "migrations",
    )
    token = grant(str(config.database_url.render_as_string(False)))  # as lorepin_cms, too
    pin = {"title": "Old mill", "latitude": 48.1, "longitude": -1.6, "tags": ["mill"]}
    with TestClient(create_app(config)) as client:
        assert client.get("/readyz").status_code == 200
        made = client.post("/api/pins", json=pin, headers=bearer(token))
        assert made.status_code == 201, made.text
        read = client.get(f"/api/pins/{made.json()['id']}", headers=bearer(token))
        assert read.json()["title"] == "Old mill"


def test_a_later_table_comes_with_the_grants_and_a_rerun_changes_the_password(
    migrated: tuple[str, str],
) -> None:
    owner, password = migrated
    runs(owner, "CREATE TABLE later (x int)")  # as a later revision would, as the owner
    runs(as_role(owner, "lorepin_cms", password), "INSERT INTO later VALUES (1)")

    rotated = random_password()
    migrate(owner, rotated, MONITOR_PASSWORD)  # nothing to migrate: the roles are still kept
    runs(as_role(owner, "lorepin_cms", rotated), "SELECT 1 FROM pins")
    with pytest.raises(OperationalError, match="password authentication failed"):
        runs(as_role(owner, "lorepin_cms", password), "SELECT 1")
    stored = str(value(owner, "SELECT rolpassword FROM pg_authid WHERE rolname = 'lorepin_cms'"))
    logins = value(owner, "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles "
                          "WHERE rolname LIKE 'lorepin_%' AND rolcanlogin")  # fmt: skip
    assert logins == "lorepin_cms,lorepin_monitor"
    assert stored.startswith("SCRAM-SHA-256$") and rotated not in stored


def test_a_rerun_takes_back_what_the_roles_were_given_or_gave_themselves(
    migrated: tuple[str, str],
) -> None:
    """The grants are the migrator's whole: a setting the CMS's role gave itself, a grant
    or a membership by hand are gone after the next run."""
    owner, password = migrated
    cms = as_role(owner, "lorepin_cms", password)
    runs(cms, "ALTER ROLE lorepin_cms SET search_path = nowhere")  # PostgreSQL allows this
    runs(owner, "GRANT TRUNCATE ON pins TO lorepin_cms")
    runs(owner, "GRANT CREATE ON SCHEMA public TO lorepin_cms")
    runs(owner, "GRANT lorepin_report TO lorepin_cms")
    runs(owner, "GRANT INSERT ON alembic_version TO lorepin_report")
    migrate(owner, password, MONITOR_PASSWORD)
    for statement in ("TRUNCATE pins", "CREATE TABLE mine (x int)", "SET ROLE lorepin_report",
                      "CREATE TEMPORARY TABLE scratch (x int)"):  # fmt: skip
        assert refused(cms, statement) == REFUSED, statement
    assert value(owner, "SELECT rolconfig FROM pg_roles WHERE rolname = 'lorepin_cms'") is None
    writes = "SELECT has_table_privilege('lorepin_report', 'alembic_version', 'INSERT')"
    assert value(owner, writes) is False
    runs(cms, "SELECT count(*) FROM pins")


def test_a_session_holding_a_role_stops_the_run_named_instead_of_stalling_it(
    migrated: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lorepin_cms.migrator import MigrationError, roles

    owner, password = migrated
    monkeypatch.setattr(roles, "LOCK_TIMEOUT", "300ms")
    holder = create_engine(as_role(owner, "lorepin_cms", password))
    try:
        with holder.connect() as conn:  # an open transaction holding the role's row
            conn.execute(text(f"ALTER ROLE lorepin_cms PASSWORD '{password}'"))
            options = Options(who="tester", cms_password=password)
            m = Migrator(owner, options, out=io.StringIO())
            with pytest.raises(MigrationError, match=r"^the database roles were not kept "
                               r"\(canceling statement due to lock timeout\)"):  # fmt: skip
                m.upgrade()
            m.engine.dispose()
            conn.rollback()
    finally:
        holder.dispose()


def test_the_monitoring_role_reads_statistics_and_activity_and_no_content(
    migrated: tuple[str, str],
) -> None:
    """What the metrics exporter connects as (compose/monitoring.yaml)."""
    owner, _ = migrated
    owners, monitors = (
        create_engine(owner),
        create_engine(as_role(owner, "lorepin_monitor", MONITOR_PASSWORD)),
    )
    try:
        with owners.connect() as held, monitors.connect() as conn:
            held.execute(text("SELECT 'seen-by-the-monitor'"))
            seen = conn.execute(  # pg_read_all_stats: another role's query, not hidden
                text(
                    "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                    "AND query LIKE '%seen-by-the-%'"
                )
            ).scalars()
            assert list(seen) == ["SELECT 'seen-by-the-monitor'"]
            assert conn.execute(text("SELECT count(*) FROM activity")).scalar_one() == 0
    finally:
        owners.dispose()
        monitors.dispose()
    monitor = as_role(owner, "lorepin_monitor", MONITOR_PASSWORD)
    assert refused(monitor, "SELECT * FROM pins") == REFUSED
    assert refused(monitor, "DELETE FROM activity") == REFUSED


def test_the_reporting_role_reads_and_never_writes_or_sees_token_hashes(
    migrated: tuple[str, str],
) -> None:
    owner, _ = migrated
    name, password = f"report_{uuid.uuid4().hex[:8]}", random_password()
    runs(owner, f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE lorepin_report")
    try:
        reader = as_role(owner, name, password)
        runs(reader, "SELECT count(*) FROM pins")
        runs(reader, "SELECT count(*) FROM cms_users")
        assert refused(reader, "SELECT * FROM api_tokens") == REFUSED
        assert refused(reader, "DELETE FROM pins") == REFUSED
        assert refused(reader, "CREATE TABLE mine (x int)") == REFUSED
    finally:
        runs(owner, f"DROP OWNED BY {name}")
        runs(owner, f"DROP ROLE {name}")


def test_without_a_cms_password_the_migrator_keeps_no_roles(database_url: str) -> None:
    """`db.check` and tests migrate as the owner alone: nothing is granted (the role exists
    on this server, cluster-wide, so the question is asked of a real role)."""
    runs(database_url, GRANTS[0])  # the roles' creation alone, if missing
    migrate(database_url, None)
    granted = "SELECT has_table_privilege('lorepin_cms', 'public.pins', 'INSERT')"
    assert value(database_url, granted) is False


def test_a_missing_or_empty_password_file_is_one_line(tmp_path: Path) -> None:
    from lorepin_cms.migrator.__main__ import password_file
    from lorepin_cms.migrator.errors import BadInput

    cms, monitor = "LOREPIN_CMS_DB_PASSWORD_FILE", "LOREPIN_MONITOR_DB_PASSWORD_FILE"
    assert password_file(cms, {}) is None
    with pytest.raises(BadInput, match=rf"^cannot read {cms} /nonexistent"):
        password_file(cms, {cms: "/nonexistent"})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(BadInput, match=rf"^{monitor} .* holds no one-line password$"):
        password_file(monitor, {monitor: str(tmp_path / "empty")})


def test_a_verifier_the_toolkit_makes_logs_in_with_its_password_only(database_url: str) -> None:
    """`db.rotate-password` hands PostgreSQL a SCRAM verifier it made itself: the server
    keeps it as it is (never hashing it again), and the password, not the verifier, logs in."""
    import os

    from lorepin_tasks.plans.db import scram_verifier

    role, password = f"probe_{uuid.uuid4().hex[:8]}", random_password()
    verifier = scram_verifier(password, os.urandom(16))
    engine = create_engine(database_url)
    with engine.begin() as conn:  # not text(): the verifier's ":x" would be a bind parameter
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{verifier}'")
    engine.dispose()
    try:
        kept = value(database_url, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'")  # noqa: S608
        assert kept == verifier
        assert value(as_role(database_url, role, password), "SELECT current_user") == role
        for wrong in (verifier, password + "x"):
            with pytest.raises(OperationalError, match="password authentication failed"):
                value(as_role(database_url, role, wrong), "SELECT 1")
    finally:
        runs(database_url, f"DROP ROLE {role}")


def test_the_backup_role_reads_every_table_writes_none_and_never_logs_in(
    migrated: tuple[str, str],
) -> None:
    """pg_dump takes on `lorepin_backup` (pg_read_all_data, `--role`): it reads the token
    hashes and the toolkit's records a dump must hold, and cannot change a row or make a
    large object (which would break restores); it never logs in, even with a password."""
    owner, password = migrated
    engine = create_engine(owner)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL ROLE lorepin_backup"))
            for table in ("public.pins", "public.api_tokens", "lorepin_ops.migration_log"):
                conn.execute(text(f"SELECT count(*) FROM {table}"))  # noqa: S608 (constants)
            assert conn.execute(text("SELECT current_user")).scalar_one() == "lorepin_backup"
        for statement in (
            "DELETE FROM public.pins",
            "UPDATE lorepin_ops.migration_log SET who = 'x'",
            "CREATE TABLE public.x (id int)",
            "SELECT lo_create(0)",
            "SELECT lo_from_bytea(0, 'x')",
        ):
            with engine.begin() as conn, pytest.raises(DBAPIError) as info:
                conn.execute(text("SET LOCAL ROLE lorepin_backup"))
                conn.execute(text(statement))
            assert getattr(info.value.orig, "sqlstate", "") == REFUSED, statement
    finally:
        engine.dispose()
    assert value(owner, "SELECT rolpassword IS NULL AND NOT rolcanlogin FROM pg_authid "
                        "WHERE rolname = 'lorepin_backup'") is True  # fmt: skip
    runs(owner, "ALTER ROLE lorepin_backup PASSWORD 'given-by-itself'")  # as it could
    with pytest.raises(OperationalError, match="not permitted to log in"):
        value(as_role(owner, "lorepin_backup", "given-by-itself"), "SELECT 1")
    # Nor may the CMS's role make large objects.
    assert refused(as_role(owner, "lorepin_cms", password), "SELECT lo_create(0)") == REFUSED
