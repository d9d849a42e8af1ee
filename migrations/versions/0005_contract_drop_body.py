"""Contract: finish the body -> story rename by dropping pins.body.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

Step 2 of 2 (see docs/migrations.md): only for a release after the one that shipped 0004,
when no running code reads `body` any more.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The release before this one cannot run after it (it reads body): a deploy applies it
# once the previous release has stopped, and only builds that know it stay ready.
contract = "drops pins.body, which releases before the one that shipped 0004 still read"

# Rules of the migration linter (squawk) this revision breaks on purpose, with why.
squawk_acknowledged = {
    "ban-drop-column": "contract step of the body -> story rename: the release before this "
    "one (0004) already reads and writes story only, so nothing running reads body",
    "ban-drop-function": "pins_sync_body_story only served the rename's trigger, dropped "
    "just before it; no client calls it",
}


def upgrade() -> None:
    op.execute("DROP TRIGGER pins_sync_body_story ON pins")
    op.execute("DROP FUNCTION pins_sync_body_story()")
    op.drop_column("pins", "body")


# The downgrade restores 0004's state; its SQL is repeated here rather than imported, so
# that neither revision can change when the other is edited.
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


def downgrade() -> None:
    op.add_column("pins", sa.Column("body", sa.Text(), server_default="", nullable=False))
    op.execute(SYNC_FUNCTION)
    op.execute(
        "CREATE TRIGGER pins_sync_body_story BEFORE INSERT OR UPDATE ON pins "
        "FOR EACH ROW EXECUTE FUNCTION pins_sync_body_story()"
    )
    op.execute("UPDATE pins SET body = story WHERE body IS DISTINCT FROM story")
