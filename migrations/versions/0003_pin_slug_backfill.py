"""Add pins.slug, derived from the title, and backfill it in batches (a data migration).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

Expand-only: the column is nullable, so the running release (which does not know it)
keeps inserting rows; the release that ships this revision fills it on every write.
The backfill runs in batches of BATCH rows so each statement stays short and well inside
statement_timeout, then a validation query proves every row has the right slug.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
# Same rule as lorepin_cms.models.slugify (copied: a revision must not change when the
# application code does).
SLUG_SQL = "trim(both '-' from regexp_replace(lower(title), '[^a-z0-9]+', '-', 'g'))"


def upgrade() -> None:
    op.add_column("pins", sa.Column("slug", sa.Text(), nullable=True))
    batch = sa.text(
        f"UPDATE pins SET slug = {SLUG_SQL} WHERE id IN "
        "(SELECT id FROM pins WHERE slug IS NULL ORDER BY id LIMIT :n)"
    ).bindparams(n=BATCH)
    if op.get_context().as_sql:
        op.execute(batch)  # offline SQL shows one batch; run it until it updates 0 rows
        return
    bind = op.get_bind()
    while bind.execute(batch).rowcount:
        pass
    wrong = bind.execute(
        sa.text(f"SELECT count(*) FROM pins WHERE slug IS DISTINCT FROM {SLUG_SQL}")
    ).scalar()
    if wrong:
        raise RuntimeError(f"slug backfill validation failed: {wrong} rows without the right slug")


def downgrade() -> None:
    op.drop_column("pins", "slug")
