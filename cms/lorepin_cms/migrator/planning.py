"""What a run will do, decided before it changes anything.

Pure functions over the revision graph (Alembic's ScriptDirectory, read from the
migration files) and facts the runner read beforehand (the database's revision, the
recorded checksums). No database, no output: the runner executes what these return.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError

from lorepin_cms.migrator.errors import BadInput, Refused

Direction = Literal["upgrade", "downgrade"]
EXPAND = "expand"  # a target: head, but no contract revision (see `upgrade`)


@dataclass(frozen=True, kw_only=True)
class Target:
    """A target as the user named it ("head", "base", "0003") and the revision it is."""

    name: str
    revision: str | None  # None: base, no revision applied


@dataclass(frozen=True, kw_only=True)
class Step:
    """One revision applied or reverted, in a transaction of its own."""

    direction: Direction
    from_rev: str | None
    to_rev: str | None
    title: str

    @property
    def revision(self) -> str:
        """The revision whose file runs: the one applied, or the one reverted."""
        revision = self.to_rev if self.direction == "upgrade" else self.from_rev
        assert revision is not None  # a step always runs one revision's file
        return revision

    @property
    def alembic_target(self) -> str:
        return self.to_rev or "base"


@dataclass(frozen=True, kw_only=True)
class Plan:
    direction: Direction
    current: str | None
    target: Target
    steps: tuple[Step, ...]


def resolve(script: ScriptDirectory, name: str) -> Target:
    """The revision a target names; refuses ambiguous heads and unknown revisions."""
    heads = script.get_heads()
    if name == "head" and len(heads) > 1:
        raise Refused(
            f"the history has {len(heads)} heads ({', '.join(heads)}): "
            "merge them with `alembic merge`"
        )
    if name == "base":
        return Target(name=name, revision=None)
    if name == EXPAND:  # head, cut before the first contract revision (see `upgrade`)
        return Target(name=name, revision=resolve(script, "head").revision)
    try:
        revision = script.get_revision(name)
    except Exception as exc:  # alembic raises several types for unknown/ambiguous ids
        raise BadInput(f"unknown revision {name!r}: {exc}") from None
    if revision is None:
        raise BadInput(f"unknown revision {name!r}")
    return Target(name=name, revision=revision.revision)


def title(script: ScriptDirectory, revision: str) -> str:
    found = script.get_revision(revision)
    return found.doc.strip().splitlines()[0] if found and found.doc else ""


def is_contract(script: ScriptDirectory, revision: str) -> bool:
    """A revision the release before it cannot run after (`contract = "why"` in its file)."""
    found = script.get_revision(revision)
    return bool(found is not None and getattr(found.module, "contract", None))


def upgrade(script: ScriptDirectory, current: str | None, target: Target) -> Plan:
    steps: list[Step] = []
    applied_scripts(script, current)  # refuses a database revision these files do not have
    if target.revision != current:
        try:
            scripts = list(script.iterate_revisions(target.revision or "base", current))
        except RevisionError:
            raise BadInput(
                f"{target.name} is not ahead of the database ({current}); use downgrade to go back"
            ) from None
        before = current
        for found in reversed(scripts):
            steps.append(
                Step(
                    direction="upgrade",
                    from_rev=before,
                    to_rev=found.revision,
                    title=title(script, found.revision),
                )
            )
            before = found.revision
    if target.name == EXPAND:
        # A deploy applies these while the previous release still serves: everything up
        # to the first contract revision, which waits until that release has stopped.
        cut = next((i for i, s in enumerate(steps) if is_contract(script, s.revision)), None)
        steps = steps if cut is None else steps[:cut]
    return Plan(direction="upgrade", current=current, target=target, steps=tuple(steps))


def downgrade(script: ScriptDirectory, current: str | None, target: Target) -> Plan:
    steps: list[Step] = []
    if current is not None:
        wanted = target.revision
        if wanted is not None and wanted not in applied(script, current):
            raise BadInput(f"{wanted} is not below the database's revision {current}")
        for found in script.iterate_revisions(current, wanted or "base"):
            if found.revision == wanted:
                break
            down = found.down_revision
            if not (down is None or isinstance(down, str)):
                raise BadInput(
                    f"cannot step down through merge revision {found.revision}: "
                    "choose a target above it"
                )
            steps.append(
                Step(
                    direction="downgrade",
                    from_rev=found.revision,
                    to_rev=down,
                    title=title(script, found.revision),
                )
            )
    return Plan(direction="downgrade", current=current, target=target, steps=tuple(steps))


def held_back(script: ScriptDirectory, plan: Plan, current: str | None) -> str:
    """What an expand-only upgrade leaves for later, as a clause of the run's last line."""
    if plan.target.name != EXPAND:
        return ""
    reached = plan.steps[-1].to_rev if plan.steps else current
    if reached == plan.target.revision:
        return ""
    return (
        f" (contract revisions up to {plan.target.revision} wait until the previous "
        "release has stopped)"
    )


def plan(
    direction: Direction, script: ScriptDirectory, current: str | None, target: Target
) -> Plan:
    return (upgrade if direction == "upgrade" else downgrade)(script, current, target)


def applied_scripts(script: ScriptDirectory, current: str | None) -> list[Script]:
    """The revisions a database at `current` has applied, newest first."""
    if current is None:
        return []
    try:
        return list(script.iterate_revisions(current, "base"))
    except RevisionError:  # typically: the code was rolled back under a newer schema
        raise Refused(
            f"the database is at revision {current}, which these migrations do not have: "
            "migrate with the release that has it"
        ) from None


def applied(script: ScriptDirectory, current: str | None) -> list[str]:
    return [found.revision for found in applied_scripts(script, current)]


# -- checksums of applied revisions -------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RevisionFile:
    """An applied revision's file as it is on disk now."""

    revision: str
    filename: str
    sha256: str
    down_revision: str | None = None  # comma-joined for a merge
    contract: bool = False  # the release before it cannot run after it (see compat.py)


@dataclass(frozen=True, kw_only=True)
class Changed:
    file: RevisionFile
    recorded: str  # the sha256 recorded when it was applied

    def describe(self) -> str:
        return f"sha256 {self.recorded[:12]} -> {self.file.sha256[:12]}"


@dataclass(frozen=True, kw_only=True)
class ChecksumReview:
    record: tuple[RevisionFile, ...]  # applied before checksums were kept: record them
    accept: tuple[Changed, ...]  # changed, and accepted by --accept-changed: re-record
    refuse: tuple[Changed, ...]  # changed and not accepted: the run must not go on


def review_checksums(
    files: Iterable[RevisionFile], recorded: Mapping[str, str], accepted: Collection[str]
) -> ChecksumReview:
    files = list(files)
    unknown = sorted(set(accepted) - {f.revision for f in files})
    if unknown:
        raise BadInput(
            f"--accept-changed {', '.join(unknown)}: not a revision applied to this database"
        )
    record: list[RevisionFile] = []
    accept: list[Changed] = []
    refuse: list[Changed] = []
    for file in files:
        known = recorded.get(file.revision)
        if known is None:
            record.append(file)
        elif known != file.sha256:
            changed = Changed(file=file, recorded=known)
            (accept if file.revision in accepted else refuse).append(changed)
    return ChecksumReview(record=tuple(record), accept=tuple(accept), refuse=tuple(refuse))
