"""The CMS's schema as SQLAlchemy models; migrations/ must produce exactly this."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    SmallInteger,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = ("draft", "published")
ROLES = ("viewer", "editor", "admin")  # each may do what the ones before it may


def slugify(title: str) -> str:
    """The pin's slug; must equal SLUG_SQL for the same title (the backfill uses that)."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


SLUG_SQL = "trim(both '-' from regexp_replace(lower(title), '[^a-z0-9]+', '-', 'g'))"

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Pin(Base):
    """A lore story pinned to a place."""

    __tablename__ = "pins"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    # Derived from the title (see slugify); backfilled for old rows by revision 0003.
    slug: Mapped[str | None] = mapped_column(Text)
    # The API's `body` is stored in `story` since the expand/contract rename (0004, 0005).
    body: Mapped[str] = mapped_column("story", Text, server_default="")
    # From the geocoder (LOREPIN_GEOCODER_URL) unless the author names the place.
    place_name: Mapped[str | None] = mapped_column(Text)
    latitude: Mapped[float] = mapped_column(Double)
    longitude: Mapped[float] = mapped_column(Double)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'::text[]"))
    status: Mapped[str] = mapped_column(Text, server_default="draft")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("char_length(title) <= 200", name="title_length"),
        CheckConstraint("latitude BETWEEN -90 AND 90", name="latitude_range"),
        CheckConstraint("longitude BETWEEN -180 AND 180", name="longitude_range"),
        CheckConstraint("status IN ('draft', 'published')", name="status_valid"),
        Index("ix_pins_tags", "tags", postgresql_using="gin"),
        Index("ix_pins_status_created_at", "status", "created_at"),
    )


class Activity(Base):
    """One request of a visitor, privacy-first (lorepin_cms.activity): the route template,
    never the path's values, the body or the address; a random session id from a
    first-party cookie; the user once requests are authenticated. Kept
    LOREPIN_ACTIVITY_RETENTION_DAYS days."""

    __tablename__ = "activity"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    session_id: Mapped[str] = mapped_column(UUID(as_uuid=False))
    user_id: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text)
    route: Mapped[str] = mapped_column(Text)
    status: Mapped[int] = mapped_column(SmallInteger)
    duration_ms: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        Index("ix_activity_at", "at"),  # the reports' windows and the retention's deletes
        Index("ix_activity_session_id_at", "session_id", "at"),  # a session's flow in order
    )


class User(Base):
    """Someone who may read drafts (viewer), change pins (editor) or manage users (admin)."""

    __tablename__ = "cms_users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    role: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'editor', 'admin')", name="role_valid"),
        CheckConstraint("name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'", name="name_valid"),
    )


class ApiToken(Base):
    """A user's API token: `key` names it, only the SHA-256 of its secret is kept. Its role
    is at most its user's (lorepin_cms.access)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    key: Mapped[str] = mapped_column(Text, unique=True)
    secret_sha256: Mapped[str] = mapped_column(Text)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cms_users.id"), index=True)
    role: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint("role IN ('viewer', 'editor', 'admin')", name="role_valid"),)
