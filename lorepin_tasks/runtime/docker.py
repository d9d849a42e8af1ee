"""The Docker and Compose adapter: what an environment is made of, what runs, who owns it.

Every query the tasks need about containers, volumes, images and the Compose model lives
here, run through the executor with argv from `plans.compose`. Compose 2.40 on engine
20.10 exits 0 on several failures, so callers check outcomes with these queries (a
container's state, an image's presence), never a Compose exit code alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorepin_tasks.errors import ConfigError, LorePinError, Refused, for_exit_code, last_line
from lorepin_tasks.plans import compose, feature
from lorepin_tasks.plans import images as images_plan
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.executor import Executor, Result
from lorepin_tasks.settings import Environment

CHECKOUT_LABEL = f"{compose.LABEL}.checkout"
CACHED_MODELS = 16  # environments whose Compose model a checkout keeps at hand


def decode(text: str, what: str) -> Any:
    """JSON from a Docker command, or a one-line error naming the command's output."""
    try:
        return json.loads(text)
    except ValueError:
        raise LorePinError(
            f"could not read {what} (unexpected output {text.strip()[:80]!r}); "
            "is the Docker engine healthy? (docker info)"
        ) from None


def read(run: Executor, argv: list[str], *, env: dict[str, str] | None = None) -> Result:
    """A read-only query: runs under dry-run too, prints nothing, fails clearly.

    A dry run still shows its commands when no engine answers: the query then finds
    nothing instead of failing.
    """
    result = run.run(argv, env=env, capture=True, mutates=False, quiet=True, check=not run.dry_run)
    return result if result.ok else Result(result.argv, 0, "", "", result.seconds)


# -- the Compose model ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Service:
    name: str
    image: str | None
    build: dict[str, Any] | None  # context, dockerfile, args, target (resolved)
    one_shot: bool  # runs to completion (e.g. migrate) instead of staying up


@dataclass(frozen=True, kw_only=True)
class Model:
    services: dict[str, Service]

    def names(self) -> list[str]:
        return list(self.services)

    def check(self, names: list[str], env_name: str) -> list[str]:
        """`names` when every one is a service of the environment; a one-line error if not."""
        unknown = [n for n in names if n not in self.services]
        if unknown:
            raise ConfigError(
                f"unknown service {', '.join(map(repr, unknown))} in '{env_name}'; "
                f"its services: {', '.join(self.services)}"
            )
        return names


def model(ctx: EnvContext) -> Model:
    """The environment's resolved Compose model, cached per checkout by its inputs.

    `compose config` costs ~0.2 s; the files and variables that decide its answer are
    hashed, so a warm `up` reads the answer from the checkout's cache dir instead
    (~/.cache/lorepin/<checkout>/).
    """
    variables = ctx.variables
    key = hashlib.sha256()
    for path in ctx.env.compose_files:
        try:
            key.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError as exc:
            raise ConfigError(f"cannot read the compose file {path}: {exc.strerror}") from None
    key.update(json.dumps(variables, sort_keys=True).encode())
    cache = ctx.settings.cache_dir / f"compose-{key.hexdigest()[:24]}.json"
    data = _cached(cache)
    if data is None:
        # Compose 2.40 can exit 0 having printed only an error: read its stderr then.
        result = read(ctx.run, compose.config(ctx.env), env=variables)
        if ctx.run.dry_run and not result.stdout.strip():
            return Model(services={})
        if not result.stdout.strip():
            raise LorePinError(
                f"Compose cannot read the files of '{ctx.env.name}': "
                f"{last_line(result.stderr) or 'no output'}"
            )
        data = decode(result.stdout, f"the Compose model of '{ctx.env.name}'")
        if not ctx.run.dry_run:
            _keep(cache, data)
    raw = data.get("services") or {}
    awaited = {
        dep
        for spec in raw.values()
        for dep, how in (spec.get("depends_on") or {}).items()
        if (how or {}).get("condition") == "service_completed_successfully"
    }
    return Model(
        services={
            name: Service(
                name=name,
                image=spec.get("image"),
                build=spec.get("build"),
                one_shot=name in awaited or spec.get("restart") == "no",
            )
            for name, spec in raw.items()
        }
    )


