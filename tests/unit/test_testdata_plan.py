"""`invoke data.generate`'s rows: deterministic, valid for the CMS's constraints, varied,
and marked as test data."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from lorepin_cms.models import slugify
from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import testdata as plan

POOLS = plan.pools(7)
USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # the CMS's rule (revision 0008)


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m[1], m[1]), value)


def test_the_same_seed_gives_the_same_rows_and_another_seed_others() -> None:
    first = list(plan.pin_rows(7, 500, POOLS))
    assert first == list(plan.pin_rows(7, 500, plan.pools(7)))
    assert first != list(plan.pin_rows(8, 500, plan.pools(8)))
    assert list(plan.user_rows(7, 50, POOLS)) == list(plan.user_rows(7, 50, plan.pools(7)))


def test_pins_meet_the_cms_constraints_and_look_real() -> None:
    rows = [line.rstrip("\n").split("\t") for line in plan.pin_rows(3, 5000, POOLS)]
    assert {len(r) for r in rows} == {10}
    titles = [unescape(r[0]) for r in rows]
    assert all(0 < len(t) <= 200 for t in titles)
    assert all(r[1] == slugify(t) for r, t in zip(rows, titles, strict=True))
    assert all(-90 <= float(r[4]) <= 90 and -180 <= float(r[5]) <= 180 for r in rows)
    towns = {(name, lat, lon) for lat, lon, name in POOLS.places}
    near = [  # within about 5 km of one of Faker's real towns, named after it
        any(abs(float(r[4]) - lat) <= 0.05 and abs(float(r[5]) - lon) <= 0.05
            for name, lat, lon in towns if name == unescape(r[3]))
        for r in rows[:200]
    ]  # fmt: skip
    assert all(near)
    assert all(r[6].endswith(f",{plan.MARK},{plan.MARK}-3}}") for r in rows)  # and its seed
    statuses = Counter(r[7] for r in rows)
    assert set(statuses) == {"published", "draft"} and 0.7 < statuses["published"] / 5000 < 0.8
    assert any(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", t) for t in titles)  # Japanese
    assert any(re.search(r"[äöüßéèçñã]", t) for t in titles)  # European languages
    assert len(set(titles)) > 2000


def test_users_are_unique_marked_and_valid_names_with_weighted_roles() -> None:
    rows = [line.rstrip("\n").split("\t") for line in plan.user_rows(7, 3000, POOLS)]
    names = [name for name, _ in rows]
    assert len(set(names)) == 3000
    assert all(USER_NAME.fullmatch(n) and n.endswith(".td7") for n in names)
    roles = Counter(role for _, role in rows)
    assert set(roles) == {"viewer", "editor", "admin"}
    assert roles["viewer"] > roles["editor"] > roles["admin"] > 0


def test_copy_text_format_escapes_what_would_split_a_row() -> None:
    assert plan._escape("a\tb\\c\nd\re") == "a\\tb\\\\c\\nd\\re"


def test_cleanup_removes_only_what_is_marked_and_old_enough() -> None:
    count, statements = plan.cleanup_sql(14 * 86400)
    pins, tokens, users = statements
    assert pins.startswith("DELETE FROM public.pins WHERE tags @> ARRAY['test-data'] AND ")
    assert "created_at < now() - interval '1209600 seconds'" in pins
    assert tokens.startswith("DELETE FROM public.api_tokens WHERE user_id IN (SELECT id FROM ")
    assert users.startswith("DELETE FROM public.cms_users WHERE id IN (SELECT id FROM ")
    for sql in (count, tokens, users):
        assert "name ~ '\\.td[0-9]+$'" in sql or "tags @> ARRAY['test-data']" in sql
    assert all(re.fullmatch(r"[a-z0-9_.-]+\.td7", row.split("\t")[0])
               for row in plan.user_rows(7, 200, POOLS))  # what the pattern finds  # fmt: skip


@pytest.mark.parametrize(
    ("pins", "users", "seed", "error"),
    [
        (-1, 0, 1, "--pins must be between 0 and 10,000,000, not -1"),
        (10_000_001, 0, 1, "--pins must be between"),
        (0, -5, 1, "--users must be between 0 and 1,000,000, not -5"),
        (0, 0, 1, "say what to generate"),
        (1, 0, -1, "--seed must be between 0 and"),
        ("abc", 0, 1, "--pins must be a whole number, got 'abc'"),
        ("1e3", 0, 1, "--pins must be a whole number, got '1e3'"),
        (1, "", 1, "--users must be a whole number, got ''"),
        (1, 0, "1.5", "--seed must be a whole number, got '1.5'"),
    ],
)
def test_bad_counts_are_one_line(
    pins: int | str, users: int | str, seed: int | str, error: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        plan.counts(pins, users, seed)


def test_the_projects_rules_cover_every_column_of_the_cms_models() -> None:
    """A revision that adds a personal column fails here first, naming it, until
    staging/anonymize.yml has a rule for it."""
    from lorepin_cms.models import Base
    from lorepin_tasks.plans import anonymize
    from tests.conftest import ROOT

    rules = anonymize.load(ROOT / anonymize.RULES_FILE)
    columns = [(t.name, c.name) for t in Base.metadata.sorted_tables for c in t.columns]
    assert anonymize.unruled(rules, columns) == []
    assert anonymize.unknown(rules, columns) == []
    assert anonymize.unruled(rules, [*columns, ("pins", "author_email")]) == ["pins.author_email"]
