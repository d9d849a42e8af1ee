"""Releases: `invoke release`, `release.approve`, `release.status`, `invoke version`.

Config (invoke.yaml, `lorepin.release`): `branch` (the only branch releases are cut
from, default main), `major_on_zero` (a breaking change while 0.x bumps major; default
false: minor), `initial_version` (default 0.1.0), `version_files` (files whose
`version = "..."` line carries the version), `two_person_rule` (the person who cut a
release cannot approve it; default true). The notification webhook's URL is a secret:
LOREPIN_RELEASE_WEBHOOK_URL, never invoke.yaml.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import git
from alembic.script import ScriptDirectory
from invoke.collection import Collection
from invoke.context import Context
from semver import Version

from lorepin_tasks import changelog
from lorepin_tasks.context import (
    EnvContext,
    executor,
    load_settings,
    open_env,
    require_base_image,
    task,
)
from lorepin_tasks.errors import ConfigError, LorePinError, NothingToDo
from lorepin_tasks.plans import compose
from lorepin_tasks.runtime import http
from lorepin_tasks.runtime.executor import Executor
from lorepin_tasks.runtime.notify import notify
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.stack import published
from lorepin_tasks.versioning import TAG_PREFIX, Change, History, next_version, parse_version
from lorepin_tasks.versioning import read_history as read_git_history

RELEASE_COMMIT = re.compile(r"^chore\(release\): v(?P<version>\S+)$")
NOTES_REF = "lorepin-approvals"
IMAGES = ("cms", "postgres")
DEFAULTS: dict[str, Any] = {
    "branch": "main",
    "major_on_zero": False,
    "initial_version": "0.1.0",
    "version_files": ["pyproject.toml"],
    "two_person_rule": True,
}
DRY_HELP = "print the version, the changelog section and the commands; write nothing"


@dataclass(frozen=True, kw_only=True)
class ReleaseSettings:
    branch: str
    major_on_zero: bool
    initial_version: Version
    version_files: tuple[str, ...]
    two_person_rule: bool
    webhook_url: str | None


def release_settings(c: Context) -> ReleaseSettings:
    raw = {**DEFAULTS, **dict(c.config.get("lorepin", {}).get("release", {}) or {})}
    return ReleaseSettings(
        branch=str(raw["branch"]),
        major_on_zero=bool(raw["major_on_zero"]),
        initial_version=parse_version(str(raw["initial_version"]), "initial_version"),
        version_files=tuple(raw["version_files"]),
        two_person_rule=bool(raw["two_person_rule"]),
        webhook_url=os.environ.get("LOREPIN_RELEASE_WEBHOOK_URL") or None,
    )


def open_repo(root: Path) -> git.Repo:
    try:
        return git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise ConfigError(f"{root} is not a git repository") from None


def preflight(repo: git.Repo, rs: ReleaseSettings) -> None:
    """Refuse to release from anything but a clean, current release branch."""
    if repo.head.is_detached:
        raise ConfigError(f"HEAD is detached: check out {rs.branch} to release")
    branch = repo.active_branch
    if branch.name != rs.branch:
        raise ConfigError(f"releases are cut from {rs.branch}, not {branch.name}")
    if repo.is_dirty(untracked_files=True):
        raise ConfigError(
            "the working tree has uncommitted or untracked files: commit or "
            "stash them first (git status)"
        )
    upstream = branch.tracking_branch()
    if upstream is not None:
        behind = sum(1 for _ in repo.iter_commits(f"HEAD..{upstream.name}"))
        if behind:
            raise ConfigError(
                f"{branch.name} is {behind} commit(s) behind {upstream.name}: pull first"
            )


@dataclass(frozen=True, kw_only=True)
class Plan:
    version: Version
    changes: list[Change]
    resume: bool  # HEAD is already the release commit of `version`

    @property
    def tag(self) -> str:
        return f"{TAG_PREFIX}{self.version}"


def plan_release(
    repo: git.Repo,
    history: History,
    rs: ReleaseSettings,
    *,
    pre: str | None,
    as_version: str | None,
    root: Path,
) -> Plan:
    head_message = str(repo.head.commit.message).strip().splitlines()[0]
    if resumed := RELEASE_COMMIT.match(head_message):
        version = parse_version(resumed["version"])
        done = (root / "dist" / "release" / f"{TAG_PREFIX}{version}.json").exists()
        if not (done and version in history.head_versions):
            head = repo.head.commit.hexsha
            return Plan(
                version=version, resume=True, changes=[c for c in history.changes if c.sha != head]
            )
        # From a finished pre-release, a final (or another kind of pre-release) may follow.
        head_pre = version.prerelease or ""
        promoting = bool(head_pre) and (pre is None or not head_pre.startswith(f"{pre}."))
        if not promoting:
            raise NothingToDo(f"nothing to release since {TAG_PREFIX}{version}")
    if pre and history.head_versions:
        raise NothingToDo(f"nothing new since {TAG_PREFIX}{history.head_versions[-1]}")
    computed = next_version(
        history.last_final,
        history.tags,
        history.changes,
        pre=pre,
        major_on_zero=rs.major_on_zero,
        initial=rs.initial_version,
    )
    if as_version:
        version = parse_version(as_version, "--as version")
        if history.last is not None and version <= history.last:
            raise ConfigError(f"--as {version} is not greater than the last release {history.last}")
    elif computed is None:
        since = f"since {TAG_PREFIX}{history.last_final}" if history.last_final else "yet"
        raise NothingToDo(
            f"nothing to release {since}: no feat, fix, perf, revert or breaking commits"
        )
    else:
        version = computed
    return Plan(version=version, changes=history.changes, resume=False)


def set_version(text: str, version: str) -> str:
    updated, count = re.subn(r'(?m)^version = "[^"]*"$', f'version = "{version}"', text, count=1)
    if count != 1:
        raise ConfigError('a version file has no `version = "..."` line')
    return updated


def signing_args(repo: git.Repo) -> list[str]:
    reader = repo.config_reader()
    sign = str(reader.get_value("tag", "gpgSign", "false")).lower() == "true"
    return ["-s"] if sign else ["-a"]


def image_ids(run: Executor, prefix: str, tag: str) -> dict[str, dict[str, str]]:
    images = {}
    for name in IMAGES:
        ref = f"{prefix}/{name}:{tag}"
        image_id = run.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", ref],
            capture=True,
            mutates=False,
            quiet=True,
        ).stdout.strip()
        images[name] = {"image": ref, "id": image_id}
    return images


def migration_head(root: Path) -> str | None:
    return ScriptDirectory(str(root / "migrations")).get_current_head()


def release_notes(plan: Plan, section: str, manifest: dict[str, Any]) -> str:
    images = "\n".join(f"- `{i['image']}` `{i['id'][:19]}`" for i in manifest["images"].values())
    return (
        f"# LorePin CMS {plan.tag}\n\n"
        f"Released {manifest['created'][:10]} from `{manifest['git_sha'][:12]}`; "
        f"schema at migration `{manifest['migration_head']}`.\n\n"
        + section.split("\n", 1)[1].lstrip("\n")
        + f"\n## Images\n\n{images}\n"
    )


@task(
    default=True,
    help={
        "pre": "cut a pre-release: rc or beta (rc.1, rc.2, ... then the final)",
        "as": "release exactly this version (must be greater than the last)",
        "yes": "do not ask for confirmation",
        "dry_run": DRY_HELP,
    },
)
def release(
    c: Context, pre: str = "", as_: str = "", yes: bool = False, dry_run: bool = False
) -> None:
    """Cut the next release: changelog, version files, commit, tag, images, notes, manifest."""
    settings = load_settings(c)
    rs = release_settings(c)
    root = settings.root
    repo = open_repo(root)
    preflight(repo, rs)
    history = read_git_history(repo)
    plan = plan_release(repo, history, rs, pre=pre or None, as_version=as_ or None, root=root)
    today = datetime.now(UTC).date()
    section = changelog.section(str(plan.version), today, plan.changes)
    ctx = open_env(c, "local", dry_run=dry_run)
    require_base_image(ctx)  # before anything is written: a release must be able to build
    run = ctx.run
    if rs.webhook_url:
        run.add_secret(rs.webhook_url)
    last = f"{TAG_PREFIX}{history.last}" if history.last else "no release yet"
    run.say(
        f"release {plan.tag} (last: {last}; {len(plan.changes)} commit(s))"
        + (" - resuming" if plan.resume else "")
    )
    if run.dry_run:
        print(section)
    if not plan.resume:
        if not run.dry_run:
            print(section)
            confirm(f"Release {plan.tag} from {rs.branch}?", yes=yes)
        _commit_release(run, repo, root, rs, plan, section)
    _tag_release(run, repo, plan, section)
    manifest = _build_and_record(ctx, repo, plan, section, today)
    if run.dry_run:
        run.say("dry run: nothing was written, committed, tagged or built")
        return
    print(f"released {plan.tag}: dist/release/{plan.tag}.md, dist/release/{plan.tag}.json")
    print(f"publish it: git push origin {rs.branch} {plan.tag}")
    notify(
        rs.webhook_url,
        f"LorePin CMS {plan.tag} released ({manifest['git_sha'][:12]}, "
        f"schema {manifest['migration_head']})",
        say=run.say,
    )


def _commit_release(
    run: Executor, repo: git.Repo, root: Path, rs: ReleaseSettings, plan: Plan, section: str
) -> None:
    path = root / "CHANGELOG.md"
    files = {
        path: changelog.add_section(
            path.read_text() if path.exists() else "", str(plan.version), section
        )
    }
    for name in rs.version_files:
        files[root / name] = set_version((root / name).read_text(), str(plan.version))
    names = [str(p.relative_to(root)) for p in files]
    add = ["git", "-C", str(root), "add", "--", *names]
    commit = [
        "git",
        "-C",
        str(root),
        "commit",
        "--quiet",
        "-m",
        f"chore(release): {plan.tag}",
        "--",
        *names,
    ]
    if run.dry_run:
        run.say(f"# would write {', '.join(names)}")
        run.run(add)
        run.run(commit)
        return
    originals = {p: (p.read_text() if p.exists() else None) for p in files}
    try:
        for p, text in files.items():
            p.write_text(text)
        run.run(add)
        run.run(commit)
    except BaseException:
        # Leave the tree as it was, so a re-run starts clean (nothing half-written).
        run.run(["git", "-C", str(root), "reset", "--quiet", "--", *names], check=False)
        for p, original in originals.items():
            if original is None:
                p.unlink(missing_ok=True)
            else:
                p.write_text(original)
        raise


def _tag_release(run: Executor, repo: git.Repo, plan: Plan, section: str) -> None:
    existing = next((t for t in repo.tags if t.name == plan.tag), None)
    if existing is not None:
        if not run.dry_run and existing.commit != repo.head.commit:
            raise LorePinError(
                f"tag {plan.tag} exists on another commit "
                f"({existing.commit.hexsha[:7]}); nothing was changed"
            )
        return
    message = f"LorePin CMS {plan.tag}\n\n{section}"
    run.run(
        [
            "git",
            "-C",
            str(repo.working_tree_dir),
            "tag",
            *signing_args(repo),
            plan.tag,
            "-m",
            message,
        ]
    )


def _build_and_record(
    ctx: EnvContext, repo: git.Repo, plan: Plan, section: str, today: Any
) -> dict[str, Any]:
    run = ctx.run
    root = ctx.settings.root
    tagged = replace(ctx.env, image_tag=str(plan.version))
    variables = compose.variables(ctx.settings, tagged, ctx.revision)
    if not run.dry_run:  # the tag now exists: the images carry exactly this version
        head = repo.head.commit
        variables.update(
            LOREPIN_VERSION=str(plan.version),
            LOREPIN_GIT_REVISION=head.hexsha,
            LOREPIN_CREATED=head.committed_datetime.isoformat(),
        )
    run.say(
        f"==> building images {ctx.settings.image_prefix}/{{{','.join(IMAGES)}}}:{plan.version}"
    )
    run.run(compose.build(tagged), env=variables)
    out = root / "dist" / "release"
    if run.dry_run:
        run.say(f"# would write {out / plan.tag}.md and {out / plan.tag}.json")
        return {}
    manifest: dict[str, Any] = {
        "version": str(plan.version),
        "tag": plan.tag,
        "git_sha": repo.head.commit.hexsha,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "images": image_ids(run, ctx.settings.image_prefix, str(plan.version)),
        "migration_head": migration_head(root),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{plan.tag}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / f"{plan.tag}.md").write_text(release_notes(plan, section, manifest))
    return manifest


def _tagged_commit(repo: git.Repo, version: str) -> tuple[str, git.TagReference]:
    tag_name = f"{TAG_PREFIX}{parse_version(version)}"
    tag = next((t for t in repo.tags if t.name == tag_name), None)
    if tag is None:
        raise ConfigError(f"no release {tag_name} in this repository (git tag -l 'v*')")
    return tag_name, tag


def approvals(repo: git.Repo, commit: str) -> list[dict[str, str]]:
    try:
        text = repo.git.notes("--ref", NOTES_REF, "show", commit)
    except git.GitCommandError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


@task(help={"version": "the release to approve, e.g. v1.2.0", "dry_run": DRY_HELP})
def approve(c: Context, version: str, dry_run: bool = False) -> None:
    """Record your approval of a release (a git note on its commit; two-person rule)."""
    settings = load_settings(c)
    rs = release_settings(c)
    repo = open_repo(settings.root)
    tag_name, tag = _tagged_commit(repo, version)
    reader = repo.config_reader()
    approver = str(reader.get_value("user", "email", "")) or None
    if approver is None:
        raise ConfigError("git has no user.email: approvals are recorded by email")
    cutter = tag.tag.tagger.email if tag.tag is not None else None
    if rs.two_person_rule and cutter and cutter.lower() == approver.lower():
        raise ConfigError(
            f"two-person rule: {approver} cut {tag_name} and cannot approve it; another person must"
        )
    commit = tag.commit.hexsha
    if any(a["approved_by"].lower() == approver.lower() for a in approvals(repo, commit)):
        raise NothingToDo(f"{approver} already approved {tag_name}")
    record = {
        "version": tag_name,
        "approved_by": approver,
        "approved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
    }
    run = executor(c, dry_run)
    run.run(
        [
            "git",
            "-C",
            str(settings.root),
            "notes",
            "--ref",
            NOTES_REF,
            "append",
            "-m",
            json.dumps(record, sort_keys=True),
            commit,
        ]
    )
    if run.dry_run:
        return
    print(f"{tag_name} approved by {approver}; share it: git push origin refs/notes/{NOTES_REF}")
    if rs.webhook_url:
        run.add_secret(rs.webhook_url)
    notify(rs.webhook_url, f"LorePin CMS {tag_name} approved by {approver}", say=run.say)


@task(help={"version": "the release, e.g. v1.2.0", "json": "print machine-readable JSON"})
def status(c: Context, version: str, json_: bool = False) -> None:
    """Show a release: its commit, who cut it, its approvals and its manifest."""
    settings = load_settings(c)
    repo = open_repo(settings.root)
    tag_name, tag = _tagged_commit(repo, version)
    manifest_path = settings.root / "dist" / "release" / f"{tag_name}.json"
    report: dict[str, Any] = {
        "version": tag_name,
        "commit": tag.commit.hexsha,
        "cut_by": tag.tag.tagger.email if tag.tag is not None else None,
        "cut_at": (
            datetime.fromtimestamp(tag.tag.tagged_date, UTC).isoformat()
            if tag.tag is not None
            else None
        ),
        "approvals": approvals(repo, tag.commit.hexsha),
        "manifest": json.loads(manifest_path.read_text()) if manifest_path.exists() else None,
    }
    if json_:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{tag_name}  commit {report['commit'][:12]}  cut by {report['cut_by']} "
        f"at {report['cut_at']}"
    )
    if report["approvals"]:
        for a in report["approvals"]:
            print(f"  approved by {a['approved_by']} at {a['approved_at']}")
    else:
        print("  not approved yet (invoke release.approve " + tag_name + ")")
    manifest = report["manifest"]
    if manifest:
        print(
            f"  manifest: schema {manifest['migration_head']}, images "
            + ", ".join(f"{i['image']} {i['id'][:19]}" for i in manifest["images"].values())
        )
    else:
        print(f"  no manifest at {manifest_path} on this machine")


@task(help={"json": "print machine-readable JSON"})
def version(c: Context, json_: bool = False) -> None:
    """Print the current version, the next one, and what each environment runs."""
    settings = load_settings(c)
    rs = release_settings(c)
    repo = open_repo(settings.root)
    history = read_git_history(repo)
    pending = next_version(
        history.last_final,
        history.tags,
        history.changes,
        major_on_zero=rs.major_on_zero,
        initial=rs.initial_version,
    )
    running: dict[str, str | None] = {}
    for name in settings.environments:
        ctx = open_env(c, name, dry_run=False)
        running[name] = _running_version(ctx)
    report = {
        "current": str(history.last) if history.last else None,
        "next": str(pending) if pending else None,
        "environments": running,
    }
    if json_:
        print(json.dumps(report))
        return
    print(f"current: {report['current'] or 'none (no release yet)'}")
    print(f"next:    {report['next'] or 'nothing to release'}")
    for name, running_version in running.items():
        print(f"  {name}: {running_version or 'not running'}")


def _running_version(ctx: EnvContext) -> str | None:
    address = published(ctx, compose.HTTP_SERVICE, compose.HTTP_PORT)
    if not address:
        return None
    code, body = http.get(f"http://{address}/version", timeout=2)
    return str(body.get("version")) if code == 200 and isinstance(body, dict) else None


ns = Collection("release", release, approve, status)
ns.configure({"lorepin": {"release": DEFAULTS}})