def _cached(cache: Path) -> Any:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    os.utime(cache)  # the newest used survive the trimming in _keep
    return data


def _keep(cache: Path, data: Any) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(data))
    kept = sorted(cache.parent.glob("compose-*.json"), key=lambda p: p.stat().st_mtime)
    for old in kept[:-CACHED_MODELS]:
        old.unlink(missing_ok=True)


# -- containers ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Container:
    id: str
    name: str
    service: str
    state: str  # created, running, exited, dead, ...
    exit_code: int
    health: str | None  # healthy, unhealthy, starting; None without a healthcheck
    error: str  # the engine's reason a start failed (a port in use, ...)
    image: str  # as configured (name:tag)
    image_id: str = ""  # what it runs (sha256:...)
    restarts: int = 0  # times the engine restarted it (a crash loop counts up)
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @property
    def one_off(self) -> bool:
        return self.labels.get("com.docker.compose.oneoff") == "True"

    def published(self, container_port: int) -> str | None:
        bound = self.ports.get(f"{container_port}/tcp") or []
        return f"{bound[0]['HostIp']}:{bound[0]['HostPort']}" if bound else None


def inspect_containers(
    run: Executor, ids: list[str], env: Environment | None = None
) -> list[Container]:
    if not ids:
        return []
    argv = compose.inspect(env, *ids) if env else ["docker", "inspect", *ids]
    engine = {"DOCKER_HOST": env.docker_host} if env and env.docker_host else None
    # A container removed since it was listed (a one-off finishing) is simply not there:
    # docker inspect still prints the others, and exits 1.
    result = run.run(argv, env=engine, capture=True, check=False, mutates=False, quiet=True)
    details = decode(result.stdout or "[]", "docker inspect")
    found = []
    for d in details:
        state, config = d.get("State") or {}, d.get("Config") or {}
        labels = config.get("Labels") or {}
        found.append(
            Container(
                id=d.get("Id", ""),
                name=str(d.get("Name", "")).lstrip("/"),
                service=labels.get("com.docker.compose.service", ""),
                state=state.get("Status", "?"),
                exit_code=int(state.get("ExitCode") or 0),
                health=(state.get("Health") or {}).get("Status"),
                error=state.get("Error") or "",
                image=config.get("Image", ""),
                image_id=d.get("Image", ""),
                restarts=int(d.get("RestartCount") or 0),
                labels=labels,
                ports=(d.get("NetworkSettings") or {}).get("Ports") or {},
            )
        )
    return found


def container(ctx: EnvContext, name: str) -> Container | None:
    """One container of the environment's engine by name (None: there is none)."""
    found = inspect_containers(ctx.run, [name], ctx.env)
    return found[0] if found else None


def containers(ctx: EnvContext) -> list[Container]:
    """Every container of the environment's project (docker ps + inspect: ~50 ms)."""
    ids = read(ctx.run, compose.project_containers(ctx.env), env=ctx.engine).stdout.split()
    return inspect_containers(ctx.run, ids, ctx.env)


def services(ctx: EnvContext) -> list[Container]:
    """The containers of the project's services, one-offs (migrate runs, seeds) left out."""
    return [c for c in containers(ctx) if not c.one_off]


def published_url(ctx: EnvContext, found: list[Container] | None = None) -> str:
    """The CMS's URL on the host, as Docker actually published it."""
    for c in found if found is not None else services(ctx):
        if c.service == compose.HTTP_SERVICE and (address := c.published(compose.HTTP_PORT)):
            return f"http://{address}"
    raise LorePinError(
        f"the cms service of '{ctx.env.name}' is not running: start it with `{ctx.hint('up')}`"
    )


def published(ctx: EnvContext, service: str, port: int) -> str | None:
    for c in services(ctx):
        if c.service == service and (address := c.published(port)):
            return address
    return None


