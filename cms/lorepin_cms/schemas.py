"""Request and response shapes of the pins API, with their validation rules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

Status = Literal["draft", "published"]

# Trimmed from titles, place names and tags, and not enough to make a title or a place
# name: every code point that Python (str.isspace), JavaScript (\s) or Rust
# (char::is_whitespace) calls whitespace. Spelled out, so that the schema's patterns mean
# the same to every client's regex engine, and to ours.
_SPACE_RANGES = (
    (0x09, 0x0D),  # tab, line feed, vertical tab, form feed, carriage return
    (0x1C, 0x20),  # the information separators (whitespace to Python only), space
    (0x85, 0x85),  # next line
    (0xA0, 0xA0),  # no-break space
    (0x1680, 0x1680),  # ogham space mark
    (0x2000, 0x200A),  # en quad ... hair space
    (0x2028, 0x2029),  # line and paragraph separators
    (0x202F, 0x202F),  # narrow no-break space
    (0x205F, 0x205F),  # medium mathematical space
    (0x3000, 0x3000),  # ideographic space
    (0xFEFF, 0xFEFF),  # zero width no-break space (whitespace to JavaScript only)
)
SPACES = "".join(chr(c) for lo, hi in _SPACE_RANGES for c in range(lo, hi + 1))
_SPACE = "".join(  # the same set inside a regex class
    f"\\u{lo:04X}" if lo == hi else f"\\u{lo:04X}-\\u{hi:04X}" for lo, hi in _SPACE_RANGES
)

# PostgreSQL text cannot hold NUL. (Nor lone surrogates, which no constrained string of
# pydantic's lets through.)
NO_NUL = r"^[^\u0000]*$"
# Text with at least one character that is not whitespace, and no NUL.
SOME_TEXT = rf"^[{_SPACE}]*[^\u0000{_SPACE}][^\u0000]*$"
TAG = rf"^[{_SPACE}]*[A-Za-z0-9][A-Za-z0-9_-]*[{_SPACE}]*$"
# What a pattern means, said to people instead of the pattern itself.
PATTERN_MESSAGES = {
    NO_NUL: "may not contain NUL (\\u0000)",
    SOME_TEXT: "needs a character that is not whitespace, and may not contain NUL (\\u0000)",
    TAG: "letters, digits, '_' and '-', starting with a letter or digit",
}


def _trim(value: str) -> str:
    return value.strip(SPACES)


def _tag(value: str) -> str:
    return value.strip(SPACES).lower()


def _unique(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


# Lengths and patterns apply to the text as sent (so the schema states them exactly);
# what is stored is trimmed, lower-cased for tags.
Title = Annotated[
    str, Field(min_length=1, max_length=200, pattern=SOME_TEXT), AfterValidator(_trim)
]
PlaceName = Annotated[
    str, Field(min_length=1, max_length=200, pattern=SOME_TEXT), AfterValidator(_trim)
]
Tag = Annotated[str, Field(min_length=1, max_length=40, pattern=TAG), AfterValidator(_tag)]
Tags = Annotated[list[Tag], Field(max_length=20), AfterValidator(_unique)]
Body = Annotated[str, Field(max_length=20_000, pattern=NO_NUL)]
# strict: a JSON number, as the schema says; never true/false or a numeric string.
Latitude = Annotated[float, Field(strict=True, ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(strict=True, ge=-180, le=180, allow_inf_nan=False)]


class PinCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title
    body: Body = ""
    place_name: PlaceName | None = None
    latitude: Latitude
    longitude: Longitude
    tags: Tags = Field(default_factory=list)
    status: Status = "draft"


# Omitted means "unchanged"; null is refused, so the schema does not offer it.
Unset = SkipJsonSchema[None]


def _partial(schema: dict[str, Any]) -> None:
    schema["minProperties"] = 1  # an empty update is refused
    for field in schema["properties"].values():
        field.pop("default", None)  # None stands for "omitted", never a value to send


class PinUpdate(BaseModel):
    """A partial update: only the fields sent change; none of them may be null."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_partial)

    title: Title | Unset = None
    body: Body | Unset = None
    place_name: PlaceName | Unset = None
    latitude: Latitude | Unset = None
    longitude: Longitude | Unset = None
    tags: Tags | Unset = None
    status: Status | Unset = None

    @field_validator("*")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may not be null")
        return value


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


class ErrorOut(BaseModel):
    """Every error: what went wrong; for an invalid request, which fields and why."""

    error: str
    detail: Any = None


class Health(BaseModel):
    status: Literal["alive"]


class Ready(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    status: Literal["ready"]
    schema_: str | None = Field(alias="schema")
    note: str | None = None  # why a schema other than this build's head will do


class NotReady(BaseModel):
    """The database answers but its schema is not the one this build expects."""

    model_config = ConfigDict(populate_by_name=True)

    status: Literal["schema mismatch"]
    schema_: str | None = Field(alias="schema")
    expected: str | None
    reason: str | None = None


class VersionOut(BaseModel):
    version: str
    git_revision: str
    schema_revision: str | None
    schema_expected: str | None
