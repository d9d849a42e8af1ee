"""Deploys and rollbacks of server environments (staging, production): `invoke deploy`,
`invoke rollback`, `deploy.history`, `deploy.lock` (the trail's checks: tasks/audit.py).

Config (invoke.yaml, `lorepin.environments.<name>`): `https_port`, `url`, and `deploy:`
with `approvals` (how many approvals a release needs; default 0), `windows` (e.g.
`["Mon-Fri 09:00-16:00"]`, in `timezone`), `watch` (seconds the new release is watched
after the switch; default 30), `keep` (release versions whose images stay; default 3).
See docs/deploying.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError, NothingToDo, Refused, last_line
from lorepin_tasks.plans import backup as backup_plan
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import deploy as plan
from lorepin_tasks.plans import images as images_plan
from lorepin_tasks.plans import swarm as swarm_plan
from lorepin_tasks.runtime import docker, git, http, ops, secrets
from lorepin_tasks.runtime.bluegreen import Backend, ComposeBlueGreen
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.runtime.swarm import Swarm
from lorepin_tasks.runtime.trail import Trail, mirrored
from lorepin_tasks.settings import whole_number
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    JSON_HELP,
    SERVER_ENV_HELP,
    YES_HELP,
    backup_database,
    locked,
    open_env,
    run_migrator,
    server_env,
    task,
)

DRAIN = 3.0  # seconds the old colour keeps answering what it took before the switch
# The watch window fails the release on this many 5xx (or 5 % of requests, if more).
WATCH_ERRORS, WATCH_RATIO = 3, 0.05


def _manifest(ctx: EnvContext, tag: str) -> dict[str, Any]:
    """The release's manifest: as `invoke release` wrote it, or as `artifacts.download`
    brought its build manifest from a registry (read in the same shape)."""
    root = ctx.settings.root
    for path, built in (
        (root / "dist" / "release" / f"v{tag}.json", False),
        (root / "dist" / "artifacts" / tag / "build-manifest.json", True),
    ):
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                raise ConfigError(f"{path} is not valid JSON: restore it") from None
            if built:
                data = plan.from_build_manifest(data, ctx.settings.image_prefix, tag)
            if isinstance(data, dict) and isinstance(data.get("images"), dict):
                return data
            raise ConfigError(f"{path} is not a release manifest: restore it")
    raise ConfigError(
        f"no release v{tag} on this machine (dist/release/v{tag}.json): cut it with "
        "`invoke release`, or bring it with `invoke artifacts.download`"
    )


def _tls(ctx: EnvContext, *, check_only: bool = False) -> None:
    """The proxy's certificate: staging gets a self-signed one; production must be given one."""
    cert, key = ctx.env.secrets_dir / "tls.crt", ctx.env.secrets_dir / "tls.key"
    if cert.is_file() and key.is_file():
        answers = [
            ctx.run.run(argv, capture=True, check=False, mutates=False, quiet=True)
            for argv in plan.tls_public_keys(cert, key)
        ]
        public = [a.stdout.split("Certificate will")[0].strip() for a in answers]
        if not all(a.ok for a in answers) or public[0] != public[1]:
            raise ConfigError(
                f"{cert} and {key} are not a valid, unexpired PEM certificate and its key: "
                "install a pair that is"
            )
        return
    if ctx.env.kind == "production":
        raise ConfigError(
            f"production needs its TLS certificate and key in {cert} and {key}: install them"
        )
    if check_only:
        return
    host = plan.server_name(ctx.env)
    hosts = [host, *[h for h in ("localhost", "127.0.0.1") if h != host]]
    ctx.run.say(f"==> {ctx.env.name}: creating a self-signed TLS certificate ({', '.join(hosts)})")
    ctx.run.run(plan.tls_certificate(cert, key, hosts), capture=True)
    if not ctx.run.dry_run:
        cert.chmod(0o644)
        key.chmod(0o644)  # read by the proxy's user through the mount; the dir is 0700


def _configuration(ctx: EnvContext) -> dict[str, Any]:
    """What the deploy ran with: its Compose files and settings, each secret by name and
    digest only; `hash` sums it up (two deploys with the same hash ran the same config).
    A secret's digest is keyed (HMAC) with all of the environment's secrets together, so
    one weak password cannot be guessed from the trail (a plain digest can be checked
    offline against a list of passwords)."""

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:16]

    files = {p.name: sha(p.read_bytes()) for p in ctx.env.compose_files}
    found = sorted(p for p in ctx.env.secrets_dir.glob("*") if p.is_file())
    contents = {p.name: p.read_bytes() for p in found}
    key = hashlib.sha256(b"\0".join(contents.values())).digest()
    secrets_ = {n: hmac.new(key, c, hashlib.sha256).hexdigest()[:16] for n, c in contents.items()}
    policy = {
        k: [w.text for w in v] if k == "windows" else v
        for k, v in (ctx.env.deploy.__dict__ if ctx.env.deploy else {}).items()
    }
    config = {"files": files, "secrets": secrets_, "deploy": policy, "project": ctx.env.project}
    return {**config, "hash": sha(json.dumps(config, sort_keys=True).encode())}


