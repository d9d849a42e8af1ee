"""Validation rules of the pins API, without a database."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lorepin_cms.schemas import PinCreate, PinUpdate


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
