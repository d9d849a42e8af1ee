"""Validation rules of the pins API, without a database."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from lorepin_cms.schemas import SPACES, PinCreate, PinUpdate


def test_tags_are_normalised_and_deduplicated() -> None:
    pin = PinCreate(title=" Bell ", latitude=1, longitude=2, tags=["Sea", "sea", " legend "])
    assert pin.title == "Bell"
    assert pin.tags == ["sea", "legend"]
    assert pin.status == "draft"


@pytest.mark.parametrize(
    "fields",
    [
        {"latitude": 90.5},
        {"latitude": -91},
        {"longitude": 180.01},
        {"latitude": float("nan")},
        {"title": "   "},
        {"title": "x" * 201},
        {"tags": ["has space"]},
        {"tags": [f"t{i}" for i in range(21)]},
        {"status": "archived"},
        {"unexpected": 1},
        {"title": "nul\x00"},  # PostgreSQL text holds neither NUL nor lone surrogates
        {"body": "\x00"},
        {"place_name": "Ys\x00"},
        {"title": "\ud800"},
    ],
)
def test_invalid_pins_are_rejected(fields: dict[str, object]) -> None:
    data: dict[str, object] = {"title": "ok", "latitude": 0, "longitude": 0, **fields}
    with pytest.raises(ValidationError):
        PinCreate.model_validate(data)


def test_update_rejects_explicit_nulls_but_allows_omission() -> None:
    assert PinUpdate.model_validate({"status": "published"}).model_dump(exclude_unset=True) == {
        "status": "published"
    }
    with pytest.raises(ValidationError, match="may not be null"):
        PinUpdate.model_validate({"title": None})


def test_the_update_schema_offers_no_null_and_asks_for_a_field() -> None:
    schema = PinUpdate.model_json_schema()
    assert schema["minProperties"] == 1
    offers_null = [name for name, field in schema["properties"].items() if "null" in str(field)]
    assert offers_null == []


def test_spaces_are_what_python_javascript_or_rust_call_whitespace() -> None:
    python = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    hair_spaces = {chr(c) for c in range(0x2000, 0x200B)}
    javascript = set("\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff") | hair_spaces
    rust = set("\t\n\v\f\r \x85\u00a0\u1680\u2028\u2029\u202f\u205f\u3000") | hair_spaces
    assert set(SPACES) == python | javascript | rust


def schema_accepts(field: dict[str, Any], value: str) -> bool:
    """What a client validating against the published JSON schema concludes."""
    return (
        field.get("minLength", 0) <= len(value) <= field["maxLength"]
        and re.search(field["pattern"], value) is not None
    )


# Unicode text: lone surrogates are not characters, and are refused (see the API tests).
CHARACTERS = st.characters(codec="utf-8")
TEXT = st.text(st.sampled_from(SPACES) | CHARACTERS | st.just("\x00"), max_size=210)


@given(TEXT)
def test_the_schema_accepts_exactly_the_titles_the_api_accepts(title: str) -> None:
    field = PinCreate.model_json_schema()["properties"]["title"]
    try:
        PinCreate(title=title, latitude=0, longitude=0)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == schema_accepts(field, title)


@given(st.text(st.sampled_from(SPACES) | st.sampled_from("aZ09_-") | CHARACTERS, max_size=42))
def test_the_schema_accepts_exactly_the_tags_the_api_accepts(tag: str) -> None:
    field = PinCreate.model_json_schema()["properties"]["tags"]["items"]
    try:
        PinCreate(title="t", latitude=0, longitude=0, tags=[tag])
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == schema_accepts(field, tag)


def test_stored_text_is_trimmed_of_every_kind_of_space() -> None:
    pin = PinCreate(
        title="\u3000The bell\ufeff\x1c", place_name="\u00a0Ys ", latitude=0, longitude=0,
        tags=["\u2003Sea\u2029"],
    )  # fmt: skip
    assert (pin.title, pin.place_name, pin.tags) == ("The bell", "Ys", ["sea"])
