"""The migrator on a real PostgreSQL: lock, per-revision transactions, log, checksums."""

from __future__ import annotations

import io
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.engine import make_url

from lorepin_cms.app import create_app
from lorepin_cms.config import Config
from lorepin_cms.exit_codes import ExitCode
from lorepin_cms.migrator import (
    ChecksumMismatch,
    MigrationError,
    Migrator,
    Options,
)
from lorepin_cms.migrator.runner import LOCK_ARGS
from tests.conftest import BEFORE_HEAD, HEAD, REVISION_COUNT, ROOT
from tests.integration.migration_helpers import add_revision, copy_migrations

pytestmark = pytest.mark.docker

LOCK = text("SELECT pg_advisory_lock(:a, :b)")
# Longer than the 63 bytes PostgreSQL keeps of application_name; the end tells if it is cut.
LONG_WHO = ("ana.long.name@example.com on some-host " * 4)[:117] + "END"
SINCE = r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4}"
# A lock the concurrency test holds and revision 0099 waits for: the test decides when
# the first run may finish, instead of guessing how long it takes.
GATE = (0x4C50, 0x5445)  # "LP", "TE"
GATE_ARGS = dict(zip("ab", GATE, strict=True))
DEADLINE = 60.0


def migrator(url: str, migrations: Path | None = None, **options: object) -> Migrator:
    kwargs: dict[str, object] = {"who": "tester", **options}
    extra = {"migrations_dir": migrations} if migrations else {}
    return Migrator(url, Options(**kwargs), out=io.StringIO(), **extra)  # type: ignore[arg-type]


def log_rows(url: str) -> list[tuple[str, str, str | None, str | None, str]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT who, action, from_rev, to_rev, outcome FROM lorepin_ops.migration_log "
                "ORDER BY id"
            )
        ).all()
    engine.dispose()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def columns(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("pins")}
    finally:
        engine.dispose()


def test_upgrade_logs_each_revision_and_a_rerun_does_nothing(database_url: str) -> None:
    m = migrator(database_url)
    assert m.upgrade() == HEAD
    rows = log_rows(database_url)
    assert [r[4] for r in rows] == ["ok"] * REVISION_COUNT
    assert rows[0] == ("tester", "upgrade", None, "0001", "ok")
    assert rows[-1][2:] == (BEFORE_HEAD, HEAD, "ok")
    assert m.upgrade() == HEAD
    assert log_rows(database_url)[-1] == ("tester", "upgrade", HEAD, HEAD, "nothing-to-do")
    m.engine.dispose()


def test_downgrade_steps_back_and_logs(database_url: str) -> None:
    m = migrator(database_url)
    m.upgrade()
    assert m.downgrade("0003") == "0003"
    assert "story" not in columns(database_url) and "body" in columns(database_url)
    assert [r[1:4] for r in log_rows(database_url)[-2:]] == [
        ("downgrade", "0005", "0004"),
        ("downgrade", "0004", "0003"),
    ]
    with pytest.raises(MigrationError, match="unknown revision 'nope'"):
        m.downgrade("nope")
    m.engine.dispose()


