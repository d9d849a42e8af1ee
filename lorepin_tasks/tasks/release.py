"""Releases: `invoke release`, `release.abort`, `release.approve`, `release.status`,
`invoke version`.

Config (invoke.yaml, `lorepin.release`): `branch` (the only branch releases are cut
from, default main), `major_on_zero` (a breaking change while 0.x bumps major; default
false: minor), `initial_version` (default 0.1.0), `version_files` (files whose
`version = "..."` line carries the version), `two_person_rule` (the person who cut a
release cannot approve it; default true). The notification webhook's URL is a secret:
LOREPIN_RELEASE_WEBHOOK_URL, never invoke.yaml.

The version rules (semver) and the history walk (GitPython) are imported by the tasks
that use them, so `invoke --list` stays fast.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError, NothingToDo, Refused, for_exit_code
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import git as git_plan
from lorepin_tasks.plans import images as images_plan
from lorepin_tasks.runtime import docker, git, http
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.notify import notify
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    JSON_HELP,
    YES_HELP,
    build_stale,
    executor,
    load_settings,
    open_env,
    require_base_image,
    task,
)

ENGINE_HELP = "environment whose Docker engine builds the images (default: local)"
READ_ONLY = "accepted for symmetry: this task only reads, so it runs as usual"
RELEASE_DRY_HELP = "print the version, the changelog section and the commands; write nothing"


def _engine_answers(ctx: EnvContext) -> None:
    """A release builds images after it commits and tags: the engine must answer first."""
    if ctx.run.dry_run:
        return
    probe = ctx.run.run(
        compose.engine_version(ctx.env),
        env=ctx.engine,
        capture=True,
        check=False,
        mutates=False,
        quiet=True,
    )
    if not probe.ok or not probe.stdout.strip():
        raise ConfigError(
            "the Docker engine does not answer and a release builds images: "
            "start it (scripts/bootstrap.sh) and release again; nothing was changed"
        )


@task(
    default=True,
    help={
        "pre": "cut a pre-release: rc or beta (rc.1, rc.2, ... then the final)",
        "as": "release exactly this version (must be greater than the last)",
        "yes": YES_HELP,
        "env": ENGINE_HELP,
        "dry_run": RELEASE_DRY_HELP,
    },
)
def release(
    c: Context,
    pre: str = "",
    as_: str = "",
    yes: bool = False,
    env: str = "local",
    dry_run: bool = False,
) -> None:
    """Cut the next release: changelog, version files, commit, tag, images, notes, manifest."""
    from lorepin_tasks.domain import changelog
    from lorepin_tasks.plans import release as plan

    ctx = open_env(c, env, dry_run=dry_run)
    settings, run, root = ctx.settings, ctx.run, ctx.settings.root
    facts = git.facts(root)
    plan.preflight(facts, settings.release)
    history = git.read_history(root)
    head_release = plan.unfinished(facts)
    finished = head_release is not None and plan.manifest_path(root, f"v{head_release}").exists()
    chosen = plan.plan(
        facts, history, settings.release, pre=pre or None, as_version=as_ or None, finished=finished
    )
    # Everything that could stop the release half-way is checked before the first write.
    plan.validate(chosen, git.tags(root), facts.head)
    require_base_image(settings)
    tagged = replace(ctx, env=images_plan.image_env(ctx.env, root, str(chosen.version)))
    _engine_answers(tagged)
    docker.model(tagged)  # the Compose files must resolve before anything is written
    names = ["CHANGELOG.md", *settings.release.version_files]
    current = {n: (root / n).read_text() if (root / n).is_file() else None for n in names}
    section = plan.resumed_section(chosen, current["CHANGELOG.md"] or "") or changelog.section(
        str(chosen.version), datetime.now(UTC).date(), chosen.changes
    )
    files = plan.files(chosen, section, current, settings.release)
    if settings.webhook_url:
        run.add_secret(settings.webhook_url)

    before = max((v for v in history.tags if v < chosen.version), default=None)
    last = f"v{before}" if before else "no release yet"
    run.say(
        f"release {chosen.tag} (last: {last}; {len(chosen.changes)} commit(s))"
        + (" - resuming" if chosen.resume else "")
    )
    if not chosen.resume:
        print(section)
        if not run.dry_run:
            confirm(f"Release {chosen.tag} from {settings.release.branch}?", yes=yes)
        _commit(tagged, files, chosen.commit_message, current)
    if chosen.tag not in git.tags(root):
        message = plan.tag_message(chosen, section)
        run.run(git_plan.tag(root, chosen.tag, message, sign=facts.sign_tags))
    # The images carry exactly the tagged commit (in a dry run: HEAD as it is), and their
    # build-inputs label is computed with those very build args.
    revision = git.describe(run, root)
    tagged = replace(tagged, revision=revision)
    try:
        build_stale(tagged, docker.model(tagged), only=list(plan.SERVICES))
    except LorePinError as exc:
        if run.dry_run:
            raise
        raise for_exit_code(
            exc.exit_code,
            f"{exc} - the release commit and tag {chosen.tag} are in place: fix the cause and "
            "run `invoke release` again to finish it, or `invoke release.abort` to undo them",
        ) from None
    out = plan.manifest_path(root, chosen.tag)
    if run.dry_run:
        run.say(f"# would write {out} and {out.with_suffix('.md')}")
        run.say("dry run: nothing was written, committed, tagged or built")
        return
    refs = {
        images_plan.IMAGES[s]: images_plan.ref(
            settings.image_prefix, images_plan.IMAGES[s], str(chosen.version)
        )
        for s in plan.SERVICES
    }
    found = docker.images(run, compose.docker(tagged.env), list(refs.values()))
    manifest = plan.manifest(
        chosen,
        sha=revision.sha,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        images={n: {"image": ref, "id": found[ref].id} for n, ref in refs.items()},
        migration_head=_migration_head(root),
    )
    run.write(out, json.dumps(manifest, indent=2) + "\n")
    run.write(out.with_suffix(".md"), plan.release_notes(chosen, section, manifest))
    print(f"released {chosen.tag}: dist/release/{chosen.tag}.md, dist/release/{chosen.tag}.json")
    print(f"publish it: git push origin {settings.release.branch} {chosen.tag}")
    notify(
        settings.webhook_url,
        f"LorePin CMS {chosen.tag} released ({revision.sha[:12]}, "
        f"schema {manifest['migration_head']})",
        say=run.say,
    )


def _commit(
    ctx: EnvContext, files: dict[str, str], message: str, current: dict[str, str | None]
) -> None:
    """Write the release's files and commit them; on failure leave the tree as it was."""
    run, root = ctx.run, ctx.settings.root
    names = list(files)
    try:
        for name, text in files.items():
            run.write(root / name, text)
        run.run(git_plan.add(root, names))
        run.run(git_plan.commit(root, message, names))
    except BaseException:
        if not run.dry_run:
            run.run(git_plan.unstage(root, names), check=False)
            for name, original in current.items():
                if original is None:
                    (root / name).unlink(missing_ok=True)
                else:
                    (root / name).write_text(original)
        raise


