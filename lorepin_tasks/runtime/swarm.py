"""The Swarm backend of server environments (`backend: swarm`): the release's images into
the swarm's registry and onto every node by digest, the stack deployed with
`docker stack deploy`, Swarm's own start-first rolling update and automatic rollback
watched to their end, the migrator as a Swarm job, and the replicas scaled. The plan is
plans/swarm.py; `tasks/deploy.py` drives it (docs/production-swarm.md)."""

from __future__ import annotations

import json
import secrets as secrets_mod
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from lorepin_tasks.errors import ConfigError, LorePinError, Refused, last_line
from lorepin_tasks.plans import backup as backup_plan
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.plans import swarm as plan
from lorepin_tasks.runtime import ops, swarm_lab
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session
from lorepin_tasks.runtime.trail import Trail

PULL_TIMEOUT = 300
SWARM_BACK_S = 90  # both nodes ready again after an engine of the swarm restarted
DB_BACK_S = 120  # the database's task back and taking connections after its node restarted
UNRESUMED_S = 30  # Swarm not updating, yet not every task on the release: roll the rest
MIGRATOR_RETRY_S = 90  # a migrator's task failing with no output is tried again this long
NODE_LOST_S = 20  # a node down this long mid-update: Swarm holds the update for it


class Swarm:
    def __init__(self, ctx: EnvContext) -> None:
        policy = ctx.env.swarm
        if policy is None:
            raise ConfigError(f"'{ctx.env.name}' is not a swarm environment (backend: swarm)")
        self.ctx, self.policy = ctx, policy
        settings = ctx.settings
        self.lab = plan.lab(policy.lab, settings.checkout.id, settings.checkout.where)
        self.stack = ctx.env.project
        swarm_lab.require_mine(self.lab)  # every use, reading included

    # --- reading ---------------------------------------------------------------------

    def _q(self, argv: list[str], node: str = plan.MANAGER, timeout: float = 30) -> Any:
        return self.ctx.run.run(
            [*plan.docker(self.lab, node), *argv],
            capture=True,
            check=False,
            mutates=False,
            quiet=True,
            timeout=timeout,
        )

    def require_up(self) -> None:
        """The swarm is up: both engines run and both nodes are ready. Just after an engine
        restarted, they take a while to be again (bounded: SWARM_BACK_S); a node whose
        engine is not running is refused at once. (A dry run asks too: it reads, and
        refuses as the real run would.)"""
        found = swarm_lab.state(self.ctx.run, self.lab)
        if not swarm_lab.is_up(found) and all(e["pid"] for e in found["engines"].values()):
            self.ctx.run.say(
                f"==> waiting up to {SWARM_BACK_S} s for the swarm's nodes to be ready"
            )

            def up() -> bool:
                found.update(swarm_lab.state(self.ctx.run, self.lab))
                return swarm_lab.is_up(found)

            with suppress(LorePinError):  # still not up: refused below, as at once
                self._wait(up, "the swarm's nodes were not ready", timeout=SWARM_BACK_S)
        if not swarm_lab.is_up(found):
            name = self.lab.name
            fix = (  # a lab made whole once is not for `up` to wipe (it refuses it)
                f"`invoke swarm.lab.status --name {name}` shows what is down (start it "
                f"again), or `invoke swarm.lab.down --name {name} --yes`, then `up`, "
                "remakes the lab without its data"
                if found["made"]
                else f"`invoke swarm.lab.up --name {name}`"
            )
            raise ConfigError(f"the swarm of '{self.ctx.env.name}' (lab '{name}') is not up: {fix}")
        probed = found["port"]  # the port the lab's keepalived configuration probes
        if probed is not None and probed != self.ctx.env.http_port:
            name, env, port = self.lab.name, self.ctx.env.name, self.ctx.env.http_port
            raise ConfigError(
                f"lab '{name}' moves its floating address by the proxies' answers on port "
                f"{probed}, and the http_port of '{env}' is {port}: set http_port: {probed} "
                f"for '{env}' in invoke.yaml, or remake the lab (`invoke swarm.lab.down "
                f"--name {name} --yes`, then `invoke swarm.lab.up --name {name} --port {port}`)"
            )

    def inspect(self, name: str) -> dict[str, Any] | None:
        answer = self._q(["service", "inspect", plan.service(self.stack, name)])
        if not answer.ok:
            return None
        found = json.loads(answer.stdout or "[]")
        return found[0] if found else None

    def serving(self) -> str | None:
        """The release the CMS service runs (its label), or None before the first deploy."""
        found = self.inspect("cms")
        if found is None or not _desired(found):  # a first deploy cut short: none
            return None
        version = found["Spec"].get("Labels", {}).get("dev.lorepin.version")
        return str(version) if version else None

    def serving_db(self) -> bool:
        """The database's task runs (the trail is in it)."""
        return self._running("db") > 0

    def replicas(self) -> tuple[int, int]:
        """(desired, running) replicas of the CMS; running counts a task that is still
        stopping, too (a scale-down is done when it has stopped)."""
        found = self.inspect("cms")
        if found is None:
            return 0, 0
        running = sum(t.get("CurrentState", "").startswith("Running") for t in self.tasks("cms"))
        return _desired(found), running

    def converged(self, image: str) -> bool:
        """The CMS service exists, every task that is to run runs `image`, as many as the
        service wants (at least one), and no other task still runs."""
        found = self.inspect("cms")
        if found is None or _desired(found) < 1:
            return False
        every = self.tasks("cms")  # one look: the counts and the images agree
        running = [t for t in every if t.get("CurrentState", "").startswith("Running")]
        wanted = [t for t in every if t.get("DesiredState") == "Running"]
        return (
            _desired(found) == len(running) == len(wanted)
            and all(t.get("Image") == image for t in wanted)
            and all(t.get("CurrentState", "").startswith("Running") for t in wanted)
        )

    def tasks(self, name: str) -> list[dict[str, str]]:
        answer = self._q(
            [
                "service",
                "ps",
                plan.service(self.stack, name),
                "--no-trunc",
                "--format",
                "{{json .}}",
            ]
        )
        return [json.loads(line) for line in answer.stdout.splitlines() if line.strip()]

    def update_state(self, found: dict[str, Any] | None = None) -> tuple[str | None, str]:
        """Swarm's UpdateStatus of the CMS (from `found`, its inspect, when given)."""
        found = found if found is not None else self.inspect("cms") or {}
        status = found.get("UpdateStatus") or {}
        return status.get("State"), status.get("Message", "")

    # --- images ----------------------------------------------------------------------

    def push(self, manifest: Mapping[str, Any], tag: str) -> dict[str, str]:
        """The release's images, and the checkout's monitoring image (built here: Docker's
        cache makes that quick), in the swarm's registry; each by digest, by service."""
        run, settings = self.ctx.run, self.ctx.settings
        for image in plan.IMAGES.values():
            if image not in manifest["images"]:
                raise ConfigError(f"release {tag} has no {image} image")
        if not settings.base_image:  # a build would try a public registry for one
            raise ConfigError(
                "no base image configured or recorded for the monitoring image: run "
                "scripts/bootstrap.sh first (or set BASE_IMAGE)"
            )
        built = run.run(plan.build_monitoring(settings.root, settings.base_image),
                        capture=True, timeout=PULL_TIMEOUT)  # fmt: skip
        # Tagged by its content, so an unchanged one is the same reference in the stack,
        # and Swarm restarts none of its services.
        content = built.stdout.strip().rpartition(":")[2][:12] or "DRY-RUN"
        monitoring = f"{settings.image_prefix}/{plan.MONITORING_IMAGE}:{content}"
        run.run(["docker", "tag", built.stdout.strip() or "IMAGE-ID", monitoring], capture=True)
        refs = {svc: self._push_one(image, tag) for svc, image in plan.IMAGES.items()}
        refs["monitoring"] = self._push_one(plan.MONITORING_IMAGE, content)
        return refs

    def _push_one(self, image: str, tag: str) -> str:
        run, prefix = self.ctx.run, self.ctx.settings.image_prefix
        local = f"{prefix}/{image}:{tag}"
        pushed = f"{self.lab.registry_local}/{prefix}/{image}:{tag}"
        run.run(["docker", "tag", local, pushed], capture=True)
        run.run(["docker", "push", "-q", pushed], capture=True, timeout=PULL_TIMEOUT)
        digest = "sha256:" + "0" * 64
        if not run.dry_run:
            found = run.run(
                ["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", pushed],
                capture=True,
            )
            mine = [
                d for d in json.loads(found.stdout) if d.startswith(pushed.rsplit(":", 1)[0] + "@")
            ]
            if not mine:
                raise LorePinError(f"the registry gave {pushed} no digest")
            digest = mine[0].rpartition("@")[2]
        # The push's tag goes (the image keeps its own): the nodes pull it by digest, and
        # no tag of a lab's registry outlives the lab on this host.
        run.run(["docker", "rmi", pushed], capture=True, check=False)
        return plan.release_ref(self.lab.registry, prefix, image, tag, digest)

    def pull_everywhere(self, refs: Mapping[str, str]) -> None:
        """Every node has every image before anything changes: a node that cannot pull one
        refuses the deploy (Swarm would otherwise leave its tasks pending mid-update)."""
        for node in plan.NODES:
            wanted = {s: r for s, r in refs.items() if s != "db" or node == plan.DB_NODE}
            for ref in sorted(set(wanted.values())):
                done = self.ctx.run.run(
                    [*plan.docker(self.lab, node), "pull", "-q", ref],
                    capture=True,
                    check=False,
                    timeout=PULL_TIMEOUT,
                )
                if not done.ok and not self.ctx.run.dry_run:
                    raise Refused(
                        f"node {node} cannot pull {ref}: {last_line(done.stderr)}; nothing "
                        "was changed"
                    )

    # --- deploying -------------------------------------------------------------------

    def variables(self, refs: Mapping[str, str], tag: str, replicas: int) -> dict[str, str]:
        ctx, secrets_dir = self.ctx, self.ctx.env.secrets_dir
        monitoring = plan.prometheus_config(ctx.env.name, self.lab, ctx.env.http_port)
        configs = {
            "proxy": json.dumps(plan.proxy_config(), indent=1, sort_keys=True),
            "pgbouncer": plan.pgbouncer_ini(self.policy.max, ctx.env.database),
            "prometheus": json.dumps(monitoring, indent=1, sort_keys=True),
        }
        files = {
            name: ctx.env.state_dir / "swarm" / f"{name}.{'ini' if name == 'pgbouncer' else 'json'}"
            for name in configs
        }
        if not ctx.run.dry_run:
            for name, content in configs.items():
                files[name].parent.mkdir(parents=True, exist_ok=True)
                files[name].write_text(content)
        values = {
            "LOREPIN_ENV": ctx.env.name,
            "LOREPIN_ENV_KIND": ctx.env.kind,
            "LOREPIN_CHECKOUT": ctx.settings.checkout.id,
            "LOREPIN_VERSION": tag,
            "LOREPIN_DB_IMAGE": refs["db"],
            "LOREPIN_CMS_IMAGE": refs["cms"],
            "LOREPIN_PROXY_IMAGE": refs["proxy"],
            "LOREPIN_REPLICAS": str(replicas),
            "LOREPIN_HTTP_PORT": str(ctx.env.http_port),
            "LOREPIN_SECRETS_DIR": str(secrets_dir),
            **ctx.env.database.variables(),  # the timeouts: pgbouncer's, above
            "LOREPIN_CMS_WORKERS": str(plan.CMS_WORKERS),
            "LOREPIN_MONITORING_IMAGE": refs["monitoring"],
            **plan.autoscaler_variables(
                self.stack, self.policy, str(self.lab.run_dir(plan.MANAGER) / "docker.sock")
            ),
        }
        for name, content in configs.items():
            values[f"LOREPIN_{name.upper()}_CONFIG"] = str(files[name])
            values[f"LOREPIN_CONFIG_{name.upper()}"] = plan.versioned(
                self.stack, name, content.encode()
            )
        for secret in plan.SECRETS:
            values[f"LOREPIN_SECRET_{secret.upper()}"] = self.secret_name(secret)
        return values

    def secret_name(self, secret: str) -> str:
        """The versioned name of the secret as its file in the secrets_dir is now."""
        path = self.ctx.env.secrets_dir / secret
        content = path.read_bytes() if path.is_file() else b""
        return plan.versioned(self.stack, secret, content, self._names_key())

    def image(self, name: str) -> str | None:
        """The image a service's spec runs (None: no such service)."""
        found = self.inspect(name) or {}
        image = found.get("Spec", {}).get("TaskTemplate", {}).get("ContainerSpec", {})
        return str(image["Image"]) if image.get("Image") else None

    def _names_key(self) -> bytes:
        """A random key of the environment's, beside its secrets: the versioned names of
        the secrets are keyed digests, so a name never lets a weak password be guessed."""
        path = self.ctx.env.secrets_dir / plan.NAMES_KEY
        if not path.is_file():
            if self.inspect("db") is not None:  # its names were made with the lost key
                raise Refused(
                    f"{path} is missing, and '{self.ctx.env.name}' runs secrets named with "
                    "it: restore it (from the machine that deployed last); nothing was changed"
                )
            if self.ctx.run.dry_run:
                return b"dry-run"
            path.write_text(secrets_mod.token_hex(32) + "\n")
            path.chmod(0o600)
        key = path.read_bytes().strip()
        if len(key) < 32:
            raise Refused(f"{path} is not a key (empty or too short): restore it")
        return key

    def ensure_secrets(self, values: Mapping[str, str]) -> None:
        """The versioned secrets exist before the migrator's job needs them (the stack
        deploy that would make them comes after it); made as the stack's own."""
        for secret, name in self.secrets(values).items():
            if self._q(["secret", "inspect", name]).ok:
                continue
            made = self.ctx.run.run(
                [*plan.docker(self.lab, plan.MANAGER), "secret", "create", "--label",
                 f"com.docker.stack.namespace={self.stack}", name,
                 str(self.ctx.env.secrets_dir / secret)],
                capture=True, check=False,
            )  # fmt: skip
            if not made.ok and not self.ctx.run.dry_run:
                raise LorePinError(f"secret {secret}: {last_line(made.stderr)}")

    def refuse_new_db_password(self) -> None:
        """PostgreSQL keeps the password it was created with: a deploy with another one in
        db_password would lock the migrator out. Refused before any change."""
        found = self.inspect("db")
        if found is None:
            return
        refs = found["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets") or []
        mounted = [r for r in refs if r.get("File", {}).get("Name") == "db_password"]
        running = {r.get("SecretName") for r in mounted}
        wanted = self.secret_name("db_password")
        if running and wanted not in running:
            raise Refused(
                f"{self.ctx.env.secrets_dir / 'db_password'} is not the password the database "
                f"of '{self.ctx.env.name}' runs with: put that one back (a password change on "
                "Swarm is not built yet); nothing was changed"
            )

    def records(self, who: str) -> list[dict[str, Any]]:
        """The trail as it is (read only: nothing recorded)."""
        with self.session(who) as session:
            ops.ensure_schema(session)
            return Trail(session, self.ctx.env.state_dir / "audit.jsonl").records()

    def deploy_stack(self, values: Mapping[str, str]) -> None:
        file = self.ctx.settings.root / plan.STACK_FILE
        done = self.ctx.run.run(
            plan.stack_deploy(self.lab, self.stack, file),
            env=dict(values),
            capture=True,
            check=False,
        )
        if not done.ok and not self.ctx.run.dry_run:
            raise LorePinError(f"docker stack deploy: {last_line(done.stderr)}")

    def secrets(self, values: Mapping[str, str]) -> dict[str, str]:
        return {s: values[f"LOREPIN_SECRET_{s.upper()}"] for s in plan.SECRETS}

    def migrate(self, image: str, secrets: Mapping[str, str], who: str, action: list[str]) -> str:
        """Run the migrator as a Swarm job on the stack's network; its output. A job whose
        task failed without a line of output (the swarm's network not ready yet after a
        node restarted, say) is tried again, for MIGRATOR_RETRY_S at most."""
        deadline = time.monotonic() + MIGRATOR_RETRY_S
        while True:
            ran, said = self._migrate_once(image, secrets, who, action)
            if ran or time.monotonic() > deadline:
                break
            self.ctx.run.say(f"    the migrator's task did not run ({said}): trying again")
            time.sleep(5)
        if not ran:
            raise LorePinError(f"the migrator failed: {said}")
        return said

    def _migrate_once(self, image: str, secrets: Mapping[str, str], who: str,
                      action: list[str]) -> tuple[bool, str]:  # fmt: skip
        """(whether the migrator ran, its output); a failure it reported is raised."""
        run = self.ctx.run
        name = plan.service(self.stack, f"migrate-{int(time.time() * 1000)}")
        made = run.run(
            plan.migrate_job(self.lab, self.stack, image, dict(secrets), who, action, name),
            capture=True,
            check=False,
        )
        if run.dry_run:
            return True, ""
        if not made.ok:
            raise LorePinError(f"the migrator's job did not start: {last_line(made.stderr)}")
        try:
            deadline = time.monotonic() + self.ctx.settings.wait_timeout
            while True:
                tasks = self._job_tasks(name)
                states = [t.get("CurrentState", "") for t in tasks]
                if any(s.startswith("Complete") for s in states):
                    break
                failed = [s for s in states if s.startswith(("Failed", "Rejected"))]
                if failed or time.monotonic() > deadline:
                    logs = ""
                    for _ in range(10):  # the job's lines reach the manager a moment later
                        logs = self._q(["service", "logs", "--raw", name]).stdout
                        if logs.strip():
                            break
                        time.sleep(0.5)
                    errors = [t["Error"] for t in tasks if t.get("Error")]
                    if not logs.strip() and failed:
                        return False, errors[0] if errors else self._task_end(tasks[0])
                    why = last_line(logs) or (errors[0] if errors else "timed out")
                    raise LorePinError(f"the migrator failed: {why}")
                time.sleep(1)
            return True, str(self._q(["service", "logs", "--raw", name]).stdout)
        finally:
            run.run(
                [*plan.docker(self.lab, plan.MANAGER), "service", "rm", name],
                capture=True,
                check=False,
            )

    def _task_end(self, task: Mapping[str, str]) -> str:
        """How a task ended, as its status says (`service ps` leaves out the exit code)."""
        found = self._q(["inspect", "--format", "{{json .Status}}", task.get("ID", "-")])
        try:
            status = json.loads(found.stdout)
        except ValueError:
            return task.get("CurrentState", "ended")
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        said = status.get("Err") or status.get("Message") or status.get("State", "ended")
        return f"{said} (exit code {code})" if code is not None else str(said)

    def _job_tasks(self, name: str) -> list[dict[str, str]]:
        answer = self._q(["service", "ps", name, "--no-trunc", "--format", "{{json .}}"])
        return [json.loads(line) for line in answer.stdout.splitlines() if line.strip()]

    def wait_db(self) -> None:
        self._wait(lambda: self._running("db") > 0, "the database did not start")
        self._wait(lambda: self._running("pgbouncer") > 0, "pgbouncer did not start")

    def wait_proxy(self) -> None:
        self._wait(lambda: self._running("proxy") >= len(plan.NODES), "the proxy did not start")

    def _running(self, name: str) -> int:
        return sum(
            t.get("CurrentState", "").startswith("Running") and t.get("DesiredState") == "Running"
            for t in self.tasks(name)
        )

    def _wait(self, done: Any, why: str, timeout: float | None = None) -> None:
        if self.ctx.run.dry_run:
            return
        deadline = time.monotonic() + (timeout or self.ctx.settings.wait_timeout)
        while not done():
            if time.monotonic() > deadline:
                raise LorePinError(
                    f"{why} within {int(timeout or self.ctx.settings.wait_timeout)} s"
                )
            time.sleep(1)

    def wait_support(self) -> None:
        """The services beside the CMS run (the pool, the monitoring, the autoscaler):
        `docker stack deploy` does not wait for them, and a task that cannot start (a bad
        mount, say) would otherwise go unnoticed. Their tasks' own error, if not."""
        try:
            self._wait(lambda: all(self._running(n) for n in plan.SUPPORT),
                       "the services beside the CMS did not all run", timeout=90)  # fmt: skip
        except LorePinError:
            down = next(n for n in plan.SUPPORT if not self._running(n))
            errors = [t["Error"] for t in self.tasks(down) if t.get("Error")]
            raise LorePinError(
                f"{down} does not run on the swarm after 90 s"
                + (f": {errors[0]}" if errors else "")
            ) from None

    def wait_replicas(self, want: int) -> None:
        self._wait(lambda: self.replicas() == (want, want), f"{want} CMS replicas were not running")

    def wait_update(self, image: str) -> tuple[str, str]:
        """Watch Swarm's rolling update of the CMS to its end: ('succeeded' | 'rolled-back'
        | 'stuck', why: Swarm's first word of trouble and the failed task's error)."""
        if self.ctx.run.dry_run:
            return "succeeded", ""
        limit = self.ctx.settings.wait_timeout + 120
        deadline = time.monotonic() + limit
        trouble, unseen, forced = "", 0, False
        idle_since: float | None = None  # Swarm not updating, yet not converged, since
        down_since: dict[str, float] = {}
        while True:
            found = self.inspect("cms")
            if found is None:  # the manager does not answer, or it is gone
                unseen += 1
                if unseen >= 10:
                    return "failed", (
                        f"the CMS service of '{self.ctx.env.name}' is gone, or the swarm's "
                        "manager does not answer"
                    )
                time.sleep(1)
                continue
            unseen = 0
            state, message = self.update_state(found)
            if state not in (None, "updating", "completed") and not trouble:
                trouble = message
            outcome = plan.update_outcome(state)
            if outcome == "succeeded" or state is None:  # (no update: a spec it had already)
                outcome = "succeeded" if self.converged(image) else None
            if outcome:
                failed = [t.get("Error") or t.get("CurrentState", "")
                          for t in self.tasks("cms") if t.get("Error")]  # fmt: skip
                why = "; ".join(x for x in (trouble, failed[0] if failed else "") if x)
                return outcome, why or message
            idle = state in (None, "completed")
            idle_since = (idle_since or time.monotonic()) if idle else None
            if idle_since and not forced and time.monotonic() - idle_since > UNRESUMED_S:
                # Swarm is not updating, yet not every task runs the release: an update cut
                # short by a restart of the manager is not resumed. Roll the rest, as the
                # stack's update_config says (start-first, rolled back if it fails).
                self.ctx.run.say(
                    "    Swarm left tasks of another release running (its update was cut "
                    "short): rolling them now"
                )
                self.ctx.run.run(
                    [*plan.docker(self.lab, plan.MANAGER), "service", "update", "--detach",
                     "--force", plan.service(self.stack, "cms")],
                    capture=True, check=False,
                )  # fmt: skip
                forced = True
                continue
            if state == "updating" and (lost := self._lost_node(down_since)):
                return "stuck", (
                    f"node {lost} is down, and Swarm holds the update until it is back "
                    f"(the old task there cannot be stopped); the other nodes serve. When "
                    f"it is back, deploy again to finish; if it never comes back, remove it "
                    f"(`docker node rm --force {lost}`) and deploy again"
                )
            if time.monotonic() > deadline:
                left = [
                    f"{t.get('Name')} {t.get('CurrentState')}"
                    for t in self.tasks("cms")
                    if t.get("DesiredState") == "Running" and t.get("Image") != image
                ]
                return "stuck", (
                    f"Swarm's update is still {state or 'not started'} after {limit} s"
                    + (f"; not on the release: {', '.join(left[:3])}" if left else "")
                )
            time.sleep(1)

    def _lost_node(self, down_since: dict[str, float]) -> str | None:
        """A node the manager has called down for NODE_LOST_S (`down_since`: when each
        was first seen down, kept across calls), or None."""
        nodes = self._q(["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])
        now = time.monotonic()
        for line in nodes.stdout.splitlines():
            name, _, status = line.partition(" ")
            if status.strip().lower() != "down":
                down_since.pop(name, None)
            elif now - down_since.setdefault(name, now) >= NODE_LOST_S:
                return str(name)
        return None

    def scale(self, replicas: int) -> None:
        self.ctx.run.run(
            [
                *plan.docker(self.lab, plan.MANAGER),
                "service",
                "scale",
                "--detach",
                f"{plan.service(self.stack, 'cms')}={replicas}",
            ],
            capture=True,
        )

    # --- the trail -------------------------------------------------------------------

    def _container(self, name: str, what: str) -> str:
        """The container of the service's task on the database's node."""
        service = plan.service(self.stack, name)
        found = self._q(
            ["ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"],
            node=plan.DB_NODE,
        )
        if not found.stdout.split() and not self.ctx.run.dry_run:
            raise LorePinError(
                f"{what} of '{self.ctx.env.name}' is not running on {plan.DB_NODE}: "
                f"`docker -H {self.lab.socket(plan.MANAGER)} service ps {service}` says why"
            )
        return str((found.stdout.split() or [f"{name.upper()}-CONTAINER"])[0])

    def psql(self, who: str) -> list[str]:
        """A psql session in the database's task (local socket, no password), once the
        database takes connections: after its node's engine restarted, its task and then
        PostgreSQL take a while to be back (the wait is bounded)."""

        def ready() -> bool:
            try:
                container = self._container("db", "the database")
            except LorePinError:
                return False
            return bool(self._q(["exec", container, "pg_isready", "-q", "-U", "lorepin"],
                                node=plan.DB_NODE).ok)  # fmt: skip

        self._wait(ready, f"the database of '{self.ctx.env.name}' did not take connections",
                   timeout=DB_BACK_S)  # fmt: skip
        container = self._container("db", "the database")
        return deploy_plan.psql_in(plan.docker(self.lab, plan.DB_NODE), container, who)

    def pools(self) -> list[dict[str, object]]:
        """pgbouncer's pools now (SHOW POOLS, asked inside its task as the CMS's role)."""
        container = self._container("pgbouncer", "pgbouncer")
        argv = plan.show_pools(plan.docker(self.lab, plan.DB_NODE), container)
        found = self.ctx.run.run(argv, capture=True, mutates=False, quiet=True)
        if self.ctx.run.dry_run:
            return []
        return plan.pool_report([line.split("\t") for line in found.stdout.splitlines()])

    def session(self, who: str) -> Session:
        return Session(self.ctx.run, self.psql(who), {}, "database", quiet=True)

    def proxy_urls(self) -> list[str]:
        return [f"http://{self.lab.address(n)}:{self.ctx.env.http_port}" for n in plan.NODES]

    def kept_refs(self, refs: Mapping[str, str]) -> dict[str, str]:
        """The new release's CMS with the database and the proxy as they run: a new image
        of either would restart it (the database's one task; the proxy on each node, where
        it publishes), so a release changes them only on the first deploy."""
        kept = dict(refs)
        for name in ("db", "proxy"):
            image = self.image(name)
            if image:
                kept[name] = image
        return kept

    @contextmanager
    def trail(self, who: str) -> Iterator[Trail]:
        """The environment's trail, in its database (the session ends with the block),
        with the autoscaler's decisions since the last time it was written sealed in."""
        with self.session(who) as session:
            ops.ensure_schema(session)
            trail = ops.open_trail(self.ctx, session, who)
            assert trail is not None
            self.record_decisions(trail)
            yield trail

    def decisions(self) -> list[dict[str, Any]]:
        """The autoscaler's decision log (its last 500), [] when it runs no task."""
        service = plan.service(self.stack, "autoscaler")
        found = self._q(["ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"])
        if not found.stdout.split():
            return []
        said = self._q(["exec", found.stdout.split()[0], "tail", "-n", "500", plan.DECISIONS])
        decisions, now = [], datetime.now(UTC)
        for line in said.stdout.splitlines() if said.ok else []:
            with suppress(ValueError):
                decision = json.loads(line)
                if plan.valid_decision(decision, now):
                    decisions.append(decision)
        return decisions

    def pending_decisions(self, records: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
        """The autoscaler's decisions the trail (its `records`) does not hold yet."""
        return backup_plan.unrecorded(self.decisions(), records, plan.AUTOSCALE)

    def record_decisions(self, trail: Trail) -> int:
        """The decisions the trail does not hold yet, appended (who: the autoscaler)."""
        new = self.pending_decisions(trail.records())
        for decision in new:
            outcome, detail = plan.decision_record(decision)
            ops.record(trail, self.ctx, "autoscaler", plan.AUTOSCALE, self.serving(), outcome,
                       detail)  # fmt: skip
        return len(new)


def _desired(found: Mapping[str, Any]) -> int:
    """The replicas a service's inspect says it wants."""
    return int(found["Spec"].get("Mode", {}).get("Replicated", {}).get("Replicas", 0))
