"""The audit trail's hash chain (domain/audit.py): sealing, and catching tampering."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lorepin_tasks.domain import audit
from lorepin_tasks.plans import deploy as plan


def trail(length: int = 4) -> list[dict[str, Any]]:
    """A sealed trail of deploys, as `Trail.append` stores it (seq from 1)."""
    records, previous = [], audit.GENESIS
    for seq in range(1, length + 1):
        sealed = audit.seal(
            previous,
            plan.record(
                seq=seq,
                at=f"2024-01-15T08:{seq:02}:00+00:00",
                who="zoë@example.com on box",
                action="deploy",
                env="staging",
                version=f"1.{seq}.0",
                outcome="ok",
                detail={"from": f"1.{seq - 1}.0", "colour": "green"},
                steps=[plan.Step(name="switching the proxy", seconds=0.25, ok=True)],
            ),
        )
        records.append(sealed)
        previous = sealed["hash"]
    return records


def edited(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**record, **changes}


def test_sealing_chains_each_record_to_the_one_before() -> None:
    records = trail(3)
    assert [r["prev"] for r in records] == [audit.GENESIS, records[0]["hash"], records[1]["hash"]]
    assert len({r["hash"] for r in records}) == 3
    assert records[1]["version"] == "1.2.0"  # the record's own fields are kept


def test_an_intact_trail_has_no_problems() -> None:
    assert audit.verify(trail()) == []


def test_a_trail_read_back_from_json_is_still_intact() -> None:
    """What the trail stores (JSON, keys sorted) and reads back verifies the same."""
    stored = [json.loads(json.dumps(r, sort_keys=True)) for r in trail()]
    assert audit.verify(stored) == []


def test_an_empty_trail_is_fine() -> None:
    assert audit.verify([]) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("at", "2024-01-15T09:00:00+00:00"),
        ("who", "mallory@example.com on box"),
        ("action", "rollback"),
        ("env", "production"),
        ("version", "6.6.6"),
        ("outcome", "failed"),
        ("detail", {"from": "1.1.0", "colour": "blue"}),
        ("steps", []),
    ],
)
def test_editing_a_field_of_a_middle_record_names_it(field: str, value: Any) -> None:
    records = trail()
    records[1] = edited(records[1], **{field: value})
    assert audit.verify(records) == ["record 2: its content does not match its hash (edited)"]


def test_an_edited_record_sealed_again_breaks_the_next_one() -> None:
    records = trail()
    records[1] = audit.seal(records[1]["prev"], edited(records[1], outcome="failed"))
    assert audit.verify(records) == [
        "record 3: does not follow the record before it (removed or reordered)"
    ]


def test_removing_a_middle_record_names_the_one_after_the_gap() -> None:
    records = trail()
    del records[1]
    assert audit.verify(records) == [
        "record 3: expected record 2 here (removed or reordered)",
        "record 3: does not follow the record before it (removed or reordered)",
    ]


def test_removing_the_first_record_is_caught() -> None:
    assert audit.verify(trail()[1:]) == [
        "record 2: does not follow the record before it (removed or reordered)"
    ]


def test_reordering_names_the_first_record_out_of_place() -> None:
    records = trail()
    records[1], records[2] = records[2], records[1]
    problems = audit.verify(records)
    assert problems[:2] == [
        "record 3: expected record 2 here (removed or reordered)",
        "record 3: does not follow the record before it (removed or reordered)",
    ]
    assert not any(p.startswith("record 1:") for p in problems)
    assert not any("edited" in p for p in problems)  # each record is as it was sealed


def test_editing_the_first_records_hash_is_caught() -> None:
    records = trail()
    records[0] = edited(records[0], hash="f" * 64)
    assert audit.verify(records) == [
        "record 1: its content does not match its hash (edited)",
        "record 2: does not follow the record before it (removed or reordered)",
    ]


def test_a_sequence_number_edited_to_text_is_reported_not_a_crash() -> None:
    records = trail()
    records[1] = edited(records[1], seq="two")
    problems = audit.verify(records)
    assert problems[:2] == [
        "record two: expected record 2 here (removed or reordered)",
        "record two: its content does not match its hash (edited)",
    ]