def _smoke(backend: Backend, colour: str, version: str) -> None:
    code, body = backend.probe(colour, "/version")
    try:
        running = json.loads(body).get("version") if code == 200 else None
    except ValueError:
        running = None
    if running != version:
        raise LorePinError(f"{colour} answers /version with {running!r}, not {version}")
    code, _ = backend.probe(colour, "/api/pins?limit=1")
    if code != 200:
        raise LorePinError(f"{colour} ({version}) answers GET /api/pins with {code}")


def _watch(ctx: EnvContext, backend: Backend, since: str, seconds: int) -> str | None:
    """Watch the new release through the proxy; why it failed, or None when it held."""
    if ctx.run.dry_run or seconds <= 0:
        return None
    url = f"https://127.0.0.1:{backend.public_port()}/readyz"
    cafile = ctx.env.secrets_dir / "tls.crt"
    deadline = time.monotonic() + seconds
    failures = 0
    while time.monotonic() < deadline:
        code, _ = http.get(url, timeout=2, cafile=cafile)
        failures = failures + 1 if code != 200 else 0
        if failures >= 3:
            return f"/readyz through the proxy failed 3 times in a row (last answer {code})"
        total, errors = backend.errors_since(since)
        if errors >= max(WATCH_ERRORS, WATCH_RATIO * total):
            return f"{errors} of {total} requests answered 5xx"
        time.sleep(1)
    return None


@task(
    default=True,
    help={
        "env": SERVER_ENV_HELP,
        "version": "the release to deploy, e.g. 1.4.0 (or v1.4.0)",
        "yes": YES_HELP,
        "outside_window": "deploy outside the environment's deploy windows (needs --reason)",
        "reason": "why (recorded in the audit trail)",
        "dry_run": DRY_HELP,
    },
)
def deploy(
    c: Context,
    env: str = "",
    version: str = "",
    yes: bool = False,
    outside_window: bool = False,
    reason: str = "",
    dry_run: bool = False,
) -> None:
    """Deploy a release blue-green: start it beside the running one, switch, watch, keep
    (`backend: swarm`: Swarm's start-first rolling update, rolled back by Swarm on failure)."""
    ctx = server_env(c, env, dry_run, swarm=True)
    if not version:
        raise ConfigError("say which release: --version 1.4.0 (see `invoke version`)")
    tag = plan.release_tag(version)
    assert ctx.env.deploy is not None  # a server environment
    policy, root = ctx.env.deploy, ctx.settings.root
    manifest = _manifest(ctx, tag)
    released = git.release_tags(root, reachable=False).get(_version(tag))
    approvals = git.approvals(root, str(manifest.get("git_sha")))
    problem = plan.approval_problem(
        policy, f"v{tag}", released.tagger if released else None, approvals
    )
    if problem:
        raise Refused(problem)
    if policy.requires_e2e:
        _check_e2e(c, ctx, policy.requires_e2e, tag)
    override = plan.window_override(
        policy, datetime.now(UTC), outside_window=outside_window, reason=reason
    )
    stored = secrets.decrypt_stored(ctx)  # the repository's secrets/<env>/*.age, checked
    secrets.require(ctx, given=stored, made=secrets.ROLE_PASSWORDS)  # those: made below
    if ctx.env.swarm is not None:
        _check_images(ctx, tag, manifest)
        approved_by = sorted({str(a["approved_by"]) for a in approvals})
        _deploy_swarm(ctx, tag, manifest, override, approved_by, stored, yes)
        return
    _tls(ctx, check_only=True)
    _check_images(ctx, tag, manifest)
    ops.refuse_failed_over(ctx)
    if ctx.env.kind == "production" and not ctx.run.dry_run:
        confirm(f"Deploy v{tag} to production?", yes=yes)
    who = git.who_am_i(ctx.run, root)
    ctx = replace(ctx, env=replace(ctx.env, image_tag=tag))
    backend = ComposeBlueGreen(ctx)
    steps = ops.Steps(ctx)
    with locked(ctx, "deploy"):
        docker.ensure_owned(ctx, data=True)
        secrets.place_stored(ctx, stored)
        secrets.ensure_role_passwords(ctx)  # the migrator gives them to the roles
        _tls(ctx)
        secrets.ensure_backup_passphrase(ctx)
        secrets.ensure_backup_tls(ctx)
        secrets.ensure_backup_webhook(ctx)
        with steps.step("starting the database and the proxy (kept when running)"):
            _allow_replication(ctx)
            backend.prepare(tag)
            stanza(ctx)
        with ops.deploy_lock(ctx, who, f"deploy v{tag}") as session:
            trail = ops.open_trail(ctx, session, who)
            images = {k: v.get("id") for k, v in manifest["images"].items()}
            approved_by = sorted({str(a["approved_by"]) for a in approvals})
            _deploy(ctx, backend, steps, trail, tag, who, override, images, approved_by)


