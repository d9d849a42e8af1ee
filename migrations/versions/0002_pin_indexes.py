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


def upgrade() -> None:
    op.create_index("ix_pins_tags", "pins", ["tags"], postgresql_using="gin")
    op.create_index("ix_pins_status_created_at", "pins", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_pins_status_created_at", table_name="pins")
    op.drop_index("ix_pins_tags", table_name="pins")
