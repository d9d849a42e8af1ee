"""Add the activity table: the CMS's privacy-first record of its visitors' requests.

Route template, method, status, latency and a random session id; never addresses or bodies.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Expand-only: a new table that releases before this one never touch. Its indexes are
built with it, on no rows, inside the revision's transaction.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
squawk_acknowledged = {
    "prefer-bigint-over-smallint": "activity.status holds an HTTP status (100 to 599), never more"
}


def upgrade() -> None:
    op.create_table(
        "activity",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("session_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("route", sa.Text(), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("duration_ms", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_activity"),
    )
    op.create_index("ix_activity_at", "activity", ["at"])
    op.create_index("ix_activity_session_id_at", "activity", ["session_id", "at"])


def downgrade() -> None:
    op.drop_table("activity")