def _deploy_swarm(
    ctx: EnvContext,
    tag: str,
    manifest: Mapping[str, Any],
    override: str | None,
    approved_by: list[str],
    stored: dict[str, str],
    yes: bool,
) -> None:
    """The Swarm backend: the images onto every node first (a node that cannot pull one
    refuses the deploy), the expand migrations, then Swarm's own start-first rolling
    update, watched to its end: completed, or rolled back by Swarm (said and recorded)."""
    swarm = Swarm(ctx)
    swarm.require_up()
    if ctx.env.kind == "production" and not ctx.run.dry_run:
        confirm(f"Deploy v{tag} to production (swarm '{swarm.lab.name}')?", yes=yes)
    with locked(ctx, "deploy"):
        secrets.place_stored(ctx, stored)
        secrets.ensure_role_passwords(ctx)
        extra = {"window_override": override, "approved_by": approved_by}
        _rollout(ctx, swarm, "deploy", tag, manifest, extra, migrate=True)


def _rollout(
    ctx: EnvContext,
    swarm: Swarm,
    action: str,
    tag: str,
    manifest: Mapping[str, Any],
    extra: Mapping[str, Any],
    *,
    migrate: bool,
) -> None:
    """A release onto the swarm (the lock held): images to every node, migrations, the
    rolling update watched to its end, each step and the outcome in the trail."""
    who = git.who_am_i(ctx.run, ctx.settings.root)
    steps = ops.Steps(ctx)
    serving = swarm.serving()
    running = swarm.image("cms")
    if serving == tag and running and _swarm_done(ctx, swarm, who, tag, running):
        raise NothingToDo(f"'{ctx.env.name}' already serves {tag}")
    # (the same release cut short, by a kill or a lost node: finished below)
    swarm.refuse_new_db_password()
    with steps.step(f"pushing {tag}'s images to the swarm's registry ({swarm.lab.registry})"):
        refs = swarm.kept_refs(swarm.push(manifest, tag))
    with steps.step("pulling them on every node, by digest"):
        swarm.pull_everywhere(refs)
    assert ctx.env.swarm is not None
    replicas = (swarm.replicas()[0] if serving else 0) or ctx.env.swarm.replicas
    values = swarm.variables(refs, tag, replicas)
    detail = {"from": serving, "backend": "swarm", "replicas": replicas,
              "config": _configuration(ctx), "images": refs, **extra}  # fmt: skip
    if serving is None:
        with steps.step("starting the database, its pool and the proxy"):
            swarm.deploy_stack({**values, "LOREPIN_REPLICAS": "0"})
            swarm.wait_db()
            swarm.wait_proxy()
    if ctx.run.dry_run:
        _swarm_steps(ctx, swarm, steps, values, tag, who, serving, migrate=migrate)
        ctx.run.say("dry run: nothing was pushed, deployed or recorded")
        return
    with swarm.trail(who) as trail:
        ops.record(trail, ctx, who, action, tag, "started", detail)
        ops.notify_team(ctx, f"{action} of {tag} to {ctx.env.name} (swarm; from {serving})")
        try:
            outcome, why = _swarm_steps(
                ctx, swarm, steps, values, tag, who, serving, migrate=migrate
            )
        except (LorePinError, KeyboardInterrupt) as exc:
            outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            why = "interrupted (Ctrl-C)" if outcome == "interrupted" else str(exc)
        if outcome != "succeeded":
            ops.record(trail, ctx, who, action, tag, outcome, {**detail, "reason": why}, steps)
            ops.notify_team(ctx, f"{action} of {tag} to {ctx.env.name}: {outcome} ({why})")
            if outcome == "rolled-back":
                raise LorePinError(f"{tag} failed on the swarm, and Swarm rolled it back to "
                                   f"{serving}: {why}")  # fmt: skip
            if outcome == "interrupted":
                ctx.run.say(f"Swarm goes on with what it was doing: `invoke deploy --env "
                            f"{ctx.env.name} --version {tag}` again finishes it")  # fmt: skip
                raise KeyboardInterrupt
            raise LorePinError(f"{action} of {tag}: {why} (`invoke deploy.history --env "
                               f"{ctx.env.name}`)")  # fmt: skip
        ops.record(trail, ctx, who, action, tag, "succeeded", detail, steps)
    ops.notify_team(ctx, f"{tag} serves on {ctx.env.name} (swarm, {action})")
    total = sum(s.seconds for s in steps.done)
    print(f"'{ctx.env.name}' serves {tag} on {_replicas(replicas)} across the swarm "
          f"({total:.1f} s): {', '.join(swarm.proxy_urls())}")  # fmt: skip


def _replicas(count: int) -> str:
    return f"{count} replica{'' if count == 1 else 's'}"


def _swarm_done(ctx: EnvContext, swarm: Swarm, who: str, tag: str, image: str) -> bool:
    """The release serves, its update ended, and its last record says it succeeded."""
    if swarm.update_state()[0] not in (None, "completed") or not swarm.converged(image):
        return False
    if ctx.run.dry_run:
        return True
    moves = [r for r in swarm.records(who) if r.get("version") == tag
             and r.get("action") in ("deploy", "rollback")]  # fmt: skip
    return bool(moves) and moves[-1].get("outcome") == "succeeded"


