"""`invoke db.*` against a running stack, as a release engineer would use them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BEFORE_HEAD, HEAD, invoke, local_stack, run_hints

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with local_stack("lorepin-db", tmp_path_factory) as env:
        yield env


def current(stack: dict[str, str]) -> dict[str, object]:
    result: dict[str, object] = json.loads(
        invoke("db.current", "--json", env=stack, check=True).stdout
    )
    return result


def test_up_migrated_to_head_and_logged_it(stack: dict[str, str]) -> None:
    assert current(stack) == {"current": HEAD, "heads": [HEAD], "at_head": True}
    log = json.loads(invoke("db.history", "--json", env=stack, check=True).stdout)
    assert [row["outcome"] for row in log if row["action"] == "upgrade"][:5] == ["ok"] * 5
    assert log[0]["who"].startswith("compose up (local)")


def test_downgrade_confirms_backs_up_and_migrate_returns(stack: dict[str, str]) -> None:
    refused = invoke("db.downgrade", "--to", BEFORE_HEAD, env={**stack, "CI": ""})
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    assert current(stack)["current"] == HEAD

    down = invoke("db.downgrade", "--to", BEFORE_HEAD, "--yes", env=stack)
    assert down.returncode == 0, down.stderr
    assert f"{HEAD} -> {BEFORE_HEAD}" in down.stdout
    assert current(stack)["current"] == BEFORE_HEAD

    backups = Path(stack["LOREPIN_BACKUP_DIR"])
    before = set(backups.glob("*.dump.age"))
    up = invoke("db.migrate", "--backup", env=stack)
    assert up.returncode == 0, up.stderr
    assert f"{BEFORE_HEAD} -> {HEAD}" in up.stdout
    made = set(backups.glob("*.dump.age")) - before
    assert len(made) == 1
    dump = made.pop()
    assert dump.read_bytes().startswith(b"age-encryption.org/v1")  # pg_dump, encrypted
    assert oct(dump.stat().st_mode & 0o777) == "0o600"
    manifest = json.loads(dump.with_name(dump.name.replace(".dump.age", ".json")).read_text())
    assert manifest["reason"] == "before-migrate-to-head"
    assert manifest["schema_revision"] == BEFORE_HEAD
    log = json.loads(invoke("db.history", "--json", env=stack, check=True).stdout)
    assert [(r["action"], r["from_rev"], r["to_rev"]) for r in log[-2:]] == [
        ("downgrade", HEAD, BEFORE_HEAD),
        ("upgrade", BEFORE_HEAD, HEAD),
    ]


def test_bad_input_changes_nothing(stack: dict[str, str]) -> None:
    bad = invoke("db.migrate", "--to", "0003; DROP TABLE pins", env=stack)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: invalid revision '0003; DROP TABLE pins'")
    unknown = invoke("db.migrate", "--to", "9999", env=stack)
    assert unknown.returncode == 2
    assert "unknown revision '9999'" in unknown.stderr.strip().splitlines()[-1]
    assert current(stack)["current"] == HEAD


def test_the_log_shows_who_in_full(stack: dict[str, str]) -> None:
    who = "ana.maria.with.a.long.name@departments.example.invalid"
    env = {
        **stack,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "user.email",
        "GIT_CONFIG_VALUE_0": who,
    }
    assert invoke("db.migrate", env=env).returncode == 0
    table = invoke("db.history", "--limit", "3", env=stack, check=True).stdout
    assert f"{who} on " in table  # never cut to a column width


def test_a_stopped_database_says_how_to_start_it(stack: dict[str, str]) -> None:
    subprocess.run(
        ["docker", "stop", f"{stack['LOREPIN_PROJECT']}-db-1"], check=True, capture_output=True
    )
    try:
        stopped = invoke("db.current", env=stack)
        assert stopped.returncode == 1
        assert stopped.stderr.strip() == (
            "error: the database of 'local' is not running: start it with `invoke up --env local`"
        )
        text_status = invoke("status", env=stack, check=True).stdout
        assert "schema None" not in text_status and "sha256:" not in text_status
        assert run_hints(stopped.stderr, stack) == ["invoke up --env local"]
    finally:
        invoke("up", env=stack, timeout=600)
    assert current(stack)["current"] == HEAD


def test_dry_run_prints_and_runs_nothing(stack: dict[str, str]) -> None:
    dry = invoke("db.downgrade", "--to", "base", "--dry-run", env=stack)
    assert dry.returncode == 0
    assert "lorepin_cms.migrator" in dry.stderr and "downgrade --to base" in dry.stderr
    assert current(stack)["current"] == HEAD


def test_offline_sql_needs_no_database() -> None:
    out = invoke("db.sql", "--from", "0004", "--to", "0005", check=True).stdout
    assert "SET lock_timeout = '5s';" in out
    assert "ALTER TABLE pins DROP COLUMN body;" in out


def test_db_check_passes_on_the_project_history() -> None:
    result = invoke("db.check", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("db.check passed")
