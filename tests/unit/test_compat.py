"""Which schemas a CMS build can run on during a blue-green deploy (no database)."""

from __future__ import annotations

import pytest

from lorepin_cms.compat import Revision, verdict

# This build: 0001 <- 0002 <- 0003(contract) <- 0004(contract); head 0004.
MINE = {
    "0001": Revision(down=None, contract=False),
    "0002": Revision(down="0001", contract=False),
    "0003": Revision(down="0002", contract=True),
    "0004": Revision(down="0003", contract=True),
}
# What a newer release applied on top: 0005 (expand), 0006 (contract).
APPLIED = {
    **MINE,
    "0005": Revision(down="0004", contract=False),
    "0006": Revision(down="0005", contract=True),
    "0099": Revision(down="0042", contract=False),
}


@pytest.mark.parametrize(
    ("current", "ready", "reason"),
    [
        ("0004", True, "at head"),
        ("0002", True, "contract revision(s) 0004, 0003 not applied yet"),
        ("0003", True, "contract revision(s) 0004 not applied yet"),
        ("0001", False, "schema behind this build: 0002 is missing"),
        (None, False, "schema behind this build: 0001 is missing"),
        ("0005", True, "expand revision(s) 0005 ahead"),
        ("0006", False, "schema ahead by contract revision 0006: this build cannot run on it"),
        ("0099", False, "schema at 0099, unknown to this build"),
        ("0777", False, "schema at 0777, unknown to this build"),
    ],
)
def test_a_build_runs_beside_expand_revisions_ahead_and_its_own_contracts_behind(
    current: str | None, ready: bool, reason: str
) -> None:
    judged = verdict(current, "0004", MINE, APPLIED)
    assert (judged.ready, judged.reason) == (ready, reason)


def test_without_a_ledger_only_the_own_history_counts() -> None:
    assert not verdict("0005", "0004", MINE, {}).ready
    assert verdict("0004", "0004", MINE, {}).ready