def _swarm_steps(
    ctx: EnvContext,
    swarm: Swarm,
    steps: ops.Steps,
    values: Mapping[str, str],
    tag: str,
    who: str,
    serving: str | None,
    *,
    migrate: bool,
) -> tuple[str, str]:
    """('succeeded' | 'rolled-back' | 'stuck', why)."""
    secrets_ = swarm.secrets(values)
    image, replicas = values["LOREPIN_CMS_IMAGE"], int(values["LOREPIN_REPLICAS"])
    target = "expand" if serving else "head"
    swarm.ensure_secrets(values)
    if migrate:
        with steps.step(f"migrating ({target} revisions of {tag}, as a Swarm job)"):
            swarm.migrate(image, secrets_, f"deploy {tag} ({who})", ["upgrade", "--to", target])
    with steps.step(f"rolling {tag} out (start-first, {_replicas(replicas)})"):
        swarm.deploy_stack(values)
        if serving is None:
            swarm.wait_replicas(replicas)
            outcome, why = "succeeded", ""
        else:
            outcome, why = swarm.wait_update(image)
        if outcome == "succeeded":
            swarm.wait_support()
    if outcome == "succeeded" and serving and migrate:
        with steps.step(f"migrating (the rest of {tag}: its contract revisions)"):
            swarm.migrate(image, secrets_, f"deploy {tag} ({who})", ["upgrade", "--to", "head"])
    return outcome, why


def _rollback_swarm(ctx: EnvContext, to: str, yes: bool) -> None:
    """Back to the previous release that served (or `--to`): a rolling update like a
    deploy's, without migrations (the CMS's /readyz says whether it runs on this schema;
    if not, Swarm rolls the rollback back and says so)."""
    swarm = Swarm(ctx)
    swarm.require_up()
    if swarm.serving() is None:  # before the secrets: a first deploy makes some
        raise NothingToDo(f"nothing is deployed to '{ctx.env.name}'")
    secrets.require(ctx)
    with locked(ctx, "rollback"):
        serving = swarm.serving()
        if serving is None:
            raise NothingToDo(f"nothing is deployed to '{ctx.env.name}'")
        with swarm.trail(git.who_am_i(ctx.run, ctx.settings.root)) as trail:
            records = trail.records()
        moves = ("deploy", "rollback")
        good = [r.get("version") for r in records
                if r.get("action") in moves and r.get("outcome") == "succeeded"]  # fmt: skip
        earlier = [v for v in good if v and v != serving]
        target = to or (earlier[-1] if earlier else "")
        if not target:
            raise NothingToDo(f"'{ctx.env.name}' has served no other release than {serving}")
        if target not in good:
            raise Refused(f"{target} never served on '{ctx.env.name}': deploy it instead")
        if ctx.env.kind == "production" and not ctx.run.dry_run:
            confirm(f"Roll production back from {serving} to {target}?", yes=yes)
        _rollout(ctx, swarm, "rollback", target, _manifest(ctx, target), {}, migrate=False)


@task(
    help={
        "env": SERVER_ENV_HELP,
        "replicas": "how many CMS replicas (within invoke.yaml's swarm.min..swarm.max)",
        "dry_run": DRY_HELP,
    }
)
def scale(c: Context, env: str = "", replicas: str = "", dry_run: bool = False) -> None:
    """Scale a swarm environment's CMS to N replicas; waits until all serve; recorded."""
    ctx = server_env(c, env, dry_run, what="scaling is for", swarm=True)
    policy = ctx.env.swarm
    if policy is None:
        raise ConfigError(f"'{ctx.env.name}' runs on one engine (backend: compose): "
                          "scaling is for `backend: swarm` environments")  # fmt: skip
    if not replicas:
        raise ConfigError(f"say how many: --replicas {policy.min}..{policy.max}")
    count = whole_number(replicas, "--replicas", low=-(10**6), high=10**6)
    swarm_plan.check_replicas(count, policy.min, policy.max, ctx.env.name)
    swarm = Swarm(ctx)
    swarm.require_up()
    who = git.who_am_i(ctx.run, ctx.settings.root)
    with locked(ctx, "scale"):
        desired, _ = swarm.replicas()
        serving = swarm.serving()
        if serving is None:  # (a dry run asks too)
            raise NothingToDo(f"nothing is deployed to '{ctx.env.name}': deploy first")
        if desired == count and swarm.replicas()[1] == count:
            raise NothingToDo(f"'{ctx.env.name}' runs {_replicas(count)} already")
        steps = ops.Steps(ctx)
        if ctx.run.dry_run:
            swarm.scale(count)
            ctx.run.say("dry run: nothing was scaled or recorded")
            return
        detail = {"from": desired, "to": count}
        with swarm.trail(who) as trail:
            ops.record(trail, ctx, who, "scale", serving, "started", detail)
            try:
                with steps.step(f"scaling the CMS from {desired} to {_replicas(count)}"):
                    swarm.scale(count)
                    swarm.wait_replicas(count)
            except (LorePinError, KeyboardInterrupt) as exc:
                why = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else str(exc)
                ops.record(trail, ctx, who, "scale", serving, "failed",
                           {**detail, "reason": why}, steps)  # fmt: skip
                raise
            ops.record(trail, ctx, who, "scale", serving, "succeeded", detail, steps)
    print(f"'{ctx.env.name}' runs {_replicas(count)} of {serving} "
          f"({steps.done[-1].seconds:.1f} s)")  # fmt: skip


