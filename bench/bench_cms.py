"""Read throughput and latency of the CMS under concurrent clients, /healthz probed throughout.

    .venv/bin/nox -s bench -- cms     (or: .venv/bin/python bench/bench_cms.py)

Starts its own stack with `invoke up` (a unique project, Docker-chosen ports, the image tag
`bench`), seeds 1000 pins, and serves the CMS image with its default command (the one
staging and production run, with its worker processes) beside the local environment's
reloading server, on the stack's network. Then `hey` sends GET /api/pins/{id} at 16, 64
and 256 concurrent clients, 10 s each with a 10 s client timeout, while a probe times
GET /healthz every 100 ms. Everything it started is removed at the end, even on failure.

Targets: no errors and no timeouts at any level, throughput at 64 clients at least that at
16 (the baseline of the same run), /healthz always under 1 s.
Needs `hey` (Debian: apt-get install hey). All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, figure, run, stack_env

LEVELS = (16, 64, 256)
DURATION_S = 10
CLIENT_TIMEOUT_S = 10
PINS = 1000
HEALTH_TARGET_S = 1.0


@dataclass
class Run:
    clients: int
    requests: int
    rps: float
    p50: float | None
    p99: float | None
    errors: int  # non-2xx responses and failed requests other than timeouts
    timeouts: int
    health_max: float


class HealthProbe(threading.Thread):
    """Times GET /healthz every 100 ms; a failed or timed-out probe counts as its timeout."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.url, self.timeout = url, timeout
        self.worst = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout) as r:  # noqa: S310
                    r.read()
                took = time.monotonic() - started
            except (OSError, urllib.error.URLError):
                took = max(time.monotonic() - started, self.timeout)
            self.worst = max(self.worst, took)
            self.stopping.wait(0.1)

    def stop(self) -> float:
        self.stopping.set()
        self.join()
        return self.worst


def parse_hey(out: str) -> tuple[int, float, float | None, float | None, int, int]:
    """requests, req/s, p50, p99, errors, timeouts from hey's summary."""

    def number(pattern: str) -> float | None:
        found = re.search(pattern, out, re.MULTILINE)
        return float(found.group(1)) if found else None

    statuses = [
        (int(c), int(n)) for c, n in re.findall(r"^\s+\[(\d{3})\]\s+(\d+) responses", out, re.M)
    ]
    failures = [(int(n), msg) for n, msg in re.findall(r"^\s+\[(\d+)\]\s+(\D.*)$", out, re.M)]
    timeouts = sum(n for n, msg in failures if "Timeout exceeded" in msg or "deadline" in msg)
    other = sum(n for n, msg in failures) - timeouts
    bad_status = sum(n for code, n in statuses if not 200 <= code < 300)
    requests = sum(n for _, n in statuses) + other + timeouts
    return (
        requests,
        number(r"Requests/sec:\s+([\d.]+)") or 0.0,
        number(r"^\s+50% in ([\d.]+) secs"),
        number(r"^\s+99% in ([\d.]+) secs"),
        bad_status + other,
        timeouts,
    )


def invoke(*args: str, env: dict[str, str], timeout: float = 900) -> str:
    return run([sys.executable, "-m", "invoke", *args], ROOT, env, timeout)


def docker(*args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=300
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def wait_ready(url: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=3) as r:  # noqa: S310
                if r.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}/readyz did not answer 200 within {within:.0f} s")
        time.sleep(0.5)


def serve_default_command(
    project: str,
    image: str,
    secrets: Path,
    *,
    suffix: str = "bench-cms",
    env: tuple[str, ...] = (),
    args: tuple[str, ...] = (),
) -> tuple[str, str]:
    """Run `image` with its own CMD on the stack's network; its name and URL on 127.0.0.1."""
    name = f"{project}-{suffix}"
    stack_env = json.loads(
        docker("inspect", "--format", "{{json .Config.Env}}", f"{project}-cms-1")
    )
    db_env = [f"--env={e}" for e in stack_env if e.startswith("LOREPIN_DB_")]
    docker(
        "run",
        "--detach",
        f"--name={name}",
        f"--network={project}_default",
        "--publish=127.0.0.1::8000",
        f"--label=dev.lorepin.bench={project}",
        *db_env,
        *(f"--env={e}" for e in env),
        *args,
        f"--volume={secrets / 'db_password'}:/run/secrets/db_password:ro",
        image,
    )
    host_port = docker("port", name, "8000/tcp").splitlines()[0]
    return name, f"http://{host_port}"


