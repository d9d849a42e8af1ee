from __future__ import annotations

from pathlib import Path

import pytest

from lorepin_tasks import settings as settings_mod
from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import backup, compose, db

ROOT = Path(__file__).resolve().parents[2]
LOCAL = settings_mod.load({}, root=ROOT, environ={}).environment("local")
PREFIX = (
    f"docker compose --project-name lorepin-local --file {ROOT}/compose/compose.yaml "
    f"--file {ROOT}/compose/mocks.yaml --file {ROOT}/compose/local.yaml"
)


def test_upgrade_runs_the_migrator_in_a_one_off_migrate_container() -> None:
    command = db.migrator(db.upgrade_action("head", ["0003"]), who="ana on box", lock_wait=30)
    assert " ".join(compose.run(LOCAL, "migrate", command, name="m-1", kind=db.ONEOFF)) == (
        f"{PREFIX} run --name m-1 --label dev.lorepin.oneoff=migrator --no-deps --pull never "
        "-T migrate "
        "python -m lorepin_cms.migrator "
        "--who ana on box --lock-wait 30 upgrade --to head --accept-changed 0003"
    )


def test_downgrade_and_dump() -> None:
    assert db.downgrade_action("0003") == ["downgrade", "--to", "0003"]
    assert " ".join(backup.dump(LOCAL, None)) == (
        "docker exec lorepin-local-db-1 pg_dump -Fc --no-privileges -U lorepin -d lorepin "
        "--role=lorepin_backup"
    )
    assert backup.dump(LOCAL, None, role=None)[-4:] == ["-U", "lorepin", "-d", "lorepin"]


@pytest.mark.parametrize("bad", ["0003; DROP TABLE pins", "--to", "a b", "x" * 40])
def test_bad_revisions_are_refused_before_anything_runs(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid revision"):
        db.upgrade_action(bad)
    with pytest.raises(ConfigError, match="invalid revision"):
        db.downgrade_action(bad)


def test_a_missing_revision_says_which_to_give() -> None:
    with pytest.raises(ConfigError, match=r"^say which revision to go back to: --to REV"):
        db.downgrade_action("")


def test_backups_live_with_the_environment_outside_the_checkout() -> None:
    local = settings_mod.load({}, root=ROOT, environ={"XDG_STATE_HOME": "/state"}).environment(
        "local"
    )
    assert backup.data_path(local, "20261125-140509L") == Path(
        "/state/lorepin/lorepin-local/backups/20261125-140509L.dump.age"
    )


def test_squawk_lints_one_revision_with_the_projects_exclusions() -> None:
    assert db.squawk("/bin/squawk", Path("/w/0001.sql")) == [
        "/bin/squawk",
        "--reporter",
        "json",
        "--pg-version=15",
        "--exclude=prefer-robust-stmts",
        "/w/0001.sql",
    ]


def test_long_lived_kinds_back_up_before_migrating_by_default() -> None:
    envs = settings_mod.load(
        {
            "environments": {
                "staging": {"kind": "staging", "compose_files": ["compose/compose.yaml"]},
                "production": {
                    "kind": "production",
                    "compose_files": ["compose/compose.yaml"],
                    "backup_before_migrate": False,
                },
            }
        },
        root=ROOT,
        environ={},
    ).environments
    assert envs["staging"].backup_before_migrate
    assert not envs["production"].backup_before_migrate  # explicitly turned off
    assert not envs["local"].backup_before_migrate


def test_a_replica_connection_takes_the_new_password_and_keeps_every_other_option() -> None:
    from psycopg.conninfo import conninfo_to_dict

    written = (  # as `pg_basebackup -R` writes it
        "user=lorepin password=old-one channel_binding=prefer host=db port=5432 "
        "sslmode=prefer application_name=replica"
    )
    new = db.with_password(written, "n'e w\\x")
    assert conninfo_to_dict(new) == {**conninfo_to_dict(written), "password": "n'e w\\x"}
    with pytest.raises(ConfigError, match="has no primary_conninfo"):
        db.with_password("", "x")
    with pytest.raises(ConfigError, match="primary_conninfo cannot be read"):
        db.with_password("host='db", "x")


def test_the_owner_password_reaches_postgresql_as_a_verifier_never_as_itself() -> None:
    made = db.scram_verifier("pencil", b"0123456789abcdef")
    assert made == db.scram_verifier("pencil", b"0123456789abcdef")  # salt and password only
    assert made.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert "pencil" not in made and made != db.scram_verifier("pencil!", b"0123456789abcdef")
    assert db.set_password("lorepin", made) == f"ALTER ROLE lorepin PASSWORD '{made}'"
    with pytest.raises(ConfigError):
        db.set_password("postgres; DROP TABLE pins", made)
    for role in db.LOGIN_ROLES:  # the query that finds them names each of them
        assert f"'{role}'" in db.EXISTING_LOGIN_ROLES
    assert db.EXISTING_LOGIN_ROLES.count("'") == 2 * len(db.LOGIN_ROLES)