def _check_e2e(c: Context, ctx: EnvContext, where: str, tag: str) -> None:
    """The policy's `requires_e2e`: the newest end-to-end run of this version on that
    environment (its trail) passed."""
    other = open_env(c, where, dry_run=False, settings=ctx.settings)
    records = ops.trail_records(other, git.who_am_i(ctx.run, ctx.settings.root))
    if records is None:
        raise Refused(
            f"'{ctx.env.name}' needs a green end-to-end run on '{where}' first, and the "
            f"trail of '{where}' cannot be read (its database is down)"
        )
    runs = [r for r in records if r.get("action") == "e2e" and r.get("version") == tag]
    if not runs or runs[-1].get("outcome") != "passed":
        state = f"its last one {runs[-1].get('outcome')}" if runs else "none is recorded"
        raise Refused(
            f"v{tag} needs a green end-to-end run on '{where}' before '{ctx.env.name}' "
            f"({state}): deploy it there and run `invoke e2e --env {where}`"
        )


HBA_REPLICATION = "host replication all all scram-sha-256"


def _allow_replication(ctx: EnvContext) -> None:
    """A database started before its environment had a replica lets the replica clone it
    (its entrypoint does this at every start; a running one is told here, and reloads)."""
    if not ctx.env.replica or not ops.database_running(ctx):
        return
    hba = f"{compose.PGDATA}/pg_hba.conf"
    script = (
        f"grep -qs '^{HBA_REPLICATION}' {hba} || "
        f"{{ echo '{HBA_REPLICATION}' >>{hba} && pg_ctl reload -D {compose.PGDATA}; }}"
    )
    ctx.run.run(
        [*compose.docker(ctx.env), "exec", "-u", "postgres",
         plan.container(ctx.env, compose.DB_SERVICE), "sh", "-c", script],
        env=ctx.engine, capture=True,
    )  # fmt: skip


def stanza(ctx: EnvContext) -> None:
    """pgBackRest's stanza for the environment's database (its WAL archive needs one);
    creating an existing one only checks it."""
    done = ops.pgbackrest(ctx, backup_plan.pgbackrest(ctx.env, "stanza-create"), capture=True)
    if not done.ok and not ctx.run.dry_run:
        raise LorePinError(f"pgBackRest stanza-create: {last_line(done.stderr)}")


def _check_images(ctx: EnvContext, tag: str, manifest: Mapping[str, Any] | None = None) -> None:
    """The release's images are on the environment's engine, exactly as it was cut."""
    manifest = manifest or _manifest(ctx, tag)
    expected = plan.release_images(ctx.settings.image_prefix, tag)
    found = docker.images(ctx.run, compose.docker(ctx.env), list(expected.values()))
    problems = plan.release_problems(
        manifest, expected, {r: found[r].id if r in found else None for r in expected.values()}
    )
    if problems:
        raise ConfigError(f"v{tag} cannot be deployed here: {problems[0]}")


def _version(tag: str) -> Any:
    from semver import Version

    try:
        return Version.parse(tag)
    except ValueError:
        return None