def public_pin(url: str) -> int:
    """A published pin from the middle of the seeded ones: the public read the runs measure
    (a draft would be a 404 to hey's anonymous requests)."""
    with urllib.request.urlopen(  # noqa: S310 (127.0.0.1)
        f"{url}/api/pins?limit=1&offset={PINS // 4}", timeout=10
    ) as answer:
        return int(json.loads(answer.read())["items"][0]["id"])


def measure(url: str, clients: int) -> Run:
    pin = public_pin(url)
    probe = HealthProbe(f"{url}/healthz")
    probe.start()
    try:
        hey = subprocess.run(
            [
                "hey",
                "-z",
                f"{DURATION_S}s",
                "-c",
                str(clients),
                "-t",
                str(CLIENT_TIMEOUT_S),
                f"{url}/api/pins/{pin}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=DURATION_S + CLIENT_TIMEOUT_S + 60,
        )
    finally:
        health = probe.stop()
    return Run(clients, *parse_hey(hey.stdout), health_max=health)


def report(runs: list[Run]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f}"

    base = runs[0]
    print(
        f"\nGET /api/pins/{{id}} for {DURATION_S} s per level, client timeout {CLIENT_TIMEOUT_S} s"
    )
    print(
        f"{'clients':>7} {'requests':>8} {'req/s':>7} {'vs 16':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'timeouts':>8} {'max /healthz ms':>15}"
    )
    for r in runs:
        ratio = r.rps / base.rps if base.rps else 0.0
        print(
            f"{r.clients:>7} {r.requests:>8} {r.rps:>7.0f} {ratio:>6.2f} "
            f"{ms(r.p50):>7} {ms(r.p99):>7} {r.errors:>6} {r.timeouts:>8} {ms(r.health_max):>15}"
        )
    top = runs[-1]
    figure("cms", f"req/s at {top.clients} clients (baseline: {base.clients})", top.rps, "req/s",
           base.rps)  # fmt: skip
    if top.p99 is not None and base.p99 is not None:
        figure("cms", f"p99 at {top.clients} clients (baseline: {base.clients})", top.p99 * 1000,
               "ms", base.p99 * 1000)  # fmt: skip
    checks = {
        "no errors": all(r.errors == 0 for r in runs),
        "no timeouts": all(r.timeouts == 0 for r in runs),
        "req/s at 64 >= at 16": next(r.rps for r in runs if r.clients == 64) >= base.rps,
        f"/healthz under {HEALTH_TARGET_S:.0f} s": all(
            r.health_max < HEALTH_TARGET_S for r in runs
        ),
    }
    for label, ok in checks.items():
        print(f"{'meets' if ok else 'MISSES'}: {label}")


def seeded_stack(project: str, env: dict[str, str]) -> str:
    """`invoke up` the stack and seed its pins; the CMS image it runs."""
    invoke("up", env=env)
    status = json.loads(invoke("status", "--json", env=env))
    image = str(next(s["image"] for s in status["services"] if s["service"] == "cms"))
    docker("exec", f"{project}-cms-1", "python", "-m", "lorepin_cms.seed",
           "--count", str(PINS), "--seed", "1")  # fmt: skip
    return image


def main() -> None:
    if shutil.which("hey") is None:
        raise SystemExit("bench_cms needs `hey` on PATH: apt-get install hey (Debian/Ubuntu)")
    project = f"lorepin-bench-cms-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-cms-") as tmp:
        env = stack_env(project, tmp)
        bench_cms = None
        try:
            image = seeded_stack(project, env)
            bench_cms, url = serve_default_command(project, image, Path(tmp) / "secrets")
            wait_ready(url)
            print(f"stack {project}: {image} with its default command at {url}")
            runs = [measure(url, clients) for clients in LEVELS]
        finally:
            if bench_cms:
                docker("rm", "--force", "--volumes", bench_cms, check=False)
            subprocess.run(
                [sys.executable, "-m", "invoke", "down", "--volumes", "--yes"],
                cwd=ROOT,
                env={**os.environ, **env},
                capture_output=True,
                check=False,
                timeout=300,
            )
    report(runs)


if __name__ == "__main__":
    main()
