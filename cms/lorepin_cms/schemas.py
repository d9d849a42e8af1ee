"""Request and response shapes of the pins API, with their validation rules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Status = Literal["draft", "published"]
# PostgreSQL text cannot hold NUL (lone surrogates, the other thing it cannot hold, never
# pass pydantic's constrained strings).
NO_NUL = r"^[^\u0000]*$"
Tag = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        min_length=1,
        max_length=40,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
    ),
]
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)
]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Body = Annotated[str, Field(max_length=20_000, pattern=NO_NUL)]
Tags = Annotated[list[Tag], Field(max_length=20)]


def _unique(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


PlaceName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)
]


class PinCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title
    body: Body = ""
    place_name: PlaceName | None = None
    latitude: Latitude
    longitude: Longitude
    tags: Tags = Field(default_factory=list)
    status: Status = "draft"

    _dedupe = field_validator("tags")(_unique)


class PinUpdate(BaseModel):
    """A partial update: only the fields sent change; none of them may be null."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    body: Body | None = None
    place_name: PlaceName | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    tags: Tags | None = None
    status: Status | None = None

    @field_validator("*")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may not be null")
        return value

    _dedupe = field_validator("tags")(_unique)


class PinOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    slug: str | None
    body: str
    place_name: str | None
    latitude: float
    longitude: float
    tags: list[str]
    status: Status
    created_at: datetime
    updated_at: datetime


class PinPage(BaseModel):
    items: list[PinOut]
    total: int
    limit: int
    offset: int