def _deploy(
    ctx: EnvContext,
    backend: Backend,
    steps: ops.Steps,
    trail: Trail | None,
    tag: str,
    who: str,
    override: str | None,
    images: Mapping[str, Any],
    approved_by: list[str],
) -> None:
    policy = ctx.env.deploy
    assert policy is not None
    state = backend.state()
    serving = state.serving
    if serving == tag:
        _finish(ctx, backend, steps, trail, state, who)
        return
    idle, old = state.idle, state.active
    detail = {
        "from": serving,
        "colour": idle,
        "config": _configuration(ctx),
        "images": images,
        "window_override": override,
        "approved_by": approved_by,  # the release's approvers (audit.report)
    }
    ops.record(trail, ctx, who, "deploy", tag, "started", detail)
    ops.notify_team(ctx, f"deploying {tag} to {ctx.env.name} (from {serving or 'nothing'})")
    switched, switched_at, held = False, 0.0, False
    try:
        if ctx.env.backup_before_migrate:
            with steps.step("backing up the database"):
                backup_database(ctx, f"before-deploy-{tag}")
        # While a release serves, its successor's contract revisions wait until it stops.
        target = "expand" if old is not None else "head"
        with steps.step(f"migrating ({target} revisions of {tag})"):
            run_migrator(ctx, ["upgrade", "--to", target])
        with steps.step(f"starting {tag} on {idle}"):
            backend.start(state, idle, tag)
        with steps.step(f"waiting until {idle} is ready"):
            ops.wait_ready(ctx, backend, idle, tag)
        with steps.step(f"smoke-testing {idle}"):
            if not ctx.run.dry_run:
                _smoke(backend, idle, tag)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        with steps.step(f"switching the proxy to {idle}"):
            backend.switch(idle)
            switched, switched_at = True, time.monotonic()
        with steps.step(f"watching {tag} for {policy.watch} s"):
            failed = _watch(ctx, backend, since, policy.watch)
            if failed:
                raise WatchFailed(failed)
        held = True  # from here on the new release stays, whatever happens
        if old is not None:
            with steps.step(f"pausing {old} ({serving}; kept for a rollback)"):
                _drain(ctx, switched_at)
                backend.keep(old)
        if old is not None:
            with steps.step(f"migrating (the rest of {tag}: its contract revisions)"):
                run_migrator(ctx, ["upgrade", "--to", "head"])
    except (LorePinError, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        why = "interrupted (Ctrl-C)" if interrupted else str(exc)
        if held:  # it serves and held its watch: finish, do not undo
            outcome = "failed"
            message = f"{tag} serves, but its deploy did not finish ({why}): deploy it again"
        elif switched and old is None:  # a first release that failed: serve nothing
            backend.switch(None)
            backend.stop(idle)
            outcome, message = "failed", f"{tag} failed after the switch and was stopped ({why})"
        elif switched:  # put the previous release back, then say why
            backend.switch(old)
            backend.stop(idle)
            outcome = "rolled-back"
            message = f"{tag} failed after the switch and was rolled back to {serving} ({why})"
        else:
            if not ctx.run.dry_run:
                backend.stop(idle)  # the previous release never stopped serving
            outcome, message = "failed", f"{why}; {serving or 'nothing'} still serves"
        outcome = "interrupted" if interrupted else outcome
        ops.record(trail, ctx, who, "deploy", tag, outcome, {**detail, "reason": why}, steps)
        ops.notify_team(ctx, f"deploy of {tag} to {ctx.env.name}: {outcome} ({why})")
        if interrupted:
            ctx.run.say(message)
            raise
        raise LorePinError(message) from None
    ops.record(trail, ctx, who, "deploy", tag, "succeeded", detail, steps)
    ops.notify_team(ctx, f"{tag} deployed to {ctx.env.name}")
    _prune_images(ctx, policy.keep)
    if not ctx.run.dry_run:
        total = sum(s.seconds for s in steps.done)
        print(f"'{ctx.env.name}' serves {tag} on {idle} ({total:.1f} s; {old or 'nothing'} kept)")
        if not any(c.service == "prometheus" for c in docker.containers(ctx)):
            ctx.run.say(
                f"nothing watches '{ctx.env.name}' yet: "
                f"`invoke monitor.up --env {ctx.env.name}` starts its monitoring"
            )
    else:
        ctx.run.say("dry run: nothing was started, switched or recorded")


def _finish(
    ctx: EnvContext,
    backend: Backend,
    steps: ops.Steps,
    trail: Trail | None,
    state: plan.State,
    who: str,
) -> None:
    """The release serves already: finish what a deploy cut short after its switch (the
    previous colour still running, contract revisions not applied), or say so."""
    tag, idle = state.serving, state.idle
    records = trail.records() if trail else mirrored(ctx.env.state_dir / "audit.jsonl")
    last: dict[str, Any] = next((r for r in reversed(records) if r.get("version") == tag), {})
    down = state.active is not None and not state.colours[state.active].running
    if not down and not state.colours[idle].running and last.get("outcome") in (None, "succeeded"):
        raise NothingToDo(f"'{ctx.env.name}' already serves {tag}")
    detail = {"finishing": "the deploy that switched to it did not finish"}
    if down:
        detail = {"finishing": f"{state.active}, which the proxy routes to, was not running"}
    ops.record(trail, ctx, who, "deploy", tag, "started", detail)
    try:
        if down and state.active and tag:
            with steps.step(f"starting {state.active} ({tag}): it was not running"):
                backend.start(state, state.active, tag)
                ops.wait_ready(ctx, backend, state.active, tag)
        if state.colours[idle].running:
            with steps.step(f"pausing {idle} ({state.colours[idle].version}; kept)"):
                backend.keep(idle)
        with steps.step(f"migrating (the rest of {tag}: its contract revisions)"):
            run_migrator(ctx, ["upgrade", "--to", "head"])
    except LorePinError as exc:
        ops.record(trail, ctx, who, "deploy", tag, "failed", {**detail, "reason": str(exc)}, steps)
        raise
    ops.record(trail, ctx, who, "deploy", tag, "succeeded", detail, steps)
    print(f"'{ctx.env.name}' serves {tag}: finished its deploy ({idle} kept)")


def _prune_images(ctx: EnvContext, keep: int) -> None:
    """Release images beyond the newest `keep` versions go; one a container uses (the
    serving and the kept colour, any environment's) never does. A failure only warns."""
    remove, _ = docker.prunable_images(ctx, keep=keep)
    if not remove:
        return
    tags = [f"{i.repository}:{i.tag}" for i in remove]
    ctx.run.say(
        f"==> {ctx.env.name}: removing {len(tags)} image tag(s) beyond the newest {keep} versions"
    )
    result = ctx.run.run(images_plan.remove(tags), env=ctx.engine, capture=True, check=False)
    if not result.ok:
        ctx.run.say(f"warning: old images were not all removed: {last_line(result.stderr)}")


def _drain(ctx: EnvContext, switched_at: float) -> None:
    """Requests the old colour took before the switch finish before it is frozen."""
    if not ctx.run.dry_run:
        time.sleep(max(0.0, DRAIN - (time.monotonic() - switched_at)))


class WatchFailed(LorePinError):
    """The new release misbehaved after the switch."""


@task(
    help={
        "env": SERVER_ENV_HELP,
        "to": "the release to go back to (default: the one before the current)",
        "yes": YES_HELP,
        "dry_run": DRY_HELP,
    }
)
def rollback(
    c: Context, env: str = "", to: str = "", yes: bool = False, dry_run: bool = False
) -> None:
    """Go back to the previous release: the kept colour in seconds, an older one from its image."""
    ctx = server_env(c, env, dry_run, swarm=True)
    target = plan.release_tag(to) if to else ""
    if ctx.env.swarm is not None:
        _rollback_swarm(ctx, target, yes)
        return
    secrets.require(ctx)
    ops.refuse_failed_over(ctx)
    who = git.who_am_i(ctx.run, ctx.settings.root)
    backend = ComposeBlueGreen(ctx)
    with locked(ctx, "rollback"):
        docker.ensure_owned(ctx)
        if not ops.database_running(ctx):
            if not docker.services(ctx):
                raise NothingToDo(f"nothing is deployed to '{ctx.env.name}'")
            raise LorePinError(
                f"the database of '{ctx.env.name}' is not running: a rollback needs it for "
                f"its lock and its record (`invoke status --env {ctx.env.name}`)"
            )
        with ops.deploy_lock(ctx, who, "rollback") as session:
            trail = ops.open_trail(ctx, session, who)
            state = backend.state()
            if state.active is None:
                raise NothingToDo(f"nothing is deployed to '{ctx.env.name}'")
            serving = state.serving
            served = _served(ctx, trail)
            # The previous release: the kept colour's (what served before this one, even
            # when that deploy was cut short), else the trail's last other good one. A
            # stopped colour is a release that failed; a running one that never served
            # was started by a deploy cut short before its switch.
            other = state.colours[state.idle]
            alive = other.paused or other.running
            kept = other.version if alive and other.version in served else None
            previous = next((v for v in reversed(served) if v != serving), None)
            target = target or kept or previous or ""
            if not target:
                raise NothingToDo(f"no release before {serving} in the history of '{ctx.env.name}'")
            if target == serving:
                raise NothingToDo(f"'{ctx.env.name}' already serves {target}")
            if target != kept and target not in served:  # a rollback is no way round a deploy
                raise Refused(
                    f"{target} never served '{ctx.env.name}': deploy it instead "
                    f"(`invoke deploy --env {ctx.env.name} --version {target}`), where its "
                    "approvals and the deploy windows apply"
                )
            if session is not None:
                _schema_allows(ctx, session, target)
            if kept != target:  # not the kept one: it starts from its images
                _check_images(ctx, target)
                if session is not None:
                    _cms_role_ready(ctx, session)
            if ctx.env.kind == "production" and not ctx.run.dry_run:
                confirm(f"Roll production back from {serving} to {target}?", yes=yes)
            _rollback(ctx, backend, trail, state, target, who)


def _cms_role_ready(ctx: EnvContext, session: Session) -> None:
    """A colour started from its image connects as the CMS's role: refuse, before anything
    changes, on a database no deploy of this toolkit has given that role yet."""
    if not session.query(plan.CMS_ROLE_SQL):
        raise Refused(
            f"the database of '{ctx.env.name}' has no login role lorepin_cms yet, which a "
            f"release started from its image connects as: deploy once first (`invoke deploy "
            f"--env {ctx.env.name} --version X.Y.Z`; its migrator makes the role)"
        )


def _schema_allows(ctx: EnvContext, session: Session, target: str) -> None:
    """Refuse, before anything changes, a release the schema has been contracted past."""
    head = _release_head(ctx, target)
    if head is None:
        return  # a release this machine has no manifest of: its readiness will judge
    current, ledger = plan.schema_facts(session.query(plan.SCHEMA_SQL))
    blocking = plan.contract_between(current, head, ledger)
    if blocking:
        raise Refused(
            f"{target} cannot run on the schema of '{ctx.env.name}': contract revision "
            f"{blocking} was applied after it; downgrade below it or restore a backup first "
            "(docs/runbooks/rollback.md)"
        )


def _release_head(ctx: EnvContext, tag: str) -> str | None:
    try:
        head = _manifest(ctx, tag).get("migration_head")
    except ConfigError:
        return None
    return str(head) if head else None


def _served(ctx: EnvContext, trail: Trail | None) -> list[str]:
    """The releases that served the environment, oldest first (its good deploys and
    rollbacks). A dry run takes no lock and opens no session: it reads this machine's copy."""
    records = trail.records() if trail else mirrored(ctx.env.state_dir / "audit.jsonl")
    return [
        str(r["version"])
        for r in records
        if r.get("action") in ("deploy", "rollback") and r.get("outcome") == "succeeded"
    ]


def _rollback(
    ctx: EnvContext, backend: Backend, trail: Trail | None, state: plan.State, target: str, who: str
) -> None:
    steps = ops.Steps(ctx)
    started = time.monotonic()
    colour, current = state.idle, state.active
    kept = state.colours[colour].version == target
    detail = {"from": state.serving, "colour": colour}
    ops.record(trail, ctx, who, "rollback", target, "started", detail)
    try:
        with steps.step(f"starting {target} on {colour}" + (" (kept)" if kept else "")):
            backend.start(state, colour, target)
        with steps.step(f"waiting until {colour} is ready"):
            ops.wait_ready(ctx, backend, colour, target)
        with steps.step(f"switching the proxy to {colour}"):
            backend.switch(colour)
    except LorePinError as exc:
        if not ctx.run.dry_run:
            backend.stop(colour)
        ops.record(
            trail, ctx, who, "rollback", target, "failed", {**detail, "reason": str(exc)}, steps
        )
        raise LorePinError(
            f"cannot roll back to {target}: {exc}; {state.serving} still serves "
            "(docs/runbooks/rollback.md)"
        ) from None
    took = time.monotonic() - started
    if current is not None:
        with steps.step(f"pausing {current} ({state.serving}; kept)"):
            _drain(ctx, time.monotonic())
            backend.keep(current)
    ops.record(trail, ctx, who, "rollback", target, "succeeded", detail, steps)
    ops.notify_team(ctx, f"{ctx.env.name} rolled back from {state.serving} to {target}")
    if not ctx.run.dry_run:
        print(f"'{ctx.env.name}' serves {target} on {colour} again (switched after {took:.1f} s)")


@task(help={"env": SERVER_ENV_HELP, "json": JSON_HELP, "dry_run": DRY_HELP})
def history(c: Context, env: str = "", json_: bool = False, dry_run: bool = False) -> None:
    """Show the environment's trail: deploys, rollbacks, restores, failovers and the
    backup schedule's runs; who, what, when, each step, outcome."""
    ctx = server_env(c, env, dry_run, swarm=True)
    records: list[dict[str, Any]] | None = None
    pending: list[Mapping[str, Any]] = []  # the autoscaler's, not sealed in yet
    if ctx.env.swarm is None:
        records = ops.trail_records(ctx, "history")
    elif not ctx.run.dry_run and (swarm := Swarm(ctx)).serving_db():
        records = swarm.records("history")
        pending = swarm.pending_decisions(records)
    elif not ctx.run.dry_run:
        ctx.run.say(f"the database of '{ctx.env.name}' is not running on its swarm")
    if records is None:  # this machine's copy, said so
        records = mirrored(ctx.env.state_dir / "audit.jsonl")
        ctx.run.say(f"(this machine's copy of the trail: {len(records)} records)")
    if json_:
        print(json.dumps(records, indent=2))
        return
    if not records:
        print(f"no deploys to '{ctx.env.name}' yet")
        return
    print(f"{'#':>4} {'WHEN (UTC)':<20} {'ACTION':<16} {'VERSION':<12} {'OUTCOME':<12} WHO")
    for r in records:
        print(
            f"{r.get('seq'):>4} {str(r.get('at'))[:19]:<20} {r.get('action', '?'):<16} "
            f"{r.get('version') or '-':<12} {r.get('outcome', '?'):<12} {r.get('who')}"
        )
        why = (r.get("detail") or {}).get("reason") or (r.get("detail") or {}).get(
            "window_override"
        )
        if why:
            print(f"{'':>26}{why}")
        if r.get("action") == ops.SCHEDULED:
            d = r.get("detail") or {}
            said = f": {d['message']}" if d.get("message") else ""
            print(f"{'':>26}{d.get('type')} into repo{d.get('repo')} at {d.get('run_at')}{said}")
        if r.get("action") == swarm_plan.AUTOSCALE:
            d = r.get("detail") or {}
            print(f"{'':>26}{d.get('from')} -> {d.get('to')} replicas at {d.get('run_at')}")
    if pending:
        print("\nthe autoscaler's decisions since (the next deploy, rollback or scale seals "
              "them into the trail):")  # fmt: skip
        for d in pending:
            print(f"     {str(d.get('at'))[:19]:<20} {d.get('from')} -> {d.get('to')} replicas "
                  f"({d.get('outcome')}): {d.get('reason')}")  # fmt: skip


@task(name="lock", help={"env": SERVER_ENV_HELP, "dry_run": DRY_HELP})
def lock_(c: Context, env: str = "", dry_run: bool = False) -> None:
    """Show who holds the environment's deploy lock, and since when."""
    ctx = server_env(c, env, dry_run)
    if ctx.run.dry_run:
        ctx.run.run(plan.psql(ctx.env, "lock"), env=ctx.variables)
        return
    if not ops.database_running(ctx):
        print(f"'{ctx.env.name}' is not locked (its database is not running)")
        return
    with Session(
        ctx.run, plan.psql(ctx.env, "lock"), ctx.variables, "database", quiet=True
    ) as session:
        ops.ensure_schema(session)
        rows = session.query(plan.holder_sql())
    if rows and len(rows[0]) == 3:
        who, action, since = rows[0]
        doing = f" ({action})" if action else ""
        print(f"'{ctx.env.name}' is locked by {who}{doing} since {since} UTC")
    else:
        print(f"'{ctx.env.name}' is not locked")


ns = Collection("deploy", deploy, history, lock_)
