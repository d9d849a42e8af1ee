"""Whether this build of the CMS can run on the schema its database is at.

During a blue-green deploy two releases share one database. The old one keeps serving
while the new release's expand revisions are applied; the new one starts before the
contract revisions it ships are applied (they run once the old release has stopped). So
a build is ready on a schema that differs from its own head only by
- expand revisions ahead of it, applied by a newer release (their place in the history
  and their kind come from `lorepin_ops.migration_checksums`, which the migrator keeps), or
- contract revisions of its own that are not applied yet.
A revision marks itself as contract in its file: `contract = "why the release before it
cannot run after it"`. Anything else is a mismatch, and /readyz says which revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Revision:
    down: str | None  # the revision below it (comma-joined parents for a merge)
    contract: bool


@dataclass(frozen=True, kw_only=True)
class Verdict:
    ready: bool
    reason: str


def verdict(
    current: str | None,
    head: str | None,
    mine: Mapping[str, Revision],
    applied: Mapping[str, Revision],
) -> Verdict:
    """Can a build whose history is `mine` (head `head`) run on a database at `current`?

    `applied` is what the database's ledger says of the revisions applied to it.
    """
    if current == head:
        return Verdict(ready=True, reason="at head")
    # Behind: the database is below this build's head.
    below: list[str] = []
    walk = head
    while walk is not None and walk != current and walk in mine:
        below.append(walk)
        walk = mine[walk].down
    if walk == current:
        blocking = [r for r in below if not mine[r].contract]
        if blocking:
            return Verdict(
                ready=False, reason=f"schema behind this build: {blocking[-1]} is missing"
            )
        return Verdict(
            ready=True, reason=f"contract revision(s) {', '.join(below)} not applied yet"
        )
    # Ahead: a newer release applied revisions above this build's head.
    above: list[str] = []
    walk = current
    while walk != head:
        row = applied.get(walk) if walk is not None else None
        if walk is None or row is None:
            return Verdict(ready=False, reason=f"schema at {current}, unknown to this build")
        if row.contract:
            return Verdict(
                ready=False,
                reason=f"schema ahead by contract revision {walk}: this build cannot run on it",
            )
        above.append(walk)
        walk = row.down
    return Verdict(ready=True, reason=f"expand revision(s) {', '.join(reversed(above))} ahead")
