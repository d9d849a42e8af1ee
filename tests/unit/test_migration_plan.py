"""What the migrator plans to do, decided without a database (lorepin_cms.migrator.planning)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from lorepin_cms.exit_codes import ExitCode
from lorepin_cms.migrator import BadInput, Refused
from lorepin_cms.migrator.planning import (
    Changed,
    ChecksumReview,
    RevisionFile,
    Step,
    Target,
    applied,
    downgrade,
    held_back,
    resolve,
    review_checksums,
    upgrade,
)
from tests.conftest import ROOT
from tests.integration.migration_helpers import add_revision, copy_migrations

SCRIPT = ScriptDirectory(str(ROOT / "migrations"))
TITLES = {
    "0001": "Create the pins table.",
    "0002": "Index pins by tag (GIN) and by status and age, for the list filters.",
    "0003": "Add pins.slug, derived from the title, and backfill it in batches (a data migration).",
    "0004": "Expand: start renaming pins.body to pins.story without downtime.",
    "0005": "Contract: finish the body -> story rename by dropping pins.body.",
    "0006": "Add pins.place_name: the name of the place, from the geocoder or the author.",
    "0007": "Add the activity table: the CMS's privacy-first record of its visitors' requests.",
    "0008": "Add cms_users and api_tokens: who may change content, and the tokens they sign in "
    "with.",
}


def up(from_rev: str | None, to_rev: str) -> Step:
    return Step(direction="upgrade", from_rev=from_rev, to_rev=to_rev, title=TITLES[to_rev])


def down(from_rev: str, to_rev: str | None) -> Step:
    return Step(direction="downgrade", from_rev=from_rev, to_rev=to_rev, title=TITLES[from_rev])


def test_titles_are_the_first_docstring_lines() -> None:
    # Guards the table above: the titles come from the revision files themselves.
    docs = {r: SCRIPT.get_revision(r) for r in TITLES}
    assert {r: s.doc.splitlines()[0] for r, s in docs.items() if s} == TITLES


@pytest.mark.parametrize(
    ("name", "revision"),
    [("head", "0008"), ("heads", "0008"), ("base", None), ("0003", "0003")],
)
def test_targets_resolve_to_revisions(name: str, revision: str | None) -> None:
    assert resolve(SCRIPT, name) == Target(name=name, revision=revision)


@pytest.mark.parametrize("name", ["nope", "0", "+1"])
def test_an_unknown_target_is_refused(name: str) -> None:
    with pytest.raises(BadInput, match=f"^unknown revision '{re.escape(name)}'"):
        resolve(SCRIPT, name)


@pytest.mark.parametrize(
    ("current", "target", "steps"),
    [
        (None, "head", [up(None, "0001"), *(up(f"000{i}", f"000{i + 1}") for i in range(1, 8))]),
        ("0003", "0005", [up("0003", "0004"), up("0004", "0005")]),
        ("0005", "head", [up("0005", "0006"), up("0006", "0007"), up("0007", "0008")]),
        ("0007", "head", [up("0007", "0008")]),
        ("0008", "head", []),
        (None, "base", []),
    ],
)
def test_upgrade_plans_one_step_per_revision_oldest_first(
    current: str | None, target: str, steps: list[Step]
) -> None:
    plan = upgrade(SCRIPT, current, resolve(SCRIPT, target))
    assert plan.direction == "upgrade" and plan.current == current
    assert list(plan.steps) == steps
    assert [s.alembic_target for s in plan.steps] == [s.to_rev for s in steps]


HELD = " (contract revisions up to 0008 wait until the previous release has stopped)"


@pytest.mark.parametrize(
    ("current", "reached", "held"),
    [
        ("0003", "0004", HELD),
        ("0004", "0004", HELD),
        ("0005", "0008", ""),
    ],
)
def test_an_expand_only_upgrade_stops_before_the_first_contract_revision(
    current: str, reached: str, held: str
) -> None:
    plan = upgrade(SCRIPT, current, resolve(SCRIPT, "expand"))  # 0005 is a contract step
    assert (plan.steps[-1].to_rev if plan.steps else current) == reached
    assert held_back(SCRIPT, plan, current) == held


@pytest.mark.parametrize(("current", "target"), [("0005", "0003"), ("0003", "base")])
def test_an_upgrade_target_below_the_database_is_refused(current: str, target: str) -> None:
    with pytest.raises(
        BadInput,
        match=rf"^{target} is not ahead of the database \({current}\); use downgrade",
    ):
        upgrade(SCRIPT, current, resolve(SCRIPT, target))


@pytest.mark.parametrize(
    ("current", "target", "steps"),
    [
        ("0006", "0003", [down("0006", "0005"), down("0005", "0004"), down("0004", "0003")]),
        ("0002", "base", [down("0002", "0001"), down("0001", None)]),
        ("0003", "0003", []),
        (None, "base", []),
    ],
)
def test_downgrade_plans_one_step_per_revision_newest_first(
    current: str | None, target: str, steps: list[Step]
) -> None:
    plan = downgrade(SCRIPT, current, resolve(SCRIPT, target))
    assert plan.direction == "downgrade" and list(plan.steps) == steps
    assert [s.revision for s in plan.steps] == [s.from_rev for s in steps]
    assert [s.alembic_target for s in plan.steps] == [s.to_rev or "base" for s in steps]


def test_a_downgrade_target_above_the_database_is_refused() -> None:
    with pytest.raises(BadInput, match=r"^0005 is not below the database's revision 0003$"):
        downgrade(SCRIPT, "0003", resolve(SCRIPT, "0005"))


def test_applied_revisions_are_listed_newest_first() -> None:
    assert applied(SCRIPT, "0003") == ["0003", "0002", "0001"]
    assert applied(SCRIPT, None) == []


def test_a_database_revision_the_code_does_not_have_is_refused() -> None:
    with pytest.raises(Refused, match=r"^the database is at revision 0099, which these"):
        applied(SCRIPT, "0099")
    with pytest.raises(Refused, match=r"^the database is at revision 0099, which these"):
        downgrade(SCRIPT, "0099", resolve(SCRIPT, "0003"))
    with pytest.raises(Refused, match=r"^the database is at revision 0099, which these"):
        upgrade(SCRIPT, "0099", resolve(SCRIPT, "head"))


def test_two_heads_are_refused_as_a_target_until_merged(tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(migrations, "0099", "pass", down_revision="0005")
    script = ScriptDirectory(str(migrations))
    with pytest.raises(Refused, match=r"^the history has 2 heads \(.*\): merge them"):
        resolve(script, "head")
    assert resolve(script, "0099") == Target(name="0099", revision="0099")


def test_stepping_down_through_a_merge_is_refused(tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path)
    add_revision(migrations, "0098", "pass", down_revision="0005")
    add_revision(migrations, "0099", "pass", extra='down_revision = ("0006", "0098")  # a merge')
    script = ScriptDirectory(str(migrations))
    with pytest.raises(BadInput, match=r"^cannot step down through merge revision 0099"):
        downgrade(script, "0099", resolve(script, "0005"))


# -- checksums ------------------------------------------------------------------------


def file(revision: str, sha256: str) -> RevisionFile:
    return RevisionFile(revision=revision, filename=f"{revision}_x.py", sha256=sha256)


def test_checksum_review_records_new_accepts_named_and_refuses_other_changes() -> None:
    files = [file("0001", "aaa"), file("0002", "bbb"), file("0003", "ccc"), file("0004", "ddd")]
    recorded = {"0001": "aaa", "0002": "old-b", "0003": "old-c"}
    assert review_checksums(files, recorded, accepted=["0002"]) == ChecksumReview(
        record=(file("0004", "ddd"),),
        accept=(Changed(file=file("0002", "bbb"), recorded="old-b"),),
        refuse=(Changed(file=file("0003", "ccc"), recorded="old-c"),),
    )


def test_an_unchanged_history_needs_nothing() -> None:
    files = [file("0001", "aaa")]
    assert review_checksums(files, {"0001": "aaa"}, accepted=["0001"]) == ChecksumReview(
        record=(), accept=(), refuse=()
    )


def test_accepting_a_revision_that_is_not_applied_is_refused() -> None:
    with pytest.raises(BadInput, match=r"^--accept-changed 9999: not a revision applied"):
        review_checksums([file("0001", "aaa")], {"0001": "aaa"}, accepted=["9999"])


def test_a_change_describes_both_checksums_shortly() -> None:
    changed = Changed(file=file("0003", "c" * 64), recorded="b" * 64)
    assert changed.describe() == f"sha256 {'b' * 12} -> {'c' * 12}"


def test_errors_carry_their_exit_codes() -> None:
    assert (BadInput.exit_code, Refused.exit_code) == (ExitCode.BAD_INPUT, ExitCode.REFUSED)
