"""The Swarm backend on the two-node lab, under constant load (issue 17's figures).

    .venv/bin/nox -s bench -- swarm     (or: .venv/bin/python bench/bench_swarm.py; root)

Cuts releases 1.0.0, 1.1.0 and 1.2.0 (never ready) in a throwaway clone with its own image
prefix, makes a lab of its own (`swarm.lab.up`), deploys 1.0.0 to its `swarm` environment,
then, while CLIENTS loopback-free clients send GET /version to both nodes' proxies and the
floating address (the lab's own network; each client at most RATE requests a second):
1. the baseline: the same load with nothing changing (STEADY_S);
2. a rolling deploy 1.0.0 -> 1.1.0: failed requests (goal 0);
3. 1.2.0, which Swarm rolls back by itself: failed requests (goal 0);
4. scale-out 1 -> 4: seconds until all 4 replicas run, and GET /api/pins throughput
   through one proxy (`hey`, 10 s, 16 connections) at 1 and at 4 replicas;
5. the proxy's upstream refresh: seconds from all replicas running until the proxy's
   resolver lists them all (then Caddy's 1 s refresh);
6. n2's engine stopped: failed requests on n1's proxy and on the floating address,
   seconds until the address moved and until all 4 replicas run again (on n1).
Everything it started is removed at the end (`swarm.lab.down`), even on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from common import base_image, bench_clone, figure, remove_images, run

from lorepin_tasks import settings as settings_mod
from lorepin_tasks.plans import swarm as plan

CLIENTS, RATE, STEADY_S, PORT = 6, 10.0, 10.0, 8580
TARGETS = ("n1", "n2", "vip")


class Load:
    """CLIENTS threads, each GET /version on the targets in turn, at most RATE/s each;
    bounded (at most 40,000 requests in all)."""

    def __init__(self, lab: plan.Lab, targets: tuple[str, ...] = TARGETS) -> None:
        self.lab, self.targets = lab, targets
        self.answers: list[tuple[float, str, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                        for i in range(CLIENTS)]  # fmt: skip

    def _client(self, offset: int) -> None:
        turn = offset
        while not self.stop.is_set() and len(self.answers) < 40_000:
            target = self.targets[turn % len(self.targets)]
            turn += 1
            started = time.monotonic()
            url = f"http://{self.lab.address(target)}:{PORT}/version"
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    answer.read()
                    self.answers.append((started, target, answer.status))
            except urllib.error.HTTPError as exc:
                self.answers.append((started, target, exc.code))
            except OSError:
                self.answers.append((started, target, 0))
            time.sleep(max(0.0, 1 / RATE - (time.monotonic() - started)))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def failed(self, target: str | None = None, since: float = 0.0) -> int:
        return sum(1 for at, t, code in self.answers
                   if code != 200 and target in (None, t) and at >= since)  # fmt: skip


def throughput(lab: plan.Lab) -> float:
    out = subprocess.run(
        ["hey", "-z", "10s", "-c", "16", f"http://{lab.address('n1')}:{PORT}/api/pins?limit=20"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(next(line for line in out.splitlines() if "Requests/sec" in line).split()[-1])


def pooling(lab: plan.Lab, stack: str, pool_size: int) -> None:
    """64 concurrent clients on GET /api/pins through n1's proxy (hey, 10 s) with 4
    replicas: the most connections PostgreSQL held for the CMS role meanwhile (sampled),
    against what the replicas' own pools would hold without pgbouncer (4 x 2 workers x 4)."""
    docker = plan.docker(lab, plan.DB_NODE)
    label = f"label=com.docker.swarm.service.name={stack}_db"
    db = subprocess.run([*docker, "ps", "-q", "--filter", label], capture_output=True,
                        text=True, check=True).stdout.split()[0]  # fmt: skip
    count = ("SELECT count(*) FROM pg_stat_activity WHERE usename = 'lorepin_cms' "
             "AND backend_type = 'client backend'")  # fmt: skip
    url = f"http://{lab.address('n1')}:{PORT}/api/pins?limit=20"
    hey = subprocess.Popen(["hey", "-z", "10s", "-c", "64", url], stdout=subprocess.PIPE,
                           text=True)  # fmt: skip
    most = 0
    while hey.poll() is None:
        said = subprocess.run([*docker, "exec", db, "psql", "-U", "lorepin", "-At", "-c", count],
                              capture_output=True, text=True, check=False).stdout  # fmt: skip
        most = max(most, int(said.strip() or 0))
        time.sleep(0.2)
    out = hey.communicate()[0]
    rate = float(next(line for line in out.splitlines() if "Requests/sec" in line).split()[-1])
    codes = [line.strip() for line in out.splitlines() if line.strip().startswith("[")]
    direct = 4 * plan.CMS_WORKERS * pool_size
    pooled = plan.pool_sizes(4, pool_size)["default_pool_size"]
    print(f"64 clients, 4 replicas: {rate:.0f} req/s ({', '.join(codes)}); PostgreSQL held at "
          f"most {most} connections for the CMS (pgbouncer's default_pool_size "
          f"{pooled}); without pgbouncer: {direct}")  # fmt: skip
    figure("swarm", "pooled_server_connections", most, "connections", direct)