def test_failing_revision_leaves_the_previous_one_and_readyz_says_so(
    database_url: str, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(
        migrations,
        "0099",
        """\
        op.add_column("pins", sa.Column("half_done", sa.Text()))
        op.execute("SELECT 1/0")
    """,
    )
    m = migrator(database_url, migrations)
    with pytest.raises(MigrationError) as info:
        m.upgrade()
    assert str(info.value).startswith("revision 0099 failed: division by zero")
    assert str(info.value).endswith(f"the database is left at {HEAD}")
    assert "half_done" not in columns(database_url)
    assert log_rows(database_url)[-1][1:] == ("upgrade", HEAD, "0099", "failed")
    m.engine.dispose()

    config = Config(
        database_url=make_url(database_url),
        version="t",
        git_revision="t",
        migrations_dir=migrations,
    )
    with TestClient(create_app(config)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "schema mismatch",
            "schema": HEAD,
            "expected": "0099",
            "reason": "schema behind this build: 0099 is missing",
        }
        assert client.get("/api/pins").status_code == 200  # still serving
        client.app.state.engine.dispose()  # type: ignore[attr-defined]


def test_editing_an_applied_revision_is_refused_unless_accepted(
    database_url: str, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    m = migrator(database_url, migrations)
    m.upgrade()
    edited = next((migrations / "versions").glob("0003_*.py"))
    edited.write_text(edited.read_text() + "\n# edited after release\n")
    with pytest.raises(
        ChecksumMismatch,
        match=r"^revision 0003 \(0003_.*\) changed after it was "
        r"applied .* `invoke db.migrate --accept-changed 0003`$",
    ):
        m.upgrade()
    assert log_rows(database_url)[-1][4] == "refused"
    m.engine.dispose()

    accepted = migrator(database_url, migrations, accept_changed=("0003",))
    assert accepted.upgrade() == HEAD
    assert ("tester", "accept-changed", None, "0003", "accepted") in log_rows(database_url)
    accepted.engine.dispose()
    assert migrator(database_url, migrations).upgrade() == HEAD  # the new checksum holds


def run_cli(url: str, migrations: Path, who: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "lorepin_cms.migrator", "--who", who, *options),
            *("--migrations-dir", str(migrations), "upgrade"),
        ],
        env={**os.environ, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(what: str, done: Callable[[], bool], *running: subprocess.Popen[str]) -> None:
    """Poll `done` until it holds; fail at the deadline, or as soon as a run has ended."""
    deadline = time.monotonic() + DEADLINE
    while not done():
        for proc in running:
            if proc.poll() is not None:
                pytest.fail(f"{what}: a run ended first: {proc.communicate()}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {DEADLINE:.0f} s", pytrace=False)
        time.sleep(0.05)  # a polling interval, not a guess at how long anything takes


def first_line(proc: subprocess.Popen[str]) -> str:
    """The run's first line of output, within the deadline."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=DEADLINE):
            pytest.fail(f"no output within {DEADLINE:.0f} s", pytrace=False)
    return proc.stdout.readline()  # a whole line: the migrator flushes after each


def inside_the_gate(conn: Connection, who: str) -> bool:
    """`who` holds the migration lock (its record says so) and 0099 waits at the gate."""
    waiting = conn.execute(
        text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = :a AND objid = :b AND objsubid = 2"
        ),
        GATE_ARGS,
    ).scalar()
    if not waiting:
        return False
    holders = conn.execute(
        text(
            "SELECT h.who FROM lorepin_ops.migration_lock_holder h "
            "JOIN pg_locks l ON l.pid = h.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = :a AND l.objid = :b AND l.objsubid = 2"
        ),
        LOCK_ARGS,
    ).scalars()
    return list(holders) == [who]


def test_concurrent_runs_apply_once_and_the_log_shows_every_run(
    database_url: str, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(migrations, "0099", f'op.execute("SELECT pg_advisory_xact_lock{GATE}")')
    observer = create_engine(database_url, isolation_level="AUTOCOMMIT")
    runs: list[subprocess.Popen[str]] = []
    try:
        with observer.connect() as conn:
            conn.execute(LOCK, GATE_ARGS)
            # Its lock timeout outlasts the gate: it must wait there, not give up.
            first = run_cli(database_url, migrations, LONG_WHO, "--lock-timeout", "5min")
            runs.append(first)
            wait_until(
                "the first run holds the lock inside 0099",
                lambda: inside_the_gate(conn, LONG_WHO),
                first,
            )
            impatient = run_cli(database_url, migrations, "impatient", "--lock-wait", "0")
            runs.append(impatient)
            _, impatient_err = impatient.communicate(timeout=DEADLINE)
            patient = run_cli(database_url, migrations, "patient", "--lock-wait", str(DEADLINE))
            runs.append(patient)
            waiting = first_line(patient)
            conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), GATE_ARGS)
        _, first_err = first.communicate(timeout=DEADLINE)
        patient_out, patient_err = patient.communicate(timeout=DEADLINE)
    finally:
        observer.dispose()
        for run in runs:  # only after a failure above is any still running
            if run.poll() is None:
                run.kill()
                run.communicate()

    assert first.returncode == ExitCode.OK, first_err
    named = rf"pid \d+, '{re.escape(LONG_WHO)}', {SINCE}"
    assert impatient.returncode == ExitCode.BUSY, impatient_err
    assert re.fullmatch(
        rf"error: another migration holds the lock \({named}\); gave up .*\n", impatient_err
    )
    assert patient.returncode == ExitCode.OK, patient_err
    assert re.fullmatch(rf"waiting for the migration lock held by {named}\n", waiting)
    assert patient_out.splitlines()[-1] == "database already at 0099; nothing to do"

    rows = log_rows(database_url)
    applied = [r for r in rows if r[4] == "ok"]
    assert {r[0] for r in applied} == {LONG_WHO} and len(applied) == REVISION_COUNT + 1
    assert ("impatient", "upgrade", None, None, "lock-busy") in rows
    assert ("patient", "upgrade", "0099", "0099", "nothing-to-do") in rows


def test_lock_timeouts_are_bounded_and_retried(database_url: str, tmp_path: Path) -> None:
    m = migrator(database_url)
    m.upgrade("0004")
    m.engine.dispose()
    blocker = create_engine(database_url)
    with blocker.connect() as conn:
        conn.execute(text("LOCK TABLE pins IN ACCESS SHARE MODE"))  # like a long report query
        slow = migrator(database_url, lock_timeout="300ms", retries=1)
        started = time.monotonic()
        with pytest.raises(
            MigrationError,
            match="revision 0005 failed: canceling statement due "
            "to lock timeout; the database is left at 0004",
        ):
            slow.upgrade()
        assert time.monotonic() - started < 10
        assert "retry 1/1" in slow.out.getvalue()  # type: ignore[attr-defined]
        slow.engine.dispose()
        conn.rollback()
    blocker.dispose()


# -- exit codes through the real command line ------------------------------------------


def cli(url: str, *args: str, migrations: Path | None = None) -> subprocess.CompletedProcess[str]:
    where = ["--migrations-dir", str(migrations)] if migrations else []
    return subprocess.run(
        [sys.executable, "-m", "lorepin_cms.migrator", "--who", "tester", *where, *args],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_error(proc: subprocess.CompletedProcess[str], code: ExitCode, message: str) -> None:
    """The exit code, and stderr is one `error: ` line (never a traceback)."""
    assert (proc.returncode, proc.stderr.splitlines()) == (code, [f"error: {message}"]), proc
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_complete_run_exits_ok(database_url: str) -> None:
    proc = cli(database_url, "upgrade", "--to", "0003")
    assert (proc.returncode, proc.stderr) == (ExitCode.OK, "")
    assert proc.stdout.splitlines()[-1] == "database at 0003"


def test_targets_that_cannot_be_reached_are_bad_input(database_url: str) -> None:
    assert cli(database_url, "upgrade", "--to", "0003").returncode == ExitCode.OK
    assert_error(
        cli(database_url, "upgrade", "--to", "0002"),
        ExitCode.BAD_INPUT,
        "0002 is not ahead of the database (0003); use downgrade to go back",
    )
    assert_error(
        cli(database_url, "downgrade", "--to", "0005"),
        ExitCode.BAD_INPUT,
        "0005 is not below the database's revision 0003",
    )
    proc = cli(database_url, "downgrade", "--to", "nope")
    assert proc.returncode == ExitCode.BAD_INPUT
    assert proc.stderr.startswith("error: unknown revision 'nope'")
    assert log_rows(database_url)[-1][4] == "ok"  # refused before anything was logged or changed


def test_a_failing_revision_exits_failed(database_url: str, tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(migrations, "0099", 'op.execute("SELECT 1/0")')
    assert_error(
        cli(database_url, "upgrade", migrations=migrations),
        ExitCode.FAILED,
        f"revision 0099 failed: division by zero; the database is left at {HEAD}",
    )


def test_an_edited_applied_revision_exits_refused(database_url: str, tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path)
    assert cli(database_url, "upgrade", migrations=migrations).returncode == ExitCode.OK
    edited = next((migrations / "versions").glob("0002_*.py"))
    edited.write_text(edited.read_text() + "\n# edited after release\n")
    proc = cli(database_url, "upgrade", migrations=migrations)
    assert proc.returncode == ExitCode.REFUSED
    assert proc.stderr.startswith("error: revision 0002 (0002_")
    assert proc.stderr.rstrip().endswith("`invoke db.migrate --accept-changed 0002`")


def test_a_held_lock_exits_busy(database_url: str) -> None:
    holder = create_engine(database_url)
    with holder.connect() as conn:
        conn.execute(LOCK, LOCK_ARGS)
        proc = cli(database_url, "--lock-wait", "0", "upgrade")
    holder.dispose()
    assert proc.returncode == ExitCode.BUSY, proc.stderr
    assert proc.stderr.startswith("error: another migration holds the lock (pid ")


def test_a_database_ahead_of_the_code_is_refused(database_url: str, tmp_path: Path) -> None:
    assert cli(database_url, "upgrade").returncode == ExitCode.OK
    older = copy_migrations(tmp_path)  # the code of the release before HEAD's
    next((older / "versions").glob(f"{HEAD}_*.py")).unlink()
    for action in (["upgrade"], ["downgrade", "--to", "0001"]):
        assert_error(
            cli(database_url, *action, migrations=older),
            ExitCode.REFUSED,
            f"the database is at revision {HEAD}, which these migrations do not have: "
            "migrate with the release that has it",
        )


# -- who holds the lock ------------------------------------------------------------------


def test_the_holder_is_looked_up_in_this_database_only(
    database_url: str, postgres_server: str
) -> None:
    # The same advisory key in another database of the server is another lock.
    decoy = create_engine(postgres_server, connect_args={"application_name": "decoy"})
    holder = create_engine(database_url, connect_args={"application_name": "the holder"})
    with decoy.connect() as other_db, holder.connect() as this_db:
        other_db.execute(LOCK, LOCK_ARGS)
        this_db.execute(LOCK, LOCK_ARGS)
        proc = cli(database_url, "--lock-wait", "0", "upgrade")
    decoy.dispose()
    holder.dispose()
    assert proc.returncode == ExitCode.BUSY
    assert "'the holder'" in proc.stderr, proc.stderr


def test_a_waiting_run_names_the_holder_in_full(database_url: str) -> None:
    assert len(LONG_WHO) == 120
    holder = migrator(database_url, who=LONG_WHO)
    with holder.locked():
        proc = cli(database_url, "--lock-wait", "1", "upgrade")
    with holder.engine.connect() as conn:  # released: the record went with the lock
        assert conn.execute(text("SELECT * FROM lorepin_ops.migration_lock_holder")).all() == []
    holder.engine.dispose()
    named = rf"pid \d+, '{re.escape(LONG_WHO)}', {SINCE}"
    assert proc.returncode == ExitCode.BUSY, proc.stderr
    assert re.fullmatch(f"waiting for the migration lock held by {named}", proc.stdout.strip())
    assert re.match(rf"error: another migration holds the lock \({named}\); gave up", proc.stderr)


def test_without_a_holder_record_the_connection_names_the_holder(database_url: str) -> None:
    # A session that is not the migrator (or one that has not written its record yet),
    # whose pid a killed migrator's record still names: that record predates the session.
    assert cli(database_url, "upgrade", "--to", "0001").returncode == ExitCode.OK
    holder = create_engine(database_url, connect_args={"application_name": "psql of ops"})
    with holder.connect() as conn:
        conn.execute(LOCK, LOCK_ARGS)
        conn.execute(
            text(
                "INSERT INTO lorepin_ops.migration_lock_holder (pid, who, since) "
                "VALUES (pg_backend_pid(), 'killed', now() - interval '1 day')"
            )
        )
        conn.commit()
        proc = cli(database_url, "--lock-wait", "0", "upgrade")
    holder.dispose()
    assert proc.returncode == ExitCode.BUSY
    assert re.match(
        rf"error: another migration holds the lock \(pid \d+, 'psql of ops', {SINCE}\)", proc.stderr
    )


def test_a_busy_or_refused_downgrade_is_logged_as_a_downgrade(
    database_url: str, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    assert cli(database_url, "upgrade", migrations=migrations).returncode == ExitCode.OK
    holder = create_engine(database_url)
    with holder.connect() as conn:
        conn.execute(LOCK, LOCK_ARGS)
        busy = cli(database_url, "--lock-wait", "0", "downgrade", "--to", "0001")
    holder.dispose()
    edited = next((migrations / "versions").glob("0002_*.py"))
    edited.write_text(edited.read_text() + "\n# edited after release\n")
    refused = cli(database_url, "downgrade", "--to", "0001", migrations=migrations)
    assert (busy.returncode, refused.returncode) == (ExitCode.BUSY, ExitCode.REFUSED)
    assert [r[1:] for r in log_rows(database_url)[-2:]] == [
        ("downgrade", None, None, "lock-busy"),
        ("downgrade", HEAD, None, "refused"),
    ]


def client_for(url: str, migrations: Path) -> TestClient:
    config = Config(
        database_url=make_url(url), version="t", git_revision="t", migrations_dir=migrations
    )
    return TestClient(create_app(config))


@pytest.mark.parametrize("kind", ["expand", "contract"])
def test_the_running_release_stays_ready_beside_a_newer_expand_revision_only(
    database_url: str, tmp_path: Path, kind: str
) -> None:
    """Blue-green: the old build keeps serving while the new release's expand revisions
    are applied; a contract revision ahead of it is a mismatch it reports."""
    newer = copy_migrations(tmp_path)
    add_revision(
        newer,
        "0099",
        'op.add_column("pins", sa.Column("extra", sa.Text()))',
        'op.drop_column("pins", "extra")',
        extra='contract = "test: the release before cannot run after it"\n'
        if kind == "contract"
        else "",
    )
    m = migrator(database_url, newer)
    assert m.upgrade() == "0099"
    m.engine.dispose()
    with client_for(database_url, ROOT / "migrations") as old:  # the build before 0099
        ready = old.get("/readyz")
        if kind == "expand":
            assert ready.status_code == 200
            assert ready.json() == {
                "status": "ready",
                "schema": "0099",
                "note": "expand revision(s) 0099 ahead",
            }
        else:
            assert ready.status_code == 503
            assert ready.json()["reason"] == (
                "schema ahead by contract revision 0099: this build cannot run on it"
            )
        old.app.state.engine.dispose()  # type: ignore[attr-defined]


def test_the_new_release_is_ready_before_its_contract_revisions_run(
    database_url: str, tmp_path: Path
) -> None:
    m = migrator(database_url)
    assert m.upgrade() == HEAD
    m.engine.dispose()
    newer = copy_migrations(tmp_path)  # the next release ships a contract revision
    add_revision(
        newer,
        "0099",
        'op.drop_column("pins", "slug")',
        'op.add_column("pins", sa.Column("slug", sa.Text()))',
        extra='contract = "test: drops a column the release before reads"\n',
    )
    with client_for(database_url, newer) as new:  # started before 0099 is applied
        ready = new.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["note"] == "contract revision(s) 0099 not applied yet"
        new.app.state.engine.dispose()  # type: ignore[attr-defined]
