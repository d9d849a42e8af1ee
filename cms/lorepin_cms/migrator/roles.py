"""The migrator's side of the database roles (lorepin_cms.db_roles): applies them."""

from __future__ import annotations

from sqlalchemy import Connection, text

from lorepin_cms.db_roles import CMS_ROLE, GRANTS, LOCK_TIMEOUT, MONITOR_ROLE, REPORT_ROLE

__all__ = ["CMS_ROLE", "MONITOR_ROLE", "REPORT_ROLE", "apply"]


def apply(conn: Connection, cms_password: str, monitor_password: str | None = None) -> None:
    """The roles, their passwords and every grant, on `conn` (in a transaction the caller
    commits, while it holds the migration lock: two runs never grant at once)."""
    conn.execute(text("SELECT set_config('lock_timeout', :v, true)"), {"v": LOCK_TIMEOUT})
    database = conn.execute(text("SELECT quote_ident(current_database())")).scalar_one()
    for statement in GRANTS:
        conn.execute(text(statement.replace("{database}", database)))
    _login(conn, CMS_ROLE, cms_password)
    if monitor_password is not None:
        _login(conn, MONITOR_ROLE, monitor_password)


def _login(conn: Connection, role: str, password: str) -> None:
    """`role` logs in with `password`, sent as a SCRAM verifier made here (quoted by the
    server's own rules): no statement or log line ever holds the password itself."""
    driver = conn.connection.driver_connection
    verifier = driver.pgconn.encrypt_password(  # type: ignore[union-attr]
        password.encode(), role.encode(), b"scram-sha-256"
    ).decode()
    quoted = conn.execute(text("SELECT quote_literal(:v)"), {"v": verifier}).scalar_one()
    name = conn.execute(text("SELECT quote_ident(:r)"), {"r": role}).scalar_one()
    conn.exec_driver_sql(f"ALTER ROLE {name} LOGIN PASSWORD {quoted}")  # both quoted above
