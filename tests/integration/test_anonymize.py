"""Anonymization on a real PostgreSQL at head: the project's rules (staging/anonymize.yml)
leave no person's value, keep every row and key, and a personal column without a rule
is named before anything runs."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from lorepin_cms.migrator import Migrator, Options
from lorepin_tasks.plans import anonymize, testdata
from tests.conftest import ROOT

pytestmark = pytest.mark.docker

RULES = anonymize.load(ROOT / anonymize.RULES_FILE)


@pytest.fixture
def people(database_url: str) -> Iterator[Connection]:
    """A database at head with 300 users, a token each, their activity, and 500 pins."""
    m = Migrator(database_url, Options(who="tester"), out=io.StringIO())
    m.upgrade()
    m.engine.dispose()
    engine = create_engine(database_url)
    pools = testdata.pools(3)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:  # type: ignore[union-attr]
            with cur.copy(testdata.copy_users()) as copy:
                for row in testdata.user_rows(3, 300, pools):
                    copy.write(row)
            with cur.copy(testdata.copy_pins()) as copy:
                for row in testdata.pin_rows(3, 500, pools):
                    copy.write(row)
        conn.exec_driver_sql(
            "INSERT INTO api_tokens (key, secret_sha256, user_id, role, expires_at) "
            "SELECT 'k' || id, md5(name), id, role, now() + interval '1 day' FROM cms_users"
        )
        conn.exec_driver_sql(
            "INSERT INTO activity (session_id, user_id, method, route, status, duration_ms) "
            "SELECT gen_random_uuid(), name, 'GET', '/api/pins', 200, 1.5 FROM cms_users"
        )
        conn.commit()
        yield conn
    engine.dispose()


def column(conn: Connection, sql: str) -> list[object]:
    return [row[0] for row in conn.exec_driver_sql(sql)]


def test_the_rules_leave_no_persons_value_and_keep_every_row_and_key(people: Connection) -> None:
    conn = people
    columns = [(t, c) for t, c in conn.exec_driver_sql(anonymize.COLUMNS_SQL)]
    assert anonymize.unruled(RULES, columns) == [] and anonymize.unknown(RULES, columns) == []
    names = set(column(conn, "SELECT name FROM cms_users"))
    sessions = set(column(conn, "SELECT session_id::text FROM activity"))
    pins = column(conn, "SELECT title || place_name FROM pins ORDER BY id")
    conn.rollback()  # the reads above began a transaction: the run is one of its own
    with conn.begin():
        conn.exec_driver_sql("SELECT set_config('lorepin.salt', %s, true)",
                             (secrets.token_hex(16),))  # fmt: skip
        for sql in anonymize.statements(RULES):
            conn.exec_driver_sql(sql)
        assert conn.exec_driver_sql(anonymize.leaks_sql(RULES)).scalar_one() == 0
    after = column(conn, "SELECT name FROM cms_users")
    assert len(after) == 300 and len(set(after)) == 300 and not names & set(after)
    assert all(str(n).startswith("user-") and len(str(n)) == 21 for n in after)
    assert not sessions & set(column(conn, "SELECT session_id::text FROM activity"))
    assert not names & set(column(conn, "SELECT user_id FROM activity"))
    assert column(conn, "SELECT count(*) FROM activity") == [300]
    assert column(conn, "SELECT count(*) FROM api_tokens") == [0]  # never leave production
    assert column(conn, "SELECT title || place_name FROM pins ORDER BY id") == pins  # public
    assert column(conn, "SELECT count(*) FROM pg_constraint WHERE NOT convalidated") == [0]


def test_a_personal_column_without_a_rule_or_a_rule_without_a_column_is_named(
    people: Connection,
) -> None:
    conn = people
    conn.exec_driver_sql("ALTER TABLE cms_users ADD COLUMN email text")
    conn.exec_driver_sql("ALTER TABLE pins ADD COLUMN author_phone text")
    conn.commit()
    columns = [(t, c) for t, c in conn.exec_driver_sql(anonymize.COLUMNS_SQL)]
    assert anonymize.unruled(RULES, columns) == ["cms_users.email", "pins.author_phone"]
    conn.exec_driver_sql("ALTER TABLE activity RENAME COLUMN session_id TO visit")
    conn.commit()
    columns = [(t, c) for t, c in conn.exec_driver_sql(anonymize.COLUMNS_SQL)]
    assert anonymize.unknown(RULES, columns) == ["activity.session_id"]
