"""Alembic environment of the LorePin CMS: the URL comes from the environment."""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, Engine, create_engine

from lorepin_cms.config import database_url
from lorepin_cms.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Emit SQL; it starts with the same bounded timeouts the migrator sets online."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
    )
    context.execute(f"SET lock_timeout = '{os.environ.get('LOREPIN_LOCK_TIMEOUT', '5s')}'")
    context.execute(
        f"SET statement_timeout = '{os.environ.get('LOREPIN_STATEMENT_TIMEOUT', '15min')}'"
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # A caller may share its own: the migrator a Connection (its bounded session), test
    # tools such as pytest-alembic an Engine. A Connection's transaction is the caller's.
    connectable = config.attributes.get("connection")
    if isinstance(connectable, Connection):
        _run(connectable)
    elif isinstance(connectable, Engine):
        _run_on(connectable)
    elif connectable is None:
        engine = create_engine(database_url(), connect_args={"connect_timeout": 10})
        _run_on(engine)
        engine.dispose()
    else:
        raise TypeError(
            "config.attributes['connection'] must be a SQLAlchemy Connection or Engine, "
            f"not {type(connectable).__name__}"
        )


def _run_on(engine: Engine) -> None:
    with engine.connect() as conn:
        _run(conn)
        conn.commit()  # our connection: keep whatever ran outside per-revision transactions


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transaction_per_migration=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
