"""The Alembic history on a real PostgreSQL (the project's own image), via plain `alembic`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect

from lorepin_cms.migrator import alembic_config
from lorepin_cms.models import Base
from tests.conftest import HEAD, ROOT

pytestmark = pytest.mark.docker


def alembic(url: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


SCHEMA = {"alembic_version", "activity", "api_tokens", "cms_users", "pins"}


def test_upgrade_downgrade_upgrade_round_trip(database_url: str) -> None:
    alembic(database_url, "upgrade", "head")
    assert tables(database_url) == SCHEMA
    assert alembic(database_url, "current").split()[0] == HEAD

    alembic(database_url, "downgrade", "base")
    assert tables(database_url) == {"alembic_version"}
    assert alembic(database_url, "current").strip() == ""

    alembic(database_url, "upgrade", "head")
    assert tables(database_url) == SCHEMA


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    alembic(database_url, "upgrade", "head")
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
    finally:
        engine.dispose()
    assert diff == []


def test_database_is_utf8(database_url: str) -> None:
    from sqlalchemy import text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW server_encoding")).scalar() == "UTF8"
    finally:
        engine.dispose()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_env_runs_on_an_engine_passed_in_attributes(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What pytest-alembic and similar tools pass; the environment's URL must not be used.
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/nowhere")
    engine = create_engine(database_url)
    cfg = alembic_config(ROOT / "migrations")
    cfg.attributes["connection"] = engine
    command.upgrade(cfg, "head")
    assert (current_revision(engine), tables(database_url)) == (HEAD, SCHEMA)
    command.downgrade(cfg, "base")
    assert (current_revision(engine), tables(database_url)) == (None, {"alembic_version"})
    engine.dispose()


def test_env_runs_on_a_connection_passed_in_attributes(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/nowhere")
    engine = create_engine(database_url)
    cfg = alembic_config(ROOT / "migrations")
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.commit()  # the caller's connection: the caller ends its transaction
    assert current_revision(engine) == "0003"
    engine.dispose()


def test_env_refuses_anything_else_in_attributes() -> None:
    cfg = alembic_config(ROOT / "migrations")
    cfg.attributes["connection"] = "postgresql://somewhere"
    with pytest.raises(TypeError, match="must be a SQLAlchemy Connection or Engine, not str"):
        command.upgrade(cfg, "head")
