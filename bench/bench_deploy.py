"""A blue-green deploy and a rollback under constant load, beside a plain Compose recreate.

    .venv/bin/nox -s bench -- deploy     (or: .venv/bin/python bench/bench_deploy.py)

Cuts releases 1.0.0 and 1.1.0 in a throwaway clone (its own image prefix), deploys 1.0.0
to a staging environment of its own (a unique project, Docker-chosen ports, a 5 s watch
window), then, while a loopback client sends GET /version through the proxy at a fixed
rate (one new HTTPS connection per request, 5 s client timeout):
1. deploys 1.1.0 (`invoke deploy`),
2. rolls back to the kept 1.0.0 (`invoke rollback`),
3. the baseline: recreates the serving colour the plain way, `docker compose up -d
   --force-recreate`, as a deploy without blue-green would.
Each phase sends at least MIN_REQUESTS requests, with STEADY_S of load before the
command. Everything it started is removed at the end, even on failure.

Targets (issue 10): 0 failed requests during the deploy and the rollback; p99 around the
switch <= 2x the steady p99 of the same phase; rollback from the command to 100 % of
answers from the previous version <= 3 s; the deploy, its watch window left out, <= 30 s.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from common import (
    base_image,
    bench_clone,
    figure,
    free_port,
    private_homes,
    remove_images,
    run,
)  # fmt: skip

RATE = 80  # requests a second, over WORKERS threads
WORKERS = 8
MIN_REQUESTS = 2000
STEADY_S = 8.0
CLIENT_TIMEOUT_S = 5.0
WATCH_S = 5
SWITCH_WINDOW_S = 2.0  # "around the switch": this long either side of the first new answer


@dataclass(frozen=True)
class Answer:
    at: float  # monotonic time the request was sent
    seconds: float
    version: str | None  # None: failed (error, timeout or non-200)


@dataclass
class Load:
    """A paced loopback load: RATE requests a second until stopped."""

    url: str
    cafile: Path
    answers: list[Answer] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def _worker(self, offset: float) -> None:
        context = ssl.create_default_context(cafile=str(self.cafile))
        interval = WORKERS / RATE
        next_at = time.monotonic() + offset
        while not self.stopping.is_set():
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            sent = time.monotonic()
            version = None
            try:
                with urllib.request.urlopen(  # noqa: S310 (127.0.0.1)
                    self.url, timeout=CLIENT_TIMEOUT_S, context=context
                ) as r:
                    if r.status == 200:
                        version = str(json.loads(r.read())["version"])
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                version = None
            self.answers.append(Answer(sent, time.monotonic() - sent, version))

    def __enter__(self) -> Load:
        for i in range(WORKERS):
            t = threading.Thread(target=self._worker, args=(i / RATE,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(CLIENT_TIMEOUT_S + 1)

    def until(self, count: int) -> None:
        while len(self.answers) < count:
            time.sleep(0.2)


def p99(answers: list[Answer]) -> float:
    times = sorted(a.seconds for a in answers)
    return times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0.0


@dataclass(frozen=True)
class Phase:
    name: str
    requests: int
    failed: int
    steady_p99: float
    switch_p99: float
    command_s: float
    all_new_after_s: float | None  # command start -> every later answer is the new version


def phase(name: str, load: Load, started: float, took: float, new: str | None = None) -> Phase:
    """`new`: the version the command brings (None: the baseline, timed over the command)."""
    answers = sorted(load.answers, key=lambda a: a.at)
    steady = [a for a in answers if a.at < started and a.version]
    first_new = next((a.at for a in answers if a.at >= started and a.version == new), None)
    if new is None:
        around = [a for a in answers if started <= a.at <= started + took + SWITCH_WINDOW_S]
    else:
        around = [a for a in answers if first_new and abs(a.at - first_new) <= SWITCH_WINDOW_S]
    last_other = max((a.at + a.seconds for a in answers if a.version != new), default=started)
    return Phase(
        name=name,
        requests=len(answers),
        failed=sum(1 for a in answers if a.version is None),
        steady_p99=p99(steady),
        switch_p99=p99([a for a in around if a.version]),
        command_s=took,
        all_new_after_s=last_other - started if new and first_new else None,
    )


def setup(tmp: Path, project: str, prefix: str) -> tuple[Path, dict[str, str]]:
    """A clone with a staging environment of its own, and releases 1.0.0 and 1.1.0."""
    repo, git = bench_clone(tmp)
    secrets = tmp / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "db_password").write_text(uuid.uuid4().hex + "\n")
    (secrets / "db_password").chmod(0o644)
    config = yaml.safe_load((repo / "invoke.yaml").read_text())
    config["lorepin"]["environments"]["staging"].update(
        project=project, http_port=0, https_port=0, secrets_dir=str(secrets)
    )
    config["lorepin"]["environments"]["staging"]["deploy"]["watch"] = WATCH_S
    config["lorepin"]["environments"]["staging"]["logs"]["port"] = free_port()
    (repo / "invoke.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {"BASE_IMAGE": base_image(), "LOREPIN_IMAGE_PREFIX": prefix, **private_homes(tmp)}
    for version in ("1.0.0", "1.1.0"):
        note = repo / "docs" / "bench-release.txt"
        note.write_text(f"{version}\n")
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", f"feat: bench release {version}"], check=True)
        print(f"cutting release {version} ...", flush=True)
        run([sys.executable, "-m", "invoke", "release", "--as", version, "--yes"], repo, env)
    return repo, env


def proxy_url(project: str) -> str:
    port = (
        subprocess.run(
            ["docker", "port", f"{project}-proxy-1", "8443"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.split()[0]
        .rpartition(":")[2]
    )
    return f"https://127.0.0.1:{port}/version"


def under_load(
    name: str,
    url: str,
    cafile: Path,
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    new: str | None = None,
) -> Phase:
    print(f"{name} under load ...", flush=True)
    with Load(url, cafile) as load:
        time.sleep(STEADY_S)
        started = time.monotonic()
        run(command, cwd, env)
        took = time.monotonic() - started
        load.until(MIN_REQUESTS)
        time.sleep(1)
    return phase(name, load, started, took, new)


def plain_recreate(repo: Path, env: dict[str, str], live: str) -> tuple[list[str], dict[str, str]]:
    """The baseline's command: Compose recreates the serving colour in place, as a deploy
    without blue-green would (argv and variables from the toolkit's own plans)."""
    from lorepin_tasks import settings as settings_mod
    from lorepin_tasks.plans import compose
    from lorepin_tasks.plans import deploy as plan

    config = yaml.safe_load((repo / "invoke.yaml").read_text())["lorepin"]
    settings = settings_mod.load(config, root=repo, environ={**os.environ, **env})
    staging = settings.environment("staging")
    argv = [
        *compose.compose(staging),
        "up", "--detach", "--no-build", "--pull", "never", "--no-deps", "--force-recreate",
        plan.service(live),
    ]  # fmt: skip
    variables = compose.variables(settings, staging, None)
    return argv, {**variables, f"LOREPIN_{live.upper()}_VERSION": "1.0.0"}


def watch_seconds(repo: Path, env: dict[str, str]) -> float:
    """How long the last deploy watched its release (its recorded step)."""
    history = json.loads(
        run(
            [sys.executable, "-m", "invoke", "deploy.history", "--env", "staging", "--json"],
            repo,
            env,
        )
    )
    last = next(r for r in reversed(history) if r["outcome"] == "succeeded")
    return float(sum(s["seconds"] for s in last["steps"] if s["name"].startswith("watching")))


def report(phases: list[Phase], deploy_s: float) -> None:
    def ms(s: float) -> str:
        return f"{s * 1000:.0f}"

    print(
        f"\nGET /version through the proxy at {RATE} req/s (one HTTPS connection each), "
        f"client timeout {CLIENT_TIMEOUT_S:.0f} s; switch window +-{SWITCH_WINDOW_S:.0f} s"
    )
    print(
        f"{'phase':<28} {'requests':>8} {'failed':>6} {'steady p99 ms':>13} "
        f"{'switch p99 ms':>13} {'x':>5} {'command s':>9} {'all new after s':>15}"
    )
    for p in phases:
        ratio = p.switch_p99 / p.steady_p99 if p.steady_p99 else 0.0
        after = "-" if p.all_new_after_s is None else f"{p.all_new_after_s:.2f}"
        print(
            f"{p.name:<28} {p.requests:>8} {p.failed:>6} {ms(p.steady_p99):>13} "
            f"{ms(p.switch_p99):>13} {ratio:>5.2f} {p.command_s:>9.1f} {after:>15}"
        )
    print(f"deploy of a present image, from the command, watch window left out: {deploy_s:.1f} s")
    deploy, rollback = phases[0], phases[1]
    figure("deploy", "deploy, watch window left out", deploy_s, "s")
    figure("deploy", "failed requests in the deploy and the rollback", deploy.failed
           + rollback.failed, "requests")  # fmt: skip
    figure("deploy", "p99 around the deploy's switch (baseline: steady)",
           deploy.switch_p99 * 1000, "ms", deploy.steady_p99 * 1000)  # fmt: skip
    checks = {
        "0 failed requests during the deploy and the rollback": deploy.failed == 0
        and rollback.failed == 0,
        f">= {MIN_REQUESTS} requests per phase": all(p.requests >= MIN_REQUESTS for p in phases),
        "p99 around the switch <= 2x steady (deploy, rollback)": all(
            p.switch_p99 <= 2 * p.steady_p99 for p in (deploy, rollback)
        ),
        "rollback: command to 100 % previous version <= 3 s": rollback.all_new_after_s is not None
        and rollback.all_new_after_s <= 3.0,
        "deploy without the watch window <= 30 s": deploy_s <= 30.0,
    }
    for label, ok in checks.items():
        print(f"{'meets' if ok else 'MISSES'}: {label}")


def main() -> None:
    suffix = uuid.uuid4().hex[:6]
    project, prefix = f"lorepin-bench-deploy-{suffix}", f"lorepin-bench-deploy-{suffix}"
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-deploy-") as name:
        tmp = Path(name)
        repo, env = setup(tmp, project, prefix)
        invoke = [sys.executable, "-m", "invoke"]
        try:
            print("deploying 1.0.0 ...", flush=True)
            run([*invoke, "deploy", "--env", "staging", "--version", "1.0.0"], repo, env)
            url, cafile = proxy_url(project), tmp / "secrets" / "tls.crt"
            deployed = under_load(
                "deploy 1.0.0 -> 1.1.0",
                url,
                cafile,
                [*invoke, "deploy", "--env", "staging", "--version", "1.1.0"],
                repo,
                env,
                "1.1.0",
            )
            deploy_s = deployed.command_s - watch_seconds(repo, env)
            rolled = under_load(
                "rollback 1.1.0 -> 1.0.0",
                url,
                cafile,
                [*invoke, "rollback", "--env", "staging"],
                repo,
                env,
                "1.0.0",
            )
            status = json.loads(run([*invoke, "status", "--env", "staging", "--json"], repo, env))
            argv, variables = plain_recreate(repo, env, status["live"])
            naive = under_load("baseline: compose recreate", url, cafile, argv, repo, variables)
            report([deployed, rolled, naive], deploy_s)
        finally:
            teardown(repo, env, prefix)


def teardown(repo: Path, env: dict[str, str], prefix: str) -> None:
    """The staging environment down with its volumes, and the bench's release images."""
    subprocess.run(
        [sys.executable, "-m", "invoke", "down", "--env", "staging", "--volumes", "--yes"],
        cwd=repo,
        env={**os.environ, **env},
        capture_output=True,
        check=False,
        timeout=300,
    )
    remove_images(prefix)


if __name__ == "__main__":
    main()
