"""Branch names -> environment names, expiry and pruning rules (no Docker)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import feature as plan
from lorepin_tasks.settings import parse_ttl

COMPOSE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
CHECKOUT = "0123456789abcdef"
branches = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=250
).filter(lambda b: b.strip() == b)


@settings(max_examples=500, deadline=None)
@given(st.lists(branches, min_size=2, max_size=30, unique=True))
def test_names_are_valid_distinct_and_stable(names: list[str]) -> None:
    projects = [plan.name_for(b, CHECKOUT).project for b in names]
    for branch, project in zip(names, projects, strict=True):
        assert COMPOSE_NAME.match(project), project
        assert len(project) + plan.LONGEST_SUFFIX <= plan.MAX_NAME
        assert plan.name_for(branch, CHECKOUT).project == project  # stable
        assert re.fullmatch(
            r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", plan.name_for(branch, CHECKOUT).image_tag
        )
    assert len(set(projects)) == len(projects)  # distinct


@pytest.mark.parametrize(
    "group",
    [
        ["feature/Foo", "feature/foo", "feature-foo", "Feature_Foo", "feature--foo"],
        ["x" * 200, "x" * 201, "x" * 199 + "y"],
        ["café", "cafe", "caf\u00e9", "cafe\u0301"],
        ["日本語", "中文", "한국어"],
    ],
)
def test_near_collisions_stay_apart(group: list[str]) -> None:
    projects = {plan.name_for(b, CHECKOUT).project for b in group}
    assert len(projects) == len(set(group))


def test_readable_names() -> None:
    assert plan.name_for("feature/Map-Search", CHECKOUT).project.startswith(
        "lorepin-f-feature-map-search-"
    )
    assert (
        plan.name_for("日本語", CHECKOUT).project
        == f"lorepin-f-{plan.name_for('日本語', CHECKOUT).digest}"
    )
    long = plan.name_for("a" * 200, CHECKOUT).project
    assert len(long) == len("lorepin-f-") + plan.SLUG_MAX + 1 + plan.HASH_LENGTH


@pytest.mark.parametrize("bad", ["", " leading", "trailing "])
def test_blank_or_padded_branches_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid branch name"):
        plan.name_for(bad, CHECKOUT)


def test_the_same_branch_in_two_checkouts_gets_two_environments() -> None:
    mine, theirs = plan.name_for("feat/x", "aaaa"), plan.name_for("feat/x", "bbbb")
    assert mine.project != theirs.project and mine.image_tag != theirs.image_tag
    assert mine.seed == theirs.seed  # the same branch still gets the same data


def test_find_asks_only_for_this_checkouts_environments() -> None:
    containers, volumes = plan.find("c0ffee")
    for query in (containers, volumes):
        assert query[-4:] == [
            "--filter",
            "label=dev.lorepin.kind=feature",
            "--filter",
            "label=dev.lorepin.checkout=c0ffee",
        ]


def test_ttl() -> None:
    assert parse_ttl("72h") == timedelta(hours=72)
    assert parse_ttl("90m") == timedelta(minutes=90)
    assert parse_ttl("7d") == timedelta(days=7)
    assert parse_ttl("30s") == timedelta(seconds=30)
    for bad in ("", "0h", "1w", "-1h", "10", "h", "99999d"):
        with pytest.raises(ConfigError, match="invalid ttl"):
            parse_ttl(bad)


def test_labels_survive_compose_and_round_trip() -> None:
    created = datetime(2026, 11, 25, 10, 0, 5, tzinfo=UTC)
    values = plan.labels(plan.name_for("feat/x", CHECKOUT), created, created + timedelta(hours=72))
    assert values == {
        "LOREPIN_BRANCH": "feat/x",
        "LOREPIN_CREATED_AT": "20261125T100005Z",
        "LOREPIN_EXPIRES_AT": "20261128T100005Z",
    }
    assert plan.parse_stamp(values["LOREPIN_CREATED_AT"]) == created
    assert plan.parse_stamp("garbage") is None


def found(expires: datetime | None) -> plan.Found:
    return plan.Found(
        project="p",
        branch="b",
        created=None,
        expires=expires,
        url=None,
        health="healthy",
        containers=4,
    )


def test_prune_reasons() -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    later = now + timedelta(hours=1)
    assert plan.prune_reason(found(later), now=now, branch_exists=True, merged=False) is None
    assert plan.prune_reason(found(now), now=now, branch_exists=True, merged=False) == (
        "expired 2026-11-25T00:00+00:00"
    )
    assert plan.prune_reason(found(later), now=now, branch_exists=False, merged=False) == (
        "branch deleted"
    )
    assert plan.prune_reason(found(later), now=now, branch_exists=True, merged=True) == (
        "branch merged"
    )
