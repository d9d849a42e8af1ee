"""Expand: start renaming pins.body to pins.story without downtime.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

Step 1 of 2 (see docs/migrations.md). Adds `story`, keeps `body` and `story` equal with a
trigger whatever a writer sets (the previous release writes `body`, this one `story`),
and copies existing bodies in batches. Safe while the previous release still runs.
The contract step (0005) ships in a later release, once no running code reads `body`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000

SYNC_FUNCTION = """
CREATE FUNCTION pins_sync_body_story() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.story = '' THEN NEW.story := NEW.body; ELSE NEW.body := NEW.story; END IF;
    ELSIF NEW.story IS DISTINCT FROM OLD.story THEN
        NEW.body := NEW.story;
    ELSIF NEW.body IS DISTINCT FROM OLD.body THEN
        NEW.story := NEW.body;
    END IF;
    RETURN NEW;
END $$
"""


def create_sync() -> None:
    op.execute(SYNC_FUNCTION)
    op.execute(
        "CREATE TRIGGER pins_sync_body_story BEFORE INSERT OR UPDATE ON pins "
        "FOR EACH ROW EXECUTE FUNCTION pins_sync_body_story()"
    )


def drop_sync() -> None:
    op.execute("DROP TRIGGER pins_sync_body_story ON pins")
    op.execute("DROP FUNCTION pins_sync_body_story()")


def copy_in_batches(source: str, target: str) -> None:
    batch = sa.text(
        f"UPDATE pins SET {target} = {source} WHERE id IN (SELECT id FROM pins "
        f"WHERE {target} IS DISTINCT FROM {source} ORDER BY id LIMIT :n)"
    ).bindparams(n=BATCH)
    if op.get_context().as_sql:
        op.execute(batch)
        return
    bind = op.get_bind()
    while bind.execute(batch).rowcount:
        pass


def upgrade() -> None:
    # A constant default adds the column without rewriting the table (PostgreSQL >= 11).
    op.add_column("pins", sa.Column("story", sa.Text(), server_default="", nullable=False))
    create_sync()
    copy_in_batches("body", "story")


def downgrade() -> None:
    drop_sync()
    op.drop_column("pins", "story")