def feature_environments(run: Executor, checkout: str) -> list[feature.Found]:
    """One checkout's feature environments, from their containers' and volumes' labels."""
    containers_q, volumes_q = feature.find(checkout)
    found = inspect_containers(run, read(run, containers_q).stdout.split())
    volume_names = read(run, volumes_q).stdout.split()
    volume_labels: list[dict[str, str]] = []
    if volume_names:
        details = decode(
            read(run, feature.inspect_volumes(volume_names)).stdout, "docker volume inspect"
        )
        volume_labels = [v.get("Labels") or {} for v in details]
    envs: dict[str, dict[str, Any]] = {}
    for labels in [*(c.labels for c in found), *volume_labels]:
        project = labels.get(compose.PROJECT_LABEL)
        if project:
            envs.setdefault(
                project,
                {
                    "branch": labels.get(f"{compose.LABEL}.branch", "?"),
                    "created": labels.get(f"{compose.LABEL}.created-at"),
                    "expires": None,
                    "url": None,
                    "health": "stopped",
                    "containers": 0,
                },
            )
    for c in found:
        env = envs[c.labels[compose.PROJECT_LABEL]]
        env["containers"] += 1
        env["expires"] = c.labels.get(f"{compose.LABEL}.expires-at") or env["expires"]
        if c.service == compose.HTTP_SERVICE and not c.one_off:
            env["health"] = c.health or c.state
            if address := c.published(compose.HTTP_PORT):
                env["url"] = f"http://{address}"
    return sorted(
        (
            feature.Found(
                project=p,
                branch=e["branch"],
                created=feature.parse_stamp(e["created"]),
                expires=feature.parse_stamp(e["expires"]),
                url=e["url"],
                health=e["health"],
                containers=e["containers"],
            )
            for p, e in envs.items()
        ),
        key=lambda f: f.branch,
    )


@dataclass(frozen=True, kw_only=True)
class Volume:
    name: str
    labels: dict[str, str]

    @property
    def checkout(self) -> str:
        return self.labels.get(CHECKOUT_LABEL, "")


def volumes(ctx: EnvContext) -> list[Volume]:
    listed = read(ctx.run, compose.volumes(ctx.env), env=ctx.engine).stdout
    rows = [decode(line, "docker volume ls") for line in listed.splitlines() if line.strip()]
    return [Volume(name=r["Name"], labels=_labels(r.get("Labels") or "")) for r in rows]


def _labels(joined: str) -> dict[str, str]:
    """`docker volume ls`'s comma-joined Labels (the values on volumes hold no commas)."""
    return dict(pair.partition("=")[::2] for pair in joined.split(",") if pair)


# -- ownership -----------------------------------------------------------------------


def ensure_owned(ctx: EnvContext, *, data: bool = False) -> None:
    """Refuse to change an environment another checkout made.

    The owner is the checkout label on its containers and, when the step touches the data
    (`data=True`) or no container is left, on its volumes. Resources from before the
    label existed have no owner and may be taken over.
    """
    rows = read(ctx.run, compose.project_owners(ctx.env), env=ctx.engine).stdout.splitlines()
    fields = [[*row.split("\t"), "", ""][:3] for row in rows if row.strip()]
    owners = {(owner, where) for owner, where, _ in fields}
    envs = {env for _, _, env in fields}
    if data or not rows:
        found = volumes(ctx)
        owners |= {(v.checkout, "") for v in found}
        envs |= {v.labels.get(f"{compose.LABEL}.env", "") for v in found}
    if strangers := sorted(envs - {"", ctx.env.name}):
        raise Refused(
            f"project {ctx.env.project} holds environment '{strangers[0]}', not "
            f"'{ctx.env.name}': check LOREPIN_PROJECT and invoke.yaml; nothing was changed"
        )
    others = [
        (owner, where) for owner, where in owners if owner not in ("", ctx.settings.checkout.id)
    ]
    if others:
        where = next((w for _, w in others if w), "")
        raise Refused(
            f"project {ctx.env.project} belongs to another checkout"
            f"{f' ({where})' if where else ''}: run the task there, or give this checkout "
            "its own environment (LOREPIN_PROJECT=... LOREPIN_IMAGE_TAG=... "
            "LOREPIN_HTTP_PORT=0 LOREPIN_DB_PORT=0)"
        )


