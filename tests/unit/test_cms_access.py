"""The CMS's access rules (lorepin_cms.access) and their SQL for the toolkit's tasks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lorepin_cms import access
from lorepin_tasks.errors import ConfigError, Refused
from lorepin_tasks.plans import cms_access as plan


def test_a_new_token_has_its_form_a_fresh_secret_and_a_hash_that_is_not_it() -> None:
    tokens = {access.new_token() for _ in range(200)}
    assert len({t for t, _ in tokens}) == len({k for _, k in tokens}) == 200
    for token, key in tokens:
        assert access.TOKEN.fullmatch(token) and token.split("_")[1] == key
        secret = access.secret_of(token)
        assert len(access.digest(secret)) == 64 and secret not in access.digest(secret)


def test_roles_are_ordered_and_a_token_never_outranks_its_user() -> None:
    assert access.at_least("admin", "editor") and access.at_least("editor", "editor")
    assert not access.at_least("viewer", "editor")
    assert access.lesser("admin", "viewer") == access.lesser("viewer", "admin") == "viewer"
    assert plan.token_role("ana", "editor", "") == "editor"
    assert plan.token_role("ana", "editor", "viewer") == "viewer"
    with pytest.raises(
        Refused, match="user 'ana' has the role editor: a token of theirs cannot be admin"
    ):
        plan.token_role("ana", "editor", "admin")


@pytest.mark.parametrize(("text", "days"), [("90d", 90), ("7", 7), ("12w", 84), ("365d", 365)])
def test_lifetimes(text: str, days: int) -> None:
    assert plan.days(text) == days


@pytest.mark.parametrize(
    "text",
    [
        "0d",
        "366d",
        "53w",
        "-1d",
        "1y",
        "",
        "d",
        "1.5d",
        "99999d",
        "²d",
        "①w",
        "\uff13\uff10d",
    ],  # digits int() takes, and not ASCII ones
)
def test_bad_lifetimes_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--expires must be"):
        plan.days(text)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: plan.add_user_sql("Ana Smith", "editor"), "invalid user name 'Ana Smith'"),
        (lambda: plan.add_user_sql("x'; DROP TABLE pins; --", "editor"), "invalid user name"),
        (lambda: plan.add_user_sql("ana", "owner"), "unknown role 'owner'"),
        (lambda: plan.revoke_sql("short"), "invalid token key 'short'"),
        (lambda: plan.token_state_sql("x' OR '1'='1"), "invalid token key"),
    ],
)
def test_values_are_checked_before_they_reach_sql(make: object, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        make()  # type: ignore[operator]


def test_a_whole_token_given_for_a_key_is_refused_without_repeating_it() -> None:
    token, _ = access.new_token()
    with pytest.raises(ConfigError, match="that is a whole token") as refused:
        plan.revoke_sql(token)
    assert access.secret_of(token) not in str(refused.value)


def test_the_token_row_keeps_the_hash_and_quotes_every_value() -> None:
    token, key = access.new_token()
    when = datetime(2027, 3, 1, tzinfo=UTC)
    sql = plan.add_token_sql("ana", "editor", key, access.digest(access.secret_of(token)), when)
    assert access.secret_of(token) not in sql
    assert f"'{key}'" in sql and "'2027-03-01T00:00:00+00:00'::timestamptz" in sql
    assert sql.endswith("FROM cms_users WHERE name = 'ana'")


def test_listed_tokens_say_their_state_and_the_role_they_really_give() -> None:
    rows = [
        ["AAAAAAAAAAAA", "ana", "admin", "viewer", "2026-12-01T10:00:00Z",
         "2027-03-01T10:00:00Z", "f", "f"],
        ["BBBBBBBBBBBB", "bo", "editor", "editor", "2026-12-01T10:00:00Z",
         "2026-12-02T10:00:00Z", "f", "t"],
        ["CCCCCCCCCCCC", "bo", "editor", "editor", "2026-12-01T10:00:00Z",
         "2027-03-01T10:00:00Z", "t", "f"],
    ]  # fmt: skip
    listed = plan.tokens(rows)
    assert [(t["key"][0], t["role"], t["state"]) for t in listed] == [
        ("A", "viewer", "active"),  # a demoted user's token is demoted with them
        ("B", "editor", "expired"),
        ("C", "editor", "revoked"),
    ]
    table = plan.table(listed).splitlines()
    assert table[0].split() == ["KEY", "USER", "ROLE", "CREATED", "EXPIRES", "STATE"]
    assert len(table) == 4 and plan.table([]) == "no tokens\n"


def test_the_failure_limit_slides_over_a_minute_per_address() -> None:
    limit = access.FailureLimit(3)
    for t in (0.0, 1.0, 2.0):
        assert limit.retry_after("10.0.0.1", t) == 0
        limit.failed("10.0.0.1", t)
    assert limit.retry_after("10.0.0.1", 2.5) == 58  # until the first leaves the window
    assert limit.retry_after("10.0.0.2", 2.5) == 0  # another address is not held back
    assert limit.retry_after("10.0.0.1", 60.5) == 0  # the oldest has left: one more try
