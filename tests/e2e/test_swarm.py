"""The Swarm backend on a real two-node swarm (`invoke swarm.lab.up`): releases rolled out
by Swarm under load, a broken one rolled back by Swarm, scaling, a node that cannot pull,
a node lost; and the lab removed with nothing left.

The load goes to the proxies on the lab's own network (each node's address in the lab's
namespace): the project's own containers, never anything else."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import git
import pytest
import yaml

from lorepin_tasks import settings as settings_mod
from lorepin_tasks.plans import swarm as plan
from tests.release_helpers import base_image, clone_project, invoke_in, remove_images

pytestmark = [pytest.mark.docker, pytest.mark.netns]
ENV = "swarm"


@dataclass
class Lab:
    repo: git.Repo
    env: dict[str, str]
    lab: plan.Lab
    stack: str

    def invoke(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return invoke_in(self.repo, *args, env=self.env, timeout=timeout)

    def background(self, *args: str) -> subprocess.Popen[str]:
        """`invoke ...` in a session of its own (os.killpg ends it), its stderr kept."""
        return subprocess.Popen(
            [sys.executable, "-m", "invoke", *args],
            cwd=self.repo.working_tree_dir,
            env={**os.environ, "BASE_IMAGE": base_image(), **self.env},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip

    def docker(self, *args: str, node: str = plan.MANAGER) -> str:
        done = subprocess.run(
            [*plan.docker(self.lab, node), *args], capture_output=True, text=True, check=False
        )
        return done.stdout

    def url(self, node: str, path: str) -> str:
        return f"http://{self.lab.address(node)}:{HTTP_PORT}{path}"

    def version(self, node: str) -> str | None:
        try:
            with urllib.request.urlopen(self.url(node, "/version"), timeout=5) as answer:  # noqa: S310
                return str(json.loads(answer.read())["version"])
        except (OSError, ValueError, KeyError):
            return None

    def release(self, version: str, message: str) -> None:
        path = Path(self.repo.working_tree_dir or ".") / "docs" / "release-test.txt"
        path.write_text(path.read_text() + message + "\n" if path.exists() else message + "\n")
        self.repo.index.add([str(path)])
        self.repo.index.commit(message)
        done = self.invoke("release", "--as", version, "--yes")
        assert done.returncode == 0, done.stderr[-3000:]

    def history(self) -> list[dict[str, object]]:
        done = self.invoke("deploy.history", "--env", ENV, "--json")
        assert done.returncode == 0, done.stderr[-2000:]
        return list(json.loads(done.stdout))

    def tasks(self) -> list[dict[str, str]]:
        out = self.docker("service", "ps", f"{self.stack}_cms", "--filter",
                          "desired-state=running", "--format", "{{json .}}")  # fmt: skip
        return [json.loads(line) for line in out.splitlines() if line.strip()]


HTTP_PORT = 8580


@dataclass
class Load:
    """GET `path` (/version) through both nodes' proxies in turn, at most `rate` a second,
    until stopped (bounded: at most `limit` requests)."""

    lab: Lab
    nodes: tuple[str, ...] = plan.NODES
    path: str = "/version"
    rate: float = 40
    limit: int = 8000
    answers: list[tuple[float, str, int, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        turn = 0
        while not self.stop.is_set() and len(self.answers) < self.limit:
            node = self.nodes[turn % len(self.nodes)]
            turn += 1
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.lab.url(node, self.path), timeout=5) as r:  # noqa: S310
                    body = json.loads(r.read())
                    version = body.get("version") if isinstance(body, dict) else None
                    self.answers.append((started, node, r.status, version))
            except urllib.error.HTTPError as exc:
                self.answers.append((started, node, exc.code, None))
            except OSError:
                self.answers.append((started, node, 0, None))
            time.sleep(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def failed(self, node: str | None = None) -> int:
        return sum(1 for _, n, code, _ in self.answers if code != 200 and node in (None, n))


def lab_leftovers(lab: plan.Lab) -> list[str]:
    """Whatever of the lab still exists: namespaces, paths, the registry, the host's
    link, the images tagged for its registry, and processes (engines, containerd, shims,
    keepalived) under its paths."""
    netns = Path("/var/run/netns")
    found = [n for n in os.listdir(netns) if n.startswith(lab.prefix)] if netns.exists() else []
    found += [str(p) for p in (lab.root, Path("/run/lorepin-lab") / lab.id) if p.exists()]
    registry = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"name={lab.registry_container}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    found += [f"container {c}" for c in registry]
    tags = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    found += [f"image {t}" for t in tags if t.startswith(lab.registry_local + "/")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False)
    found += [f"link {lab.host_link}"] if f" {lab.host_link}@" in links.stdout else []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f"/lorepin-lab/{lab.id}/" in cmd:
                found.append(f"process {proc.name}: {cmd[:80]}")
    return found


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("swarm")
    repo = clone_project(tmp)
    root = Path(repo.working_tree_dir or ".")
    suffix = uuid.uuid4().hex[:6]
    secrets = tmp / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "db_password").write_text(uuid.uuid4().hex + "\n")
    (secrets / "db_password").chmod(0o644)
    config = yaml.safe_load((root / "invoke.yaml").read_text())
    env = config["lorepin"]["environments"][ENV]
    env.update(project=f"lorepin-e2e-swm-{suffix}", secrets_dir=str(secrets), http_port=HTTP_PORT)
    # No autoscaler until its own test: the others set the replicas themselves.
    env["swarm"].update(lab=f"e{suffix[:5]}", replicas=2, min=1, max=4, autoscale=False)
    (root / "invoke.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    repo.index.add(["invoke.yaml"])
    repo.index.commit("chore: the swarm test environment")
    settings = settings_mod.load(config["lorepin"], root=root)
    prefix = f"lorepin-swarm-test-{suffix}"
    site = Lab(
        repo=repo,
        env={"LOREPIN_IMAGE_PREFIX": prefix},
        lab=plan.lab(env["swarm"]["lab"], settings.checkout.id, settings.checkout.where),
        stack=env["project"],
    )
    try:
        up = site.invoke("swarm.lab.up", "--name", site.lab.name)
        assert up.returncode == 0, up.stderr[-3000:]
        site.release("1.0.0", "feat: the first release")
        site.release("1.1.0", "feat: the second release")
        yield site
    finally:
        down = site.invoke("swarm.lab.down", "--name", site.lab.name, "--yes")
        deadline = time.monotonic() + 20
        while lab_leftovers(site.lab) and time.monotonic() < deadline:
            time.sleep(0.5)  # a deleted namespace's links go a moment later
        left = lab_leftovers(site.lab)
        remove_images(prefix)
        assert down.returncode == 0, down.stderr[-3000:]
        assert left == [], left


def test_a_release_rolls_across_both_nodes_without_a_failed_request(lab: Lab) -> None:
    first = lab.invoke("deploy", "--env", ENV, "--version", "1.0.0")
    assert first.returncode == 0, first.stderr[-3000:]
    assert [lab.version(n) for n in plan.NODES] == ["1.0.0", "1.0.0"]
    # One replica per node; each proxy reaches both through tasks.cms.
    assert sorted(t["Node"] for t in lab.tasks()) == sorted(
        f"{lab.lab.name}-{n}" for n in plan.NODES
    )

    with Load(lab) as load:
        time.sleep(1)
        second = lab.invoke("deploy", "--env", ENV, "--version", "1.1.0")
        time.sleep(2)
    assert second.returncode == 0, second.stderr[-3000:]
    assert load.failed() == 0 and len(load.answers) > 200, load.answers[-5:]
    for node in plan.NODES:
        seen = [v for _, n, _, v in load.answers if n == node]
        assert seen[0] == "1.0.0" and seen[-1] == "1.1.0"
    image = lab.docker("service", "inspect", f"{lab.stack}_cms", "--format",
                       "{{.Spec.TaskTemplate.ContainerSpec.Image}}").strip()  # fmt: skip
    digest = r"/.+/cms:1\.1\.0@sha256:[0-9a-f]{64}"
    assert re.fullmatch(re.escape(lab.lab.registry) + digest, image), image  # by digest
    last = lab.history()[-1]
    assert (last["action"], last["version"], last["outcome"]) == ("deploy", "1.1.0", "succeeded")
    assert last["detail"]["backend"] == "swarm"  # type: ignore[index]


def test_a_release_that_never_gets_ready_is_rolled_back_by_swarm(lab: Lab) -> None:
    app = Path(lab.repo.working_tree_dir or ".") / "cms" / "lorepin_cms" / "app.py"
    readyz = "    def readyz() -> JSONResponse:\n"
    text = app.read_text()
    assert readyz in text
    app.write_text(text.replace(readyz, readyz + "        return error_response(503, 'broken')\n"))
    lab.repo.index.add([str(app)])
    lab.repo.index.commit("fix: a release that is never ready")
    lab.release("1.2.0", "fix: never ready")
    app.write_text(text)  # the next releases are sound again
    lab.repo.index.add([str(app)])
    lab.repo.index.commit("fix: ready again")

    with Load(lab) as load:
        broken = lab.invoke("deploy", "--env", ENV, "--version", "1.2.0")
        time.sleep(2)
    assert broken.returncode == 1
    message = broken.stderr.strip().splitlines()[-1]
    assert message.startswith("error: 1.2.0 failed on the swarm, and Swarm rolled it back to 1.1.0")
    assert load.failed() == 0 and len(load.answers) > 200, load.answers[-5:]
    assert {v for *_, v in load.answers} == {"1.1.0"}
    assert [lab.version(n) for n in plan.NODES] == ["1.1.0", "1.1.0"]
    last = lab.history()[-1]
    assert (last["version"], last["outcome"]) == ("1.2.0", "rolled-back")


def test_a_deploy_killed_mid_rollout_is_finished_by_the_next(lab: Lab) -> None:
    lab.release("1.2.1", "fix: sound again")
    state = ["service", "inspect", f"{lab.stack}_cms", "--format",
             "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}"]  # fmt: skip
    killed = lab.background("deploy", "--env", ENV, "--version", "1.2.1")
    try:
        started = time.monotonic()
        while lab.docker(*state).strip() != "updating":
            assert killed.poll() is None, killed.communicate()[1][-3000:]
            assert time.monotonic() - started < 300
            time.sleep(0.2)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(30)
    started = time.monotonic()
    again = lab.invoke("deploy", "--env", ENV, "--version", "1.2.1")
    assert again.returncode == 0, again.stderr[-2000:]
    assert time.monotonic() - started < 120  # finished, not waited out
    assert [lab.version(n) for n in plan.NODES] == ["1.2.1", "1.2.1"]
    outcomes = [(r["version"], r["outcome"]) for r in lab.history()[-3:]]
    # The killed run's record is closed as interrupted by the next, which then runs.
    assert outcomes == [("1.2.1", "interrupted"), ("1.2.1", "started"), ("1.2.1", "succeeded")]
    done = lab.invoke("deploy", "--env", ENV, "--version", "1.2.1")
    assert done.returncode == 3 and "already serves 1.2.1" in done.stderr


def test_a_new_owner_password_is_refused_before_any_change(lab: Lab) -> None:
    secrets = Path(yaml.safe_load((Path(lab.repo.working_tree_dir or ".") / "invoke.yaml")
                   .read_text())["lorepin"]["environments"][ENV]["secrets_dir"])  # fmt: skip
    password = secrets / "db_password"
    kept = password.read_text()
    before = len(lab.history())
    password.write_text(uuid.uuid4().hex + "\n")
    try:
        refused = lab.invoke("deploy", "--env", ENV, "--version", "1.1.0")
    finally:
        password.write_text(kept)
    assert refused.returncode == 6, refused.stderr[-2000:]
    assert "is not the password the database of 'swarm' runs with" in refused.stderr
    assert [lab.version(n) for n in plan.NODES] == ["1.2.1", "1.2.1"]
    assert len(lab.history()) == before


def test_scale_keeps_to_its_bounds_and_waits_for_a_deploy(lab: Lab) -> None:
    outside = lab.invoke("scale", "--env", ENV, "--replicas", "9")
    assert outside.returncode == 2
    assert outside.stderr.strip() == (
        "error: 9 replicas is outside the bounds of 'swarm', 1..4 "
        "(invoke.yaml's swarm.min and swarm.max)"
    )
    scaled = lab.invoke("scale", "--env", ENV, "--replicas", "4")
    assert scaled.returncode == 0, scaled.stderr[-2000:]
    tasks = lab.tasks()
    assert len(tasks) == 4 and all(t["CurrentState"].startswith("Running") for t in tasks)
    assert {t["Node"] for t in tasks} == {f"{lab.lab.name}-{n}" for n in plan.NODES}
    assert lab.history()[-1]["action"] == "scale"
    # Four replicas' pools are pgbouncer's clients; PostgreSQL sees pgbouncer's few.
    for _ in range(20):
        with urllib.request.urlopen(lab.url("n1", "/api/pins"), timeout=5) as answer:  # noqa: S310
            assert answer.status == 200
    report = lab.invoke("db.report", "--env", ENV, "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    pools = json.loads(report.stdout)["pools"]
    assert [(p["database"], p["user"], p["cl_waiting"]) for p in pools] == [
        ("lorepin", "lorepin_cms", 0)
    ]
    sizes = plan.pool_sizes(4, 4)
    servers = pools[0]["sv_active"] + pools[0]["sv_idle"]
    assert 1 <= servers <= sizes["default_pool_size"] + sizes["reserve_pool_size"]

    # A rollback (to 1.0.0) holds the environment: a scale meanwhile is refused.
    back = lab.background("rollback", "--env", ENV, "--to", "1.0.0")
    try:
        time.sleep(3)
        busy = lab.invoke("scale", "--env", ENV, "--replicas", "2")
        assert busy.returncode == 5, busy.stderr
        assert "is being changed by" in busy.stderr and "(rollback, pid" in busy.stderr
    finally:
        _, err = back.communicate(timeout=600)
    assert back.returncode == 0, err[-2000:]
    assert [lab.version(n) for n in plan.NODES] == ["1.0.0", "1.0.0"]
    assert len(lab.tasks()) == 4  # a rollback keeps the scale


def test_a_node_that_cannot_pull_refuses_the_deploy_before_any_change(lab: Lab) -> None:
    lab.release("1.3.0", "feat: a release no node has yet")
    before = len(lab.history())
    ns = ["ip", "netns", "exec", lab.lab.netns("n2"), "iptables"]
    rule = ["OUTPUT", "-d", lab.lab.address("host"), "-p", "tcp", "--dport",
            str(lab.lab.registry_port), "-j", "REJECT"]  # fmt: skip
    subprocess.run([*ns, "-I", *rule], check=True)
    try:
        refused = lab.invoke("deploy", "--env", ENV, "--version", "1.3.0")
    finally:
        subprocess.run([*ns, "-D", *rule], check=True)
    assert refused.returncode == 6, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines()[-1].startswith("error: node n2 cannot pull ")
    assert "nothing was changed" in refused.stderr
    assert [lab.version(n) for n in plan.NODES] == ["1.0.0", "1.0.0"]
    assert len(lab.history()) == before


def replicas(lab: Lab) -> int:
    spec = lab.docker("service", "inspect", f"{lab.stack}_cms", "--format",
                      "{{.Spec.Mode.Replicated.Replicas}}")  # fmt: skip
    return int(spec.strip())


def prometheus(lab: Lab, query: str) -> list[dict[str, object]]:
    """The stack's Prometheus, asked inside its task (it publishes nothing)."""
    service = f"label=com.docker.swarm.service.name={lab.stack}_prometheus"
    container = lab.docker("ps", "-q", "--filter", service).split()[0]
    api = f"http://127.0.0.1:{plan.PROMETHEUS_PORT}/api/v1/query"
    said = lab.docker("exec", container, "curl", "-fsS", "--get", "--data-urlencode",
                      f"query={query}", api)  # fmt: skip
    return list(json.loads(said)["data"]["result"])