# -- outcomes ------------------------------------------------------------------------


def check_started(ctx: EnvContext, expected: Model, compose_error: str = "") -> list[Container]:
    """Fail with the cause unless every service is up (or, one-shot, exited 0).

    `compose up --wait` exits 0 even when a one-shot dependency (migrate) failed and its
    dependants never started, or when a port was taken, so the outcome is read back from
    the containers. The cause is named, not its consequences: a service that failed comes
    before one that could not start, which comes before one left waiting for them; when
    none failed, Compose's own error (`compose_error`) says why it stopped.
    """
    found = services(ctx)
    by_service = {c.service: c for c in found}
    problems: list[tuple[int, str, str]] = []
    for name, service in expected.services.items():
        c = by_service.get(name)
        if c is None:
            problems.append((3, name, "has no container"))
            continue
        if service.one_shot:
            ok = c.state == "exited" and c.exit_code == 0
        else:
            ok = c.state == "running" and c.health in (None, "healthy")
        if ok:
            continue
        if c.state == "exited":
            problems.append((0, name, f"exited with code {c.exit_code}: {_log_cause(ctx, name)}"))
        elif c.error:
            problems.append((1, name, f"could not start: {c.error}"))
        else:
            problems.append((2, name, f"is {c.state}{f' ({c.health})' if c.health else ''}"))
    if problems:
        priority, name, why = min(problems)
        if priority >= 2 and compose_error:  # nothing failed: Compose itself stopped short
            raise LorePinError(
                f"Compose could not start '{ctx.env.name}': {ctx.run.redact(compose_error)}"
            )
        # A one-shot job (the migrator) speaks the toolkit's exit codes: a refusal stays one.
        code = by_service[name].exit_code if priority == 0 and name in by_service else 1
        raise for_exit_code(
            code if expected.services[name].one_shot else 1,
            f"service '{name}' of '{ctx.env.name}' {why} "
            f"(full log: `{ctx.hint('logs', '--service', name)}`)",
        )
    return found


def _log_cause(ctx: EnvContext, service: str) -> str:
    log = ctx.run.run(
        compose.logs(ctx.env, [service], follow=False, tail="20"),
        env=ctx.variables,
        capture=True,
        check=False,
        mutates=False,
        quiet=True,
    ).stdout
    return ctx.run.redact(log_cause([line.split("|", 1)[-1].strip() for line in log.splitlines()]))


def log_cause(lines: list[str]) -> str:
    """The line of a failed service's log that says why: the last error line, else the last."""
    meaningful = [ln for ln in lines if ln and not ln.startswith("(Background on this error")]
    errors = [ln for ln in meaningful if "error" in ln.lower() or "fatal" in ln.lower()]
    return (errors or meaningful or ["no output"])[-1][:300]


def down(ctx: EnvContext, *, volumes_too: bool) -> None:
    """`compose down`, then proof that nothing of the project is left (Compose 2.40 can
    exit 0 having removed nothing: its own words are quoted then)."""
    result = ctx.run.run(
        compose.down(ctx.env, volumes=volumes_too),
        env=ctx.variables,
        check=False,
        capture_stderr=True,
        no_input=True,
    )
    if ctx.run.dry_run:
        return
    left = [c.name for c in containers(ctx)]
    if volumes_too:
        left += [v.name for v in volumes(ctx)]
    if left or not result.ok:
        why = ctx.run.redact(last_line(result.stderr)) or "see `docker ps -a`"
        raise LorePinError(
            f"'{ctx.env.name}' is not fully down ({', '.join(left) or 'compose failed'} "
            f"remain): {why}"
        )


# -- images --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Image:
    ref: str
    id: str
    labels: dict[str, str]


