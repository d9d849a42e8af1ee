"""What the CMS's metrics cost: GET /api/pins/{id} at 64 concurrent clients with the
instrumentation on (as deployed) and off (LOREPIN_METRICS=off), side by side in one run.

    .venv/bin/nox -s bench -- monitoring     (or: .venv/bin/python bench/bench_monitoring.py)

Starts its own stack with `invoke up` (a unique project, Docker-chosen ports), seeds 1000
pins, and runs the CMS image twice with its default command (two uvicorn workers, the
metrics port of lorepin_cms.serve), once with metrics and once without, on the stack's
network. `hey` then loads each in turn, alternating (off, on, off, on: drift on the host
falls on both), 10 s a round (LOREPIN_BENCH_ROUNDS rounds each, 3 unless said), and the
medians are compared. Everything it started is removed at the end, even on failure.

Target: throughput with metrics at least 95 % of that without (the baseline of the same
run). Needs `hey`. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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
from common import ROOT, figure, stack_env

CLIENTS = 64
ROUNDS = int(os.environ.get("LOREPIN_BENCH_ROUNDS", "3"))
TARGET = 0.95


def summary(runs: list[Run]) -> tuple[float, float, float]:
    """Median req/s, p50 and p99 (seconds) of some rounds: one noisy round (another
    process on the 2 cores) moves the median less than the mean."""
    return (
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50 or 0 for r in runs),
        statistics.median(r.p99 or 0 for r in runs),
    )


def main() -> None:
    if shutil.which("hey") is None:
        raise SystemExit("bench_monitoring needs `hey` on PATH: apt-get install hey")
    project = f"lorepin-bench-mon-{os.getpid()}"
    rounds: dict[str, list[Run]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-mon-") as tmp:
        env = stack_env(project, tmp)
        started: list[str] = []
        try:
            image = seeded_stack(project, env)
            urls = {}
            for switch in ("off", "on"):
                name, urls[switch] = serve_default_command(
                    project, image, Path(tmp) / "secrets", suffix=f"metrics-{switch}",
                    env=(f"LOREPIN_METRICS={switch}",),
                )  # fmt: skip
                started.append(name)
                wait_ready(urls[switch])
            print(f"stack {project}: {image}, metrics off at {urls['off']}, on at {urls['on']}")
            for _ in range(ROUNDS):
                for switch in ("off", "on"):
                    rounds[switch].append(measure(urls[switch], CLIENTS))
            scraped = docker("exec", f"{project}-metrics-on", "python3", "-c",
                             "import urllib.request as u; print(u.urlopen("
                             "'http://127.0.0.1:9464/metrics').read().decode())")  # fmt: skip
        finally:
            for name in started:
                docker("rm", "--force", "--volumes", name, check=False)
            subprocess.run(
                [sys.executable, "-m", "invoke", "down", "--volumes", "--yes"],
                cwd=ROOT, env={**os.environ, **env}, capture_output=True, check=False,
                timeout=300,
            )  # fmt: skip
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in scraped.splitlines()
        if line.startswith("lorepin_http_requests_total{") and "pin_id" in line
    )
    off, on = summary(rounds["off"]), summary(rounds["on"])
    print(f"\nGET /api/pins/{{id}}, {CLIENTS} clients, {ROUNDS} rounds of 10 s each, alternating")
    for switch in ("off", "on"):
        print(f"  req/s per round, metrics {switch}: "
              f"{', '.join(f'{r.rps:.0f}' for r in rounds[switch])}")  # fmt: skip
    print(f"{'metrics':>8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}  (medians)")
    for label, (rps, p50, p99), runs in (("off", off, rounds["off"]), ("on", on, rounds["on"])):
        errors = sum(r.errors + r.timeouts for r in runs)
        print(f"{label:>8} {rps:>8.0f} {p50 * 1000:>7.0f} {p99 * 1000:>7.0f} {errors:>6}")
    ratio = on[0] / off[0] if off[0] else 0.0
    figure("monitoring", "req/s with metrics (baseline: without)", on[0], "req/s", off[0])
    print(f"throughput with metrics: {ratio:.1%} of without ({1 - ratio:+.1%} lost)")
    print(f"requests the metrics counted: {counted:.0f} (hey sent "
          f"{sum(r.requests for r in rounds['on'])})")  # fmt: skip
    print(f"{'meets' if ratio >= TARGET else 'MISSES'}: at most {1 - TARGET:.0%} throughput lost")


if __name__ == "__main__":
    main()
