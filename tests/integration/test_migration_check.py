"""`db.check` catches each kind of unsafe history, naming the revision and the problem."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sqlalchemy as sa

from lorepin_cms.models import Base
from lorepin_tasks.runtime.executor import Executor
from lorepin_tasks.runtime.migration_check import Report, run_checks
from tests.conftest import HEAD, ROOT
from tests.integration.migration_helpers import add_revision, copy_migrations

pytestmark = pytest.mark.docker


def check(
    migrations: Path, url: str, tmp_path: Path, metadata: sa.MetaData = Base.metadata
) -> Report:
    work = tmp_path / "sql"
    work.mkdir(exist_ok=True)
    return run_checks(Executor(out=io.StringIO()), migrations, metadata, url, work)


def errors(report: Report) -> list[str]:
    return [str(f) for f in report.findings if f.error]


def test_the_project_history_passes(database_url: str, tmp_path: Path) -> None:
    report = check(ROOT / "migrations", database_url, tmp_path)
    assert errors(report) == []
    assert len(report.checked) == 3


def test_two_heads(database_url: str, tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(migrations, "0100", "pass")
    add_revision(migrations, "0101", "pass")
    assert errors(check(migrations, database_url, tmp_path)) == [
        "FAIL: history: 2 heads (0100, 0101): merge them with "
        "`alembic merge -m 'merge heads' 0100 0101`"
    ]


def test_model_change_without_migration(database_url: str, tmp_path: Path) -> None:
    metadata = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables["pins"].append_column(sa.Column("rating", sa.Integer()))
    found = errors(check(ROOT / "migrations", database_url, tmp_path, metadata))
    assert len(found) == 1
    assert found[0].startswith(f"FAIL: revision {HEAD}: the models and the migrated schema differ")
    assert "add_column rating" in found[0]


def test_not_null_column_without_default(database_url: str, tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(
        migrations,
        "0100",
        'op.add_column("pins", sa.Column("region", sa.Text(), nullable=False))',
        'op.drop_column("pins", "region")',
    )
    found = errors(check(migrations, database_url, tmp_path))
    assert any(f.startswith("FAIL: revision 0100: squawk adding-required-field") for f in found)


def test_index_without_concurrently(database_url: str, tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(
        migrations,
        "0100",
        'op.create_index("ix_pins_title", "pins", ["title"])',
        'op.drop_index("ix_pins_title", table_name="pins")',
    )
    found = errors(check(migrations, database_url, tmp_path))
    assert any(
        f.startswith("FAIL: revision 0100: squawk require-concurrent-index-creation") for f in found
    ), found


def test_acknowledged_rule_needs_and_accepts_a_reason(database_url: str, tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(
        migrations,
        "0100",
        'op.create_index("ix_pins_title", "pins", ["title"])',
        'op.drop_index("ix_pins_title", table_name="pins")',
        extra='squawk_acknowledged = {"require-concurrent-index-creation": ""}\n',
    )
    found = errors(check(migrations, database_url, tmp_path))
    assert any(
        "acknowledges squawk rule require-concurrent-index-creation without a reason" in f
        for f in found
    )


def test_downgrade_that_does_not_restore_the_schema(database_url: str, tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(
        migrations,
        "0100",
        """\
        op.add_column("pins", sa.Column("a", sa.Text()))
        op.add_column("pins", sa.Column("b", sa.Text()))
    """,
        'op.drop_column("pins", "a")',
    )
    found = errors(check(migrations, database_url, tmp_path))
    assert (
        "FAIL: revision 0100: downgrade does not restore the schema: column pins.b left "
        "behind" in found
    )


def test_irreversible_revision_is_reported_not_passed_silently(
    database_url: str, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(
        migrations,
        "0100",
        'op.execute("UPDATE pins SET title = upper(title)")',
        'raise RuntimeError("cannot restore the original titles")',
        extra='irreversible = "original titles are not kept"\n',
    )
    report = check(migrations, database_url, tmp_path)
    assert errors(report) == []
    assert [str(f) for f in report.findings] == [
        "note: revision 0100: irreversible (original titles are not kept); downgrades below "
        "it are not tested: roll back with a restore"
    ]


def test_undeclared_failing_downgrade_fails(database_url: str, tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(migrations, "0100", "pass", 'raise RuntimeError("no way back")')
    assert errors(check(migrations, database_url, tmp_path)) == [
        "FAIL: revision 0100: downgrade failed: no way back (declare "
        '`irreversible = "why"` if it cannot be undone)'
    ]