def images(run: Executor, env_argv: list[str], refs: list[str]) -> dict[str, Image]:
    """The images of `refs` that exist (one `docker image inspect` for all of them)."""
    if not refs:
        return {}
    result = run.run(
        [*env_argv, "image", "inspect", *refs], capture=True, check=False, mutates=False, quiet=True
    )
    found = decode(result.stdout or "[]", "docker image inspect")
    by_ref: dict[str, Image] = {}
    for d in found:
        for ref in refs:
            if ref in (d.get("RepoTags") or []) or d.get("Id") == ref:
                by_ref[ref] = Image(
                    ref=ref, id=d.get("Id", ""), labels=(d.get("Config") or {}).get("Labels") or {}
                )
    return by_ref


# -- one-off containers --------------------------------------------------------------


def run_oneoff(
    ctx: EnvContext, service: str, command: list[str], *, kind: str, capture: bool = False
) -> str:
    """Run `command` in a one-off container of `service`; its stdout, or its error.

    The container is named, kept until its exit code has been read, then removed:
    `compose run` exits 0 whatever the command did (Compose 2.40 on engine 20.10). What a
    killed run of the same kind left behind is removed first. The exit code passes
    through (the migrator shares the toolkit's table) and the stderr quoted is redacted.
    """
    leftovers = read(ctx.run, compose.oneoff_leftovers(ctx.env, kind), env=ctx.engine)
    if leftovers.stdout.split() and not ctx.run.dry_run:
        ctx.run.run(compose.remove(ctx.env, *leftovers.stdout.split()), capture=True, quiet=True)
    name = f"{ctx.env.project}-{service}-{kind}-{os.urandom(4).hex()}"

    def quietly(argv: list[str]) -> Result:
        return ctx.run.run(argv, env=ctx.engine, capture=True, check=False, quiet=True)

    try:
        result = ctx.run.run(
            compose.run(ctx.env, service, command, name=name, kind=kind),
            env=ctx.variables,
            capture=capture,
            capture_stderr=True,
            check=False,
            quiet=capture,
        )
        if ctx.run.dry_run:
            return ""
        code_text = quietly(compose.exit_code(ctx.env, name)).stdout.strip()
    finally:
        if not ctx.run.dry_run:
            quietly(compose.remove(ctx.env, name))
    code = int(code_text) if code_text.lstrip("-").isdigit() else result.returncode or 1
    if code != 0 or not result.ok:
        errors = [ln for ln in result.stderr.splitlines() if "ERROR" in ln]  # pgBackRest's
        said = errors[-1].strip() if errors else last_line(result.stderr)
        cause = ctx.run.redact(said).removeprefix("error: ")
        raise for_exit_code(
            code or result.returncode,
            f"{cause or f'{service} exited with code {code}'} (env '{ctx.env.name}')",
        )
    return result.stdout


def prunable_images(
    ctx: EnvContext, *, keep: int
) -> tuple[list[images_plan.LocalImage], list[tuple[images_plan.LocalImage, str]]]:
    """The project's versioned image tags on the environment's engine: (to remove, kept
    with why). Never one a container uses (running, paused or stopped)."""
    run, engine = ctx.run, ctx.engine
    repositories = {f"{ctx.settings.image_prefix}/{name}" for name in images_plan.IMAGES.values()}
    listed = read(run, images_plan.list_images(), env=engine).stdout.splitlines()
    rows = [decode(line, "docker image ls") for line in listed if line.strip()]
    local = [
        images_plan.LocalImage(id=d["ID"], repository=d["Repository"], tag=d["Tag"])
        for d in rows
        if d.get("Repository") in repositories
    ]
    containers = read(run, images_plan.all_containers(), env=engine).stdout.split()
    in_use: set[str] = set()
    if containers:
        in_use = set(
            read(run, images_plan.inspect_containers(containers), env=engine).stdout.split()
        )
    return images_plan.prune_plan(local, in_use=in_use, keep=keep)


def files_tar(files: dict[str, str]) -> bytes:
    """A tar of small files (mode 0644): what `docker cp -` puts into a container."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