def deploy_with_autoscale(lab: Lab, autoscale: object, version: str) -> None:
    """invoke.yaml's swarm.autoscale set (committed), then `version` deployed with it; the
    autoscaler's first line says whether it is on."""
    root = Path(lab.repo.working_tree_dir or ".")
    config = yaml.safe_load((root / "invoke.yaml").read_text())
    config["lorepin"]["environments"][ENV]["swarm"]["autoscale"] = autoscale
    (root / "invoke.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    lab.repo.index.add(["invoke.yaml"])
    lab.repo.index.commit(f"chore: swarm.autoscale {autoscale}")
    deployed = lab.invoke("deploy", "--env", ENV, "--version", version)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    line, deadline = f'"enabled": {"true" if autoscale else "false"}', time.monotonic() + 30
    while True:  # the running task's first line
        running = lab.docker("service", "ps", "-q", "--filter", "desired-state=running",
                             f"{lab.stack}_autoscaler").split()  # fmt: skip
        said = lab.docker("service", "logs", "--raw", running[0]) if running else ""
        if line in said:
            break
        assert time.monotonic() < deadline, said[-2000:]
        time.sleep(1)


def test_the_autoscaler_follows_p99_within_its_bounds_and_the_trail_keeps_its_decisions(
    lab: Lab,
) -> None:
    """On: a target so low (1 ms) that any traffic is above it, and short windows. Idle,
    it takes the replicas down one at a time to min; under load, up to max at once; its
    decisions reach the trail. The stack's Prometheus probes both paths users take."""
    on = {"p99_ms": 1, "cooldown": 4, "scale_down_after": 6, "interval": 1}
    deploy_with_autoscale(lab, on, "1.3.0")
    seen = [replicas(lab)]
    deadline = time.monotonic() + 120
    while seen[-1] > 1 and time.monotonic() < deadline:  # idle: down to min
        time.sleep(1)
        seen.append(replicas(lab))
    assert seen[-1] == 1, seen
    with Load(lab, path="/api/pins", rate=20) as load:
        deadline = time.monotonic() + 90
        while seen[-1] < 4 and time.monotonic() < deadline:  # busy: up to max
            time.sleep(1)
            seen.append(replicas(lab))
    assert seen[-1] == 4, seen
    assert load.failed() == 0 and len(load.answers) > 20
    assert min(seen) == 1 and max(seen) == 4, seen  # never outside its bounds
    # Both paths, each node's proxy and the floating address, answer the probes.
    probes = {r["metric"]["path"]: r["value"][1] for r in prometheus(lab, "probe_success")}  # type: ignore[index]
    assert probes == {"n1": "1", "n2": "1", "vip": "1"}, probes
    assert prometheus(lab, 'up{job="cms"} == 1'), "Prometheus scrapes no CMS replica"
    assert prometheus(lab, 'pgbouncer_active_clients{database="lorepin"}')
    # Off again (the next tests count replicas): the next deploy, with autoscale off,
    # first seals its decisions into the trail (it opens the trail before any change),
    # then leaves the autoscaler deciding nothing; then 4 replicas for the next tests.
    deploy_with_autoscale(lab, False, "1.2.1")
    scaled = lab.invoke("scale", "--env", ENV, "--replicas", "4")
    assert scaled.returncode in (0, 3), scaled.stderr[-2000:]  # 3: the deploy kept 4
    decided = [r for r in lab.history() if r["action"] == plan.AUTOSCALE]
    steps = [(r["detail"]["from"], r["detail"]["to"]) for r in decided]  # type: ignore[index]
    assert (2, 1) in steps and steps[-1][1] == 4, steps
    assert all(r["who"] == "autoscaler" and r["outcome"] == "succeeded" for r in decided)
    assert "above the target 1 ms" in str(decided[-1]["detail"])


def stop_engine(lab: Lab, node: str) -> None:
    """A node's engine stopped as a host's shutdown stops it (SIGTERM): its containers
    stop with it (no live restore)."""
    pid = int(lab.lab.pidfile(node).read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def start_engine(lab: Lab, node: str) -> None:
    """The node's engine started again as `swarm.lab.up` starts it (a shell in between, so
    the daemon is init's child, not this test's)."""
    argv = shlex.join(plan.dockerd(lab.lab, node))
    subprocess.run(["sh", "-c", f"{argv} >>{lab.lab.log(node)} 2>&1 </dev/null &"], check=True)
    deadline = time.monotonic() + 60
    while subprocess.run([*plan.docker(lab.lab, node), "info"], capture_output=True,
                         check=False).returncode != 0:  # fmt: skip
        assert time.monotonic() < deadline, f"{node}'s engine did not come back"
        time.sleep(0.5)


def wait_for_update(lab: Lab, deploy: subprocess.Popen[str], version: str) -> None:
    """Until the CMS service rolls `version` (the deploy past its pushes and pulls)."""
    state = ["service", "inspect", f"{lab.stack}_cms", "--format",
             "{{index .Spec.Labels \"dev.lorepin.version\"}} "
             "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}"]  # fmt: skip
    started = time.monotonic()
    while lab.docker(*state).split() != [version, "updating"]:
        assert deploy.poll() is None, deploy.communicate()[1][-3000:]
        assert time.monotonic() - started < 300
        time.sleep(0.2)


def test_a_deploy_through_a_restart_of_the_manager_is_finished(lab: Lab) -> None:
    """The manager's engine (the database's node too) restarts mid-update: the deploy
    ends, in one line if it could not see the end; the next deploy of the same release
    finishes whatever is left, and every node serves it."""
    before = len(lab.history())
    deploy = lab.background("deploy", "--env", ENV, "--version", "1.3.0")
    try:
        wait_for_update(lab, deploy, "1.3.0")
        time.sleep(2)
        stop_engine(lab, plan.MANAGER)
        time.sleep(3)
        start_engine(lab, plan.MANAGER)
        _, err = deploy.communicate(timeout=900)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(deploy.pid, signal.SIGKILL)
    if deploy.returncode != 0:
        said = err.strip().splitlines()
        assert said and said[-1].startswith("error: ") and "Traceback" not in err, err[-3000:]
    again = lab.invoke("deploy", "--env", ENV, "--version", "1.3.0")
    assert again.returncode in (0, 3), again.stderr[-3000:]  # 3: the first one finished
    deadline = time.monotonic() + 60
    while [lab.version(n) for n in plan.NODES] != ["1.3.0", "1.3.0"]:
        assert time.monotonic() < deadline, [lab.version(n) for n in plan.NODES]
        time.sleep(1)
    outcomes = [r["outcome"] for r in lab.history()[before:]]
    assert outcomes[-1] == "succeeded", outcomes
    # Every run that started has its outcome (an `interrupted` one, closed by the next).
    assert outcomes.count("started") * 2 == len(outcomes), outcomes


def test_the_second_node_lost_during_a_deploy_is_said_and_finished_when_it_is_back(
    lab: Lab,
) -> None:
    """Four replicas, two on each node; n2's engine stops 2 s into the update. n1's proxy
    fails no request. Swarm holds the update while the old task on n2 cannot be stopped:
    the deploy says so in one line, soon (not after its whole wait), and once n2 is back
    the next deploy of the same release finishes it."""
    assert replicas(lab) == 4
    before = len(lab.history())
    deploy = lab.background("deploy", "--env", ENV, "--version", "1.2.1")
    try:
        with Load(lab, nodes=("n1",)) as load:
            wait_for_update(lab, deploy, "1.2.1")
            time.sleep(2)
            lost_at = time.monotonic()
            stop_engine(lab, "n2")
            _, err = deploy.communicate(timeout=900)
            said_at = time.monotonic()
    finally:
        with suppress(ProcessLookupError):
            os.killpg(deploy.pid, signal.SIGKILL)
    # (Swarm may also finish the update on n1 before it calls n2 down: then it succeeded.)
    if deploy.returncode != 0:
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: deploy of 1.2.1: node ") and " is down" in last, err
        assert said_at - lost_at < 120, said_at - lost_at
    assert load.failed("n1") == 0 and len(load.answers) > 50, load.answers[-5:]
    start_engine(lab, "n2")
    again = lab.invoke("deploy", "--env", ENV, "--version", "1.2.1")
    assert again.returncode == (3 if deploy.returncode == 0 else 0), again.stderr[-3000:]
    deadline = time.monotonic() + 90  # n2's proxy, then the floating address, back there
    while [lab.version(n) for n in plan.NODES] != ["1.2.1", "1.2.1"] or vip_node(lab) != "n2":
        assert time.monotonic() < deadline, ([lab.version(n) for n in plan.NODES], vip_node(lab))
        time.sleep(1)
    outcomes = [r["outcome"] for r in lab.history()[before:]]
    assert outcomes in (["started", "stuck", "started", "succeeded"], ["started", "succeeded"])


def vip_node(lab: Lab) -> str | None:
    for node in plan.NODES:
        shown = subprocess.run(
            ["ip", "netns", "exec", lab.lab.netns(node), "ip", "-o", "-4", "addr", "show", "eth0"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        if f" {lab.lab.address('vip')}/" in shown:
            return node
    return None


def test_losing_a_node_keeps_the_service_answering_and_swarm_reschedules(lab: Lab) -> None:
    """The second node's engine stops (its containers with it): the first node's proxy
    keeps answering, the floating address moves to it, and Swarm moves the lost replicas
    there."""
    assert vip_node(lab) == "n2"  # the higher priority, while its proxy answers
    served = lab.version("vip")
    assert served is not None
    pid = int(lab.lab.pidfile("n2").read_text())
    with Load(lab, nodes=("n1", "vip")) as load:
        time.sleep(2)
        lost_at = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        deadline = lost_at + 90
        moved_at = None
        while time.monotonic() < deadline:
            if moved_at is None and vip_node(lab) == "n1":
                moved_at = time.monotonic()
            running = [t for t in lab.tasks() if t["CurrentState"].startswith("Running")]
            if len(running) == 4 and {t["Node"] for t in running} == {f"{lab.lab.name}-n1"}:
                break
            time.sleep(0.5)
        back_at = time.monotonic()
        time.sleep(3)
    assert back_at < deadline, lab.tasks()
    assert moved_at is not None and vip_node(lab) == "n1"
    assert lab.version("vip") == served
    settled = [a for a in load.answers if a[0] > lost_at + 10]
    assert settled and all(code == 200 for _, _, code, _ in settled), settled[:5]
    assert load.failed("n1") == 0  # the surviving node's proxy never failed a request
    print(
        f"node lost: n1 failed {load.failed('n1')}, the floating address "
        f"{load.failed('vip')} of {len(load.answers)} requests; the address moved after "
        f"{moved_at - lost_at:.1f} s; all 4 replicas on n1 after {back_at - lost_at:.1f} s"
    )