def main() -> None:
    if os.geteuid() != 0 or shutil.which("hey") is None:
        raise SystemExit("the swarm benchmark needs root and hey (scripts/bootstrap.sh)")
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-swarm-") as tmp_name:
        tmp = Path(tmp_name)
        repo, git = bench_clone(tmp)
        suffix = uuid.uuid4().hex[:6]
        secrets = tmp / "secrets"
        secrets.mkdir(mode=0o700)
        (secrets / "db_password").write_text(uuid.uuid4().hex + "\n")
        (secrets / "db_password").chmod(0o644)
        config = yaml.safe_load((repo / "invoke.yaml").read_text())
        env = config["lorepin"]["environments"]["swarm"]
        env.update(project=f"lorepin-bench-swm-{suffix}", secrets_dir=str(secrets),
                   http_port=PORT)  # fmt: skip
        env["swarm"].update(lab=f"b{suffix[:5]}", replicas=2, min=1, max=4, autoscale=False)
        (repo / "invoke.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        run([*git, "commit", "-qam", "chore: the bench's swarm environment"], repo, {})
        settings = settings_mod.load(config["lorepin"], root=repo)
        lab = plan.lab(env["swarm"]["lab"], settings.checkout.id, settings.checkout.where)
        prefix = f"lorepin-bench-swarm-{suffix}"
        envs = {"LOREPIN_IMAGE_PREFIX": prefix, "BASE_IMAGE": base_image()}
        invoke = [sys.executable, "-m", "invoke"]
        try:
            for version in ("1.0.0", "1.1.0"):
                (repo / "docs" / "bench.txt").write_text(version)
                run([*git, "add", "-A"], repo, {})
                run([*git, "commit", "-qm", f"feat: {version}"], repo, {})
                run([*invoke, "release", "--as", version, "--yes"], repo, envs)
            app = repo / "cms" / "lorepin_cms" / "app.py"
            readyz = "    def readyz() -> JSONResponse:\n"
            app.write_text(app.read_text().replace(
                readyz, readyz + "        return error_response(503, 'broken')\n", 1))  # fmt: skip
            run([*git, "commit", "-qam", "fix: never ready"], repo, {})
            run([*invoke, "release", "--as", "1.2.0", "--yes"], repo, envs)
            started = time.monotonic()
            run([*invoke, "swarm.lab.up", "--name", lab.name], repo, envs)
            print(f"lab up: {time.monotonic() - started:.1f} s")
            started = time.monotonic()
            run([*invoke, "deploy", "--env", "swarm", "--version", "1.0.0"], repo, envs)
            print(f"first deploy (push, pull, database, migrations, 2 replicas): "
                  f"{time.monotonic() - started:.1f} s")  # fmt: skip
            measure(lab, env["project"], repo, invoke, envs)
        finally:
            subprocess.run([*invoke, "swarm.lab.down", "--name", lab.name, "--yes"],
                           cwd=repo, env={**os.environ, **envs}, capture_output=True,
                           check=False)  # fmt: skip
            remove_images(prefix)
            remove_images(f"{lab.registry_local}/{prefix}")


def measure(lab: plan.Lab, stack: str, repo: Path, invoke: list[str], envs: dict[str, str]) -> None:
    def task(*args: str, ok: bool = True) -> float:
        started = time.monotonic()
        done = subprocess.run([*invoke, *args], cwd=repo, env={**os.environ, **envs},
                              capture_output=True, text=True, check=False)  # fmt: skip
        if ok and done.returncode != 0:
            raise SystemExit(f"{args}: {done.stderr[-2000:]}")
        return time.monotonic() - started

    deadline = time.monotonic() + 60  # the floating address, once a node's proxy answers
    while True:
        try:
            url = f"http://{lab.address('vip')}:{PORT}/version"
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the floating address never answered") from None
            time.sleep(0.5)
    with Load(lab) as steady:
        time.sleep(STEADY_S)
    per = ", ".join(f"{t} {steady.failed(t)}" for t in TARGETS)
    print(f"baseline, nothing changing: {steady.failed()} of {len(steady.answers)} failed ({per})")
    with Load(lab) as load:
        time.sleep(2)
        seconds = task("deploy", "--env", "swarm", "--version", "1.1.0")
        time.sleep(2)
    print(f"rolling deploy 1.0.0 -> 1.1.0: {load.failed()} of {len(load.answers)} failed "
          f"({seconds:.1f} s)")  # fmt: skip
    figure("swarm", "rolling_deploy_failed", load.failed(), "requests", steady.failed())
    with Load(lab) as load:
        time.sleep(2)
        seconds = task("deploy", "--env", "swarm", "--version", "1.2.0", ok=False)
        time.sleep(2)
    print(f"1.2.0 rolled back by Swarm: {load.failed()} of {len(load.answers)} failed "
          f"({seconds:.1f} s)")  # fmt: skip
    figure("swarm", "swarm_rollback_failed", load.failed(), "requests", steady.failed())

    task("scale", "--env", "swarm", "--replicas", "1")
    one = throughput(lab)
    manager = plan.docker(lab, plan.MANAGER)
    seconds = task("scale", "--env", "swarm", "--replicas", "4")
    running_at = time.monotonic()
    label = f"label=com.docker.swarm.service.name={stack}_proxy"
    found = subprocess.run([*manager, "ps", "-q", "--filter", label],
                           capture_output=True, text=True, check=True)  # fmt: skip
    proxy = found.stdout.split()[0]
    while True:
        hosts = subprocess.run([*manager, "exec", proxy, "getent", "ahostsv4", "tasks.cms"],
                               capture_output=True, text=True, check=False).stdout  # fmt: skip
        if len({line.split()[0] for line in hosts.splitlines() if line.strip()}) >= 4:
            break
        if time.monotonic() - running_at > 60:
            raise SystemExit("the proxy's resolver never listed 4 replicas")
        time.sleep(0.05)
    refresh = time.monotonic() - running_at
    four = throughput(lab)
    print(f"scale-out 1 -> 4: all running after {seconds:.1f} s; the proxy's resolver lists "
          f"them {refresh:.2f} s later (+ Caddy's 1 s refresh); GET /api/pins "
          f"{one:.0f} -> {four:.0f} req/s (one proxy, 16 connections, 2 cores)")  # fmt: skip
    figure("swarm", "scale_out_seconds", seconds, "s")
    figure("swarm", "scale_out_throughput", four, "req/s", one)
    pooling(lab, stack, 4)  # invoke.yaml's swarm environment: database.pool_size

    pid = int(lab.pidfile("n2").read_text())
    with Load(lab, ("n1", "vip")) as load:
        time.sleep(3)
        lost = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        moved = back = None
        while time.monotonic() - lost < 120 and back is None:
            vip = subprocess.run(["ip", "netns", "exec", lab.netns("n1"), "ip", "-o", "-4",
                                  "addr", "show", "eth0"], capture_output=True, text=True,
                                 check=False).stdout  # fmt: skip
            if moved is None and f" {lab.address('vip')}/" in vip:
                moved = time.monotonic() - lost
            tasks = subprocess.run([*manager, "service", "ps", f"{stack}_cms", "--filter",
                                    "desired-state=running", "--format",
                                    "{{.Node}} {{.CurrentState}}"],
                                   capture_output=True, text=True, check=False).stdout  # fmt: skip
            on_n1 = [t for t in tasks.splitlines() if t.startswith(f"{lab.name}-n1 Running")]
            if len(on_n1) == 4:
                back = time.monotonic() - lost
            time.sleep(0.25)
        time.sleep(2)
    print(
        f"n2 lost: n1's proxy failed {load.failed('n1', lost)}, the floating address "
        f"{load.failed('vip', lost)} of {len(load.answers)} requests; the address moved "
        f"after {moved or -1:.1f} s; 4 replicas ran again (on n1) after {back or -1:.1f} s"
    )
    figure("swarm", "node_lost_failed_vip", load.failed("vip", lost), "requests")
    figure("swarm", "node_lost_capacity_back_seconds", back or -1, "s")
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