def _migration_head(root: Path) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(root / "migrations")).get_current_head()


@task(help={"yes": YES_HELP, "dry_run": DRY_HELP})
def abort(c: Context, yes: bool = False, dry_run: bool = False) -> None:
    """Undo an unfinished release (its commit and tag) so it can be cut again after a fix."""
    from lorepin_tasks.plans import release as plan

    settings = load_settings(c)
    run = executor(c, dry_run)
    root = settings.root
    facts = git.facts(root)
    version = plan.unfinished(facts)
    if version is None:
        raise NothingToDo("HEAD is not a release commit: there is no unfinished release to abort")
    tag = f"v{version}"
    if plan.manifest_path(root, tag).exists():
        raise Refused(f"{tag} is finished (its manifest exists): cut a new release instead")
    if facts.dirty:
        raise ConfigError("the working tree has changes: commit or stash them first (git status)")
    remote = git.pushed(root, facts.head)
    if remote:
        raise Refused(
            f"{tag}'s commit is already on {', '.join(remote)}: it is public, cut a new release"
        )
    tags = git.tags(root)
    if not run.dry_run:
        confirm(f"Undo the unfinished release {tag} (its tag and its release commit)?", yes=yes)
    if tags.get(tag) == facts.head:
        run.run(git_plan.delete_tag(root, tag))
    if git.approvals(root, facts.head):  # approvals of a release that no longer exists
        run.run(git_plan.notes_remove(root, git.APPROVALS_REF, facts.head))
    run.run(git_plan.reset_keep(root, "HEAD~1"))
    if not run.dry_run:
        print(f"{tag} aborted: its commit and tag are gone; fix the cause, then `invoke release`")


def _release_tag(root: Path, version: str) -> Any:
    from lorepin_tasks.domain.versioning import parse_version

    wanted = parse_version(version)
    tag = git.release_tags(root, reachable=False).get(wanted)
    if tag is None:
        raise ConfigError(f"no release v{wanted} in this repository (git tag -l 'v*')")
    return tag


