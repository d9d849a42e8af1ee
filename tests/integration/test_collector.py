"""The log collector's image on a real engine: what a full log volume does to the services
that log to it (they keep running, and so does the collector), and the lines and error
lines it counts per service for Prometheus (mtail)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.conftest import ROOT
from tests.release_helpers import base_image

pytestmark = pytest.mark.docker


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


@contextmanager
def running_collector(volume_size: str) -> Iterator[tuple[str, int, int]]:
    """The collector on a log volume of `volume_size`: its container name, and the loopback
    ports of its syslog input and of its metrics (mtail)."""
    name = f"lorepin-test-collector-{uuid.uuid4().hex[:8]}"
    image = f"{name}:test"
    docker("build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image()}", "--tag", image,
           str(ROOT / "compose/images/collector"))  # fmt: skip
    try:
        volume = f"/var/log/lorepin:size={volume_size},uid=10514,gid=10514,mode=2750"
        docker("run", "--detach", "--name", name, "--init", "--read-only", "--tmpfs", "/tmp",
               "--cap-drop", "ALL", "--publish", "127.0.0.1::5514", "--publish",
               "127.0.0.1::3903", "--tmpfs", volume, image)  # fmt: skip
        port = int(docker("port", name, "5514/tcp").stdout.strip().rsplit(":", 1)[1])
        metrics = int(docker("port", name, "3903/tcp").stdout.strip().rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        while docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout != "healthy\n":
            assert time.monotonic() < deadline, docker("logs", name, check=False).stderr
            time.sleep(0.5)
        yield name, port, metrics
    finally:
        docker("rm", "--force", "--volumes", name, check=False)
        docker("image", "rm", "--force", image, check=False)


@pytest.fixture
def full_collector() -> Iterator[tuple[str, int]]:
    """The collector on a 256 KiB log volume (the image's owner): name and syslog port."""
    with running_collector("256k") as (name, port, _):
        yield name, port


def write(port: int, name: str, script: str) -> None:
    """A container that logs what `script` prints as the environment's services do."""
    try:
        done = docker(
            "run", "--name", name, "--label", "com.docker.compose.service=writer",
            "--log-driver", "syslog", "--log-opt", f"syslog-address=tcp://127.0.0.1:{port}",
            "--log-opt", "syslog-format=rfc5424micro", "--log-opt", "mode=non-blocking",
            "--log-opt", 'tag={{index .ContainerLabels "com.docker.compose.service"}}',
            base_image(), "sh", "-c", script, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        docker("rm", "--force", name, check=False)


def test_a_full_log_volume_stops_neither_the_services_nor_the_collector(
    full_collector: tuple[str, int],
) -> None:
    """Lines that do not fit are lost (rsyslog says so in its own log), the writer is never
    held up, and once there is room again the collector writes again by itself."""
    name, port = full_collector
    started = time.monotonic()
    write(port, f"{name}-writer",
          'i=0; while [ $i -lt 20000 ]; do echo "line $i of the writer, padded to about a '
          'hundred bytes .............................."; i=$((i+1)); done')  # fmt: skip
    assert time.monotonic() - started < 30  # 2 MB into 256 KiB: never blocked
    assert docker("inspect", "-f", "{{.State.Running}}", name).stdout == "true\n"
    day = time.strftime("%Y-%m-%d", time.gmtime())
    deadline = time.monotonic() + 20  # the collector writes what it took, in batches
    while docker(
        "exec", name, "test", "-s", f"/var/log/lorepin/writer/{day}.log", check=False
    ).returncode:
        assert time.monotonic() < deadline, docker(
            "exec", name, "ls", "-laR", "/var/log/lorepin"
        ).stdout
        time.sleep(0.5)
    kept = docker("exec", name, "head", "-n", "1", f"/var/log/lorepin/writer/{day}.log").stdout
    assert kept.split(" ", 2)[1:] == ["writer", "line 0 of the writer, padded to about a "
                                      "hundred bytes ..............................\n"]  # fmt: skip
    deadline = time.monotonic() + 20
    while int(docker("exec", name, "df", "--output=avail", "/var/log/lorepin").stdout.split()[-1]):
        assert time.monotonic() < deadline, "the volume never filled up"
        time.sleep(0.5)
    assert "No space left on device" in docker("logs", name).stderr

    docker("exec", name, "truncate", "-s", "0", f"/var/log/lorepin/writer/{day}.log")  # room
    write(port, f"{name}-after", "echo after the clean-up")
    deadline = time.monotonic() + 20
    while (
        "after the clean-up"
        not in docker("exec", name, "cat", f"/var/log/lorepin/writer/{day}.log").stdout
    ):
        assert time.monotonic() < deadline, "nothing was written once there was room"
        time.sleep(0.5)


def test_the_collector_counts_lines_and_error_lines_per_service() -> None:
    """What the services write, counted as Prometheus scrapes it: every line, and the error
    lines (JSON levels error and worse, PostgreSQL's ERROR and FATAL) apart."""
    with running_collector("4m") as (name, port, metrics):
        lines = [
            '{"event": "request", "level": "info", "message": "GET /api/pins 200"}',
            '{"event": "unhandled_error", "level": "error", "message": "boom"}',
            '{"level":"error","logger":"http.log.error","msg":"dial tcp: refused"}',
            "2026-12-01 12:00:00 UTC [7] lorepin@lorepin/lorepin-cms ERROR:  deadlock detected",
            "2026-12-01 12:00:01 UTC [8] lorepin@lorepin/x FATAL:  password authentication failed",
            "an error in plain words is not an error line",
        ]
        # mtail finds a new day file within 250 ms and tails it from its end: what the
        # first write put in it before that is not counted (docs/logging.md).
        write(port, f"{name}-first", "echo 'the day file starts'")
        day = time.strftime("%Y-%m-%d", time.gmtime())
        deadline = time.monotonic() + 20
        while docker("exec", name, "test", "-s", f"/var/log/lorepin/writer/{day}.log",
                     check=False).returncode:  # fmt: skip
            assert time.monotonic() < deadline, "the collector filed nothing"
            time.sleep(0.2)
        time.sleep(1)
        write(port, f"{name}-writer", "; ".join(f"echo '{line}'" for line in lines))
        deadline = time.monotonic() + 30
        while True:
            counted = scraped(metrics)
            if counted.get("errors", 0) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert counted["errors"] == 4 and counted["lines"] in (6, 7), counted


def scraped(port: int) -> dict[str, float]:
    """The writer's counts on the collector's metrics port (none while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            exposed = answer.read().decode()
    except OSError:
        return {}
    found = {}
    for line in exposed.splitlines():
        for kind in ("lines", "errors"):
            prefix = f'lorepin_log_{kind}_total{{service="writer"}} '
            if line.startswith(prefix):
                found[kind] = float(line.removeprefix(prefix))
    return found
