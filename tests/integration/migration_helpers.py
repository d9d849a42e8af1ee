"""Throwaway copies of migrations/ with extra revisions, for tests of what can go wrong."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from tests.conftest import HEAD, ROOT


def copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def add_revision(
    migrations: Path,
    revision: str,
    upgrade: str,
    downgrade: str = "pass",
    *,
    down_revision: str = HEAD,
    extra: str = "",
) -> Path:
    path = migrations / "versions" / f"{revision}_test.py"
    path.write_text(
        textwrap.dedent(
            f'''\
            """Test revision {revision}."""
            import sqlalchemy as sa
            from alembic import op

            revision = "{revision}"
            down_revision = "{down_revision}"
            branch_labels = None
            depends_on = None
            '''
        )
        + textwrap.dedent(extra)
        + "\n\ndef upgrade():\n"
        + textwrap.indent(textwrap.dedent(upgrade), "    ")
        + "\n\ndef downgrade():\n"
        + textwrap.indent(textwrap.dedent(downgrade), "    ")
        + "\n"
    )
    return path
