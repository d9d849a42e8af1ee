"""Incidents as data: ids as people type them, the postmortem's timeline and its draft."""

from __future__ import annotations

import pytest

from lorepin_tasks.plans import incident as plan

INCIDENT = {
    "id": 7,
    "title": "CmsDown: No CMS colour is running",
    "classification": "availability",
    "severity": "critical",
    "priority": "P1",
    "status": "resolved",
    "opened_at": "2026-12-01T10:00:30+00:00",
    "resolved_at": "2026-12-01T10:05:00+00:00",
    "acknowledged_by": "ana",
    "alerts": [{"labels": {"alertname": "CmsDown"}}],
}
EVENTS = [
    {"at": "2026-12-01T10:00:30+00:00", "kind": "opened", "who": "alertmanager",
     "detail": {"alerts": ["CmsDown"], "began": {"CmsDown": "2026-12-01T10:00:00Z"}}},
    {"at": "2026-12-01T10:05:00+00:00", "kind": "resolved", "who": "alertmanager",
     "detail": {"alerts": ["CmsDown"], "ended": {"CmsDown": "2026-12-01T10:04:40Z"},
                "began": {"CmsDown": "2026-12-01T10:00:00Z"}}},
    {"at": "2026-12-01T10:02:00+00:00", "kind": "note", "who": "ana",
     "detail": {"text": "rolling\nback \x1b[31m|"}},
]  # fmt: skip
TRAIL = [
    {"at": "2026-12-01T08:00:00+00:00", "action": "deploy", "version": "1.0.0", "who": "bo",
     "outcome": "succeeded"},  # two hours before: not in the window
    {"at": "2026-12-01T09:58:00+00:00", "action": "deploy", "version": "1.1.0", "who": "bo",
     "outcome": "succeeded"},
    {"at": "2026-12-01T10:03:00+00:00", "action": "rollback", "version": "1.0.0", "who": "ana",
     "outcome": "succeeded"},
    {"at": "2026-12-01T10:03:30+00:00", "action": "approve", "who": "cy", "outcome": "ok"},
]  # fmt: skip


@pytest.mark.parametrize(("text", "number"), [("12", 12), ("INC-12", 12), ("#3", 3), ("inc-4", 4)])
def test_incident_ids_as_people_type_them(text: str, number: int) -> None:
    assert plan.incident_id(text) == number


@pytest.mark.parametrize(
    "text", ["", "0", "-1", "INC-", "12a", "1" * 30, "12;DROP", "\u00b2", "\u0661"]
)
def test_anything_else_is_no_incident_id(text: str) -> None:
    with pytest.raises(ValueError, match="invalid incident id"):
        plan.incident_id(text)


def test_the_timeline_holds_the_trouble_what_people_did_and_nothing_else_in_order() -> None:
    rows = [what for _, what in plan.timeline(INCIDENT, EVENTS, TRAIL)]
    assert rows == [
        "deploy 1.1.0 by bo: succeeded",
        "CmsDown began (Prometheus)",
        "incident opened (alertmanager): CmsDown",
        "incident note (ana): rolling back [31m|",
        "rollback 1.0.0 by ana: succeeded",
        "CmsDown ended (Prometheus)",
        "incident resolved (alertmanager): CmsDown",
    ]


def test_a_postmortem_has_the_facts_and_says_draft_only_when_it_is_one() -> None:
    final = plan.postmortem("production", INCIDENT, EVENTS, TRAIL, draft=False)
    assert final.startswith("# Postmortem: INC-7 CmsDown")
    assert "- Priority: P1 (critical); classification: availability" in final
    assert "(270 s)" in final and "DRAFT" not in final
    assert "| 2026-12-01 10:03:00 | rollback 1.0.0 by ana: succeeded |" in final
    for section in ("## Impact", "## Root cause", "## What went well", "## Preventive actions"):
        assert section in final
    draft = plan.postmortem("production", {**INCIDENT, "resolved_at": None}, EVENTS, TRAIL,
                            draft=True)  # fmt: skip
    assert "> DRAFT: the incident is not resolved yet." in draft and "still open" in draft


def test_a_written_postmortem_is_replaced_only_while_nobody_has_written_in_it() -> None:
    text = plan.postmortem("production", INCIDENT, EVENTS, TRAIL, draft=False)
    assert plan.untouched(text)
    assert not plan.untouched(text.replace("## Root cause\n", "## Root cause\nA full disk.\n"))
    assert not plan.untouched(text.replace("- \n", "- the alert was quick\n", 1))
    assert not plan.untouched("# my own notes\n")


def test_old_receivers_one_time_per_event_still_reads() -> None:
    events = [{"at": "2026-12-01T10:00:30+00:00", "kind": "opened", "who": "alertmanager",
               "detail": {"alerts": ["CmsDown"], "began": "2026-12-01T10:00:00Z"}}]  # fmt: skip
    rows = [what for _, what in plan.timeline(INCIDENT, events, [])]
    assert rows == ["CmsDown began (Prometheus)", "incident opened (alertmanager): CmsDown"]
