"""Index pins by tag (GIN) and by status and age, for the list filters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# CONCURRENTLY never blocks writers; it cannot run inside a transaction, so this revision
# is the one kind that runs outside one (an interrupted build leaves an INVALID index,
# which IF NOT EXISTS would hide: the downgrade drops it, the upgrade then rebuilds it).


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_pins_tags", "pins", ["tags"], postgresql_using="gin", postgresql_concurrently=True
        )
        op.create_index(
            "ix_pins_status_created_at",
            "pins",
            ["status", "created_at"],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_pins_status_created_at", table_name="pins", postgresql_concurrently=True)
        op.drop_index("ix_pins_tags", table_name="pins", postgresql_concurrently=True)