@task(help={"version": "the release to approve, e.g. v1.2.0", "dry_run": DRY_HELP})
def approve(c: Context, version: str, dry_run: bool = False) -> None:
    """Record your approval of a release (a git note on its commit; two-person rule)."""
    from lorepin_tasks.plans import release as plan

    settings = load_settings(c)
    run = executor(c, dry_run)
    root = settings.root
    tag = _release_tag(root, version)
    approver = plan.check_approver(
        settings.release, tag.name, tag.tagger, git.facts(root).user_email
    )
    if any(a["approved_by"].lower() == approver.lower() for a in git.approvals(root, tag.sha)):
        raise NothingToDo(f"{approver} already approved {tag.name}")
    record = plan.approval(
        tag.name, approver, datetime.now(UTC).isoformat(timespec="seconds"), tag.sha
    )
    run.run(
        git_plan.notes_append(root, git.APPROVALS_REF, json.dumps(record, sort_keys=True), tag.sha)
    )
    if run.dry_run:
        return
    share = f"git push origin refs/notes/{git.APPROVALS_REF}"
    print(f"{tag.name} approved by {approver}; share it: {share}")
    if settings.webhook_url:
        run.add_secret(settings.webhook_url)
    notify(settings.webhook_url, f"LorePin CMS {tag.name} approved by {approver}", say=run.say)


@task(help={"version": "the release, e.g. v1.2.0", "json": JSON_HELP, "dry_run": READ_ONLY})
def status(c: Context, version: str, json_: bool = False, dry_run: bool = False) -> None:
    """Show a release: its commit, who cut it, its approvals and its manifest."""
    from lorepin_tasks.plans import release as plan

    settings = load_settings(c)
    root = settings.root
    tag = _release_tag(root, version)
    path = plan.manifest_path(root, tag.name)
    try:
        manifest = json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        raise LorePinError(f"{path} is not valid JSON: restore it from the release") from None
    report: dict[str, Any] = {
        "version": tag.name,
        "commit": tag.sha,
        "cut_by": tag.tagger,
        "cut_at": tag.tagged_at,
        "approvals": git.approvals(root, tag.sha),
        "manifest": manifest,
    }
    if json_:
        print(json.dumps(report, indent=2))
        return
    print(f"{tag.name}  commit {tag.sha[:12]}  cut by {tag.tagger} at {tag.tagged_at}")
    for a in report["approvals"]:
        print(f"  approved by {a['approved_by']} at {a.get('approved_at')}")
    if not report["approvals"]:
        print(f"  not approved yet (invoke release.approve {tag.name})")
    if isinstance(manifest, dict) and isinstance(manifest.get("images"), dict):
        print(
            f"  manifest: schema {manifest.get('migration_head')}, images "
            + ", ".join(f"{i['image']} {i['id'][:19]}" for i in manifest["images"].values())
        )
    else:
        print(f"  no manifest at {path} on this machine")


@task(help={"json": JSON_HELP, "dry_run": READ_ONLY})
def version(c: Context, json_: bool = False, dry_run: bool = False) -> None:
    """Print the current version, the next one, and what each environment runs."""
    from semver import Version

    from lorepin_tasks.domain.versioning import next_version

    settings = load_settings(c)
    history = git.read_history(settings.root)
    pending = next_version(
        history.last_final,
        history.tags,
        history.changes,
        major_on_zero=settings.release.major_on_zero,
        initial=Version.parse(settings.release.initial_version),
    )
    running: dict[str, str | None] = {}
    for name in settings.environments:
        ctx = open_env(c, name, dry_run=False, settings=settings, swarm=True)
        if ctx.env.swarm is not None:  # what its CMS service runs (its swarm up, and ours)
            from lorepin_tasks.runtime.swarm import Swarm

            try:
                running[name] = Swarm(ctx).serving()
            except LorePinError:
                running[name] = None
            continue
        if ctx.env.is_server:  # the release its proxy routes to
            from lorepin_tasks.runtime.bluegreen import ComposeBlueGreen

            running[name] = ComposeBlueGreen(ctx).state().serving if docker.services(ctx) else None
            continue
        address = docker.published(ctx, compose.HTTP_SERVICE, compose.HTTP_PORT)
        code, body = http.get(f"http://{address}/version", timeout=2) if address else (0, None)
        running[name] = str(body.get("version")) if code == 200 and isinstance(body, dict) else None
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


ns = Collection("release", release, abort, approve, status)
