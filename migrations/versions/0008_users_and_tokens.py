"""Add cms_users and api_tokens: who may change content, and the tokens they sign in with.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Expand-only: two new tables that releases before this one never touch (they take no
token and allow every write, as they always did). A token is kept as the SHA-256 of its
secret, never the secret itself; its `key` is the public half that names it in lists,
logs and revocations.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = "role IN ('viewer', 'editor', 'admin')"


def upgrade() -> None:
    op.create_table(
        "cms_users",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(ROLES, name="ck_cms_users_role_valid"),
        sa.CheckConstraint("name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'", name="ck_cms_users_name_valid"),
        sa.PrimaryKeyConstraint("id", name="pk_cms_users"),
        sa.UniqueConstraint("name", name="uq_cms_users_name"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("secret_sha256", sa.Text(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(ROLES, name="ck_api_tokens_role_valid"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["cms_users.id"], name="fk_api_tokens_user_id_cms_users"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("key", name="uq_api_tokens_key"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_table("cms_users")
