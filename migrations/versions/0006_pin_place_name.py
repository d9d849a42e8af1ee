"""Add pins.place_name: the name of the place, from the geocoder or the author.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25

Expand-only: nullable, no default, no rewrite; pins created before it have no name.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pins", sa.Column("place_name", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("pins", "place_name")
