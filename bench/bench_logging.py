"""What the central log costs the CMS: GET /api/pins/{id} at 64 concurrent clients with
no access lines (LOREPIN_LOG_LEVEL=warning, the baseline), with one JSON access line per
request into the engine's json-file log, and with the same lines through the syslog
driver to the environment's collector (rsyslog), as server environments run, and (as the
user activity's cost) json-file with LOREPIN_ACTIVITY=off; side by side in one run.

    .venv/bin/nox -s bench -- logging     (or: .venv/bin/python bench/bench_logging.py)

Starts its own stack with `invoke up` (a unique project, Docker-chosen ports), seeds 1000
pins, starts a collector and four CMS containers (the image's own command: two uvicorn
workers) on the stack's network, and loads each in turn with `hey`, alternating, 10 s a
round (LOREPIN_BENCH_ROUNDS rounds each, 3 unless said); medians are compared. Checks
that the collector filed the access lines. Everything it started is removed at the end,
even on failure.

Target: through the collector, at most 5 % less throughput than with json-file (the
collector's cost), and the access lines' own cost against no lines, reported. Needs
`hey`. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cms import (
    Run,
    docker,
    measure,
    seeded_stack,
    serve_default_command,
    wait_ready,
)
from bench_monitoring import summary
from common import ROOT, base_image, figure, stack_env

CLIENTS = 64
ROUNDS = int(os.environ.get("LOREPIN_BENCH_ROUNDS", "3"))
TARGET = 0.95
ALL = ("no lines", "json-file", "collector", "no activity")
# Some of them only: LOREPIN_BENCH_VARIANTS="json-file,no activity" (fewer idle containers).
VARIANTS = tuple(v for v in ALL if v in os.environ.get("LOREPIN_BENCH_VARIANTS", ",".join(ALL)))


def main() -> None:
    if shutil.which("hey") is None:
        raise SystemExit("bench_logging needs `hey` on PATH: apt-get install hey")
    project = f"lorepin-bench-log-{os.getpid()}"
    collector, collector_image = f"{project}-collector", f"{project}/collector:bench"
    rounds: dict[str, list[Run]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-log-") as tmp:
        env = stack_env(project, tmp)
        started: list[str] = []
        try:
            image = seeded_stack(project, env)
            docker("build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image()}", "--tag",
                   collector_image, str(ROOT / "compose/images/collector"))  # fmt: skip
            docker("run", "--detach", "--name", collector, "--publish", "127.0.0.1::5514",
                   collector_image)  # fmt: skip
            started.append(collector)
            port = docker("port", collector, "5514/tcp").splitlines()[0].rsplit(":", 1)[1]
            while (
                docker("inspect", "-f", "{{.State.Health.Status}}", collector).strip() != "healthy"
            ):
                time.sleep(0.5)
            syslog = ("--log-driver=syslog", f"--log-opt=syslog-address=tcp://127.0.0.1:{port}",
                      "--log-opt=syslog-format=rfc5424micro", "--log-opt=mode=non-blocking",
                      "--log-opt=max-buffer-size=4m", "--log-opt=tag=cms-bench")  # fmt: skip
            # variant: (environment, docker run arguments)
            setups: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
                "no lines": (("LOREPIN_LOG_LEVEL=warning",), ()),
                "json-file": ((), ()),
                "collector": ((), syslog),
                # json-file without the user activity (lorepin_cms.activity): its cost.
                "no activity": (("LOREPIN_ACTIVITY=off",), ()),
            }
            urls = {}
            # Four CMS containers of two workers each keep their connections open: at the
            # default pool (16, and 1 for the activity) they would pass PostgreSQL's 100.
            pool = ("LOREPIN_DB_POOL_SIZE=10",)
            for variant, (variables, args) in setups.items():
                if variant not in VARIANTS:
                    continue
                name, urls[variant] = serve_default_command(
                    project, image, Path(tmp) / "secrets",
                    suffix="cms-" + variant.replace(" ", "-"), env=pool + variables, args=args,
                )  # fmt: skip
                started.append(name)
                wait_ready(urls[variant])
            print(f"stack {project}: {image}; collector on 127.0.0.1:{port}")
            for _ in range(ROUNDS):
                for variant in VARIANTS:
                    rounds[variant].append(measure(urls[variant], CLIENTS))
            time.sleep(2)  # the collector's last batch
            day = time.strftime("%Y-%m-%d", time.gmtime())
            log = f"/var/log/lorepin/cms-bench/{day}.log"
            filed = (
                docker("exec", collector, "grep", "-c", '"event": "request"', log)
                if "collector" in VARIANTS
                else ""
            )
        finally:
            for name in started:
                docker("rm", "--force", "--volumes", name, check=False)
            docker("image", "rm", "--force", collector_image, check=False)
            subprocess.run(
                [sys.executable, "-m", "invoke", "down", "--volumes", "--yes"],
                cwd=ROOT, env={**os.environ, **env}, capture_output=True, check=False,
                timeout=300,
            )  # fmt: skip
    results = {v: summary(rounds[v]) for v in VARIANTS}
    print(f"\nGET /api/pins/{{id}}, {CLIENTS} clients, {ROUNDS} rounds of 10 s each, alternating")
    print(
        f"{'logging':>11} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}  (medians; rounds)"
    )
    for v in VARIANTS:
        rps, p50, p99 = results[v]
        errors = sum(r.errors + r.timeouts for r in rounds[v])
        each = ", ".join(f"{r.rps:.0f}" for r in rounds[v])
        print(f"{v:>11} {rps:>8.0f} {p50 * 1000:>7.0f} {p99 * 1000:>7.0f} {errors:>6}  ({each})")

    def ratio(a: str, b: str) -> float | None:
        return results[a][0] / results[b][0] if a in results and b in results else None

    if (lines := ratio("json-file", "no lines")) is not None:
        print(f"access lines (json-file) vs none: {lines:.1%} of the throughput")
    if (collected := ratio("collector", "json-file")) is not None:
        print(f"collector vs json-file: {collected:.1%} of the throughput")
        figure("logging", "req/s with the collector (baseline: json-file)",
               results["collector"][0], "req/s", results["json-file"][0])  # fmt: skip
        sent = sum(r.requests for r in rounds["collector"])
        print(f"access lines the collector filed: {filed.strip()} (hey sent {sent} + probes)")
        print(f"{'meets' if collected >= TARGET else 'MISSES'}: the collector costs at most "
              f"{1 - TARGET:.0%}")  # fmt: skip
    if (recorded := ratio("json-file", "no activity")) is not None:
        print(f"user activity recorded (json-file) vs not: {recorded:.1%} of the throughput")
        figure("logging", "req/s recording activity (baseline: not)", results["json-file"][0],
               "req/s", results["no activity"][0])  # fmt: skip
        print("  (hey keeps no cookie: every request is a new session, a cookie and a row)")


if __name__ == "__main__":
    main()
