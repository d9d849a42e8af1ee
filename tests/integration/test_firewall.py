"""`invoke security.firewall --apply` for real, inside network namespaces the test makes:
a "host" namespace with the proxy's ports, SSH and a database port listening, a
"container" namespace behind it reached through Docker-like DNAT rules, and this test's
own namespace as the outside world, from an admin address and from an outsider's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.netns

LISTEN = """
import socket, sys, threading
def serve(port):
    s = socket.create_server(("0.0.0.0", port))
    while True:
        s.accept()[0].close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"""
# Production's ports in invoke.yaml (http_port, https_port), its SSH port, and a port the
# host listens on that must stay private; the container's published port and a private one.
PUBLIC, SSH, PRIVATE = (9480, 9443), 22, 5432
ADMIN, OUTSIDER = ("10.231.0.1", "10.231.0.2"), ("192.168.231.1", "192.168.231.2")


@dataclass
class Lab:
    host: str  # the namespace the firewall guards

    def sh(self, *argv: str, ns: str | None = None, stdin: str | None = None) -> str:
        prefix = ["ip", "netns", "exec", ns] if ns else []
        done = subprocess.run([*prefix, *argv], input=stdin, capture_output=True, text=True,
                              check=False)  # fmt: skip
        assert done.returncode == 0, f"{argv}: {done.stderr}"
        return done.stdout

    def invoke(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if k not in ("SSH_CONNECTION", "CI")}
        return subprocess.run(
            ["ip", "netns", "exec", self.host, sys.executable, "-m", "invoke", *args],
            cwd=ROOT, env={**clean, **(env or {})}, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip


def reaches(source: str, target: str, port: int) -> bool:
    try:
        with socket.create_connection((target, port), timeout=1.5, source_address=(source, 0)):
            return True
    except OSError:
        return False


@pytest.fixture
def lab() -> Iterator[Lab]:
    tag = uuid.uuid4().hex[:6]
    host, box = f"lpfw-h-{tag}", f"lpfw-c-{tag}"
    out, inside, bridge, eth = f"lfo{tag}", f"lfi{tag}", f"lfb{tag}", f"lfe{tag}"
    lab = Lab(host)
    listeners: list[subprocess.Popen[str]] = []
    try:
        for ns in (host, box):
            lab.sh("ip", "netns", "add", ns)
            lab.sh("ip", "link", "set", "lo", "up", ns=ns)
        lab.sh("ip", "link", "add", out, "type", "veth", "peer", "name", inside)
        lab.sh("ip", "link", "set", inside, "netns", host)
        for me, them in (ADMIN, OUTSIDER):
            lab.sh("ip", "addr", "add", f"{me}/24", "dev", out)
            lab.sh("ip", "addr", "add", f"{them}/24", "dev", inside, ns=host)
        lab.sh("ip", "link", "set", out, "up")
        lab.sh("ip", "link", "set", inside, "up", ns=host)
        # The "container" behind the host, reached through DNAT like Docker's published ports.
        lab.sh("ip", "link", "add", bridge, "netns", host, "type", "veth", "peer", "name", eth,
               "netns", box)  # fmt: skip
        lab.sh("ip", "addr", "add", "172.31.231.1/24", "dev", bridge, ns=host)
        lab.sh("ip", "addr", "add", "172.31.231.2/24", "dev", eth, ns=box)
        lab.sh("ip", "link", "set", bridge, "up", ns=host)
        lab.sh("ip", "link", "set", eth, "up", ns=box)
        lab.sh("ip", "route", "add", "default", "via", "172.31.231.1", ns=box)
        lab.sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=host)
        docker_like = """table ip docker_like {
            chain prerouting {
                type nat hook prerouting priority dstnat;
                tcp dport 9443 dnat to 172.31.231.2:8443
                tcp dport 5433 dnat to 172.31.231.2:5432
            }
        }"""
        lab.sh("nft", "-f", "-", ns=host, stdin=docker_like)
        for ns, ports in ((host, (*PUBLIC[:1], SSH, PRIVATE)), (box, (8443, 5432))):
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", LISTEN, *map(str, ports)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            listeners.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        yield lab
    finally:
        for proc in listeners:
            proc.kill()
            proc.wait(10)
        for ns in (host, box):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", out], capture_output=True, check=False)
    leftovers = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert out not in leftovers and f"lpfw-h-{tag}" not in lab.sh("ip", "netns", "list")


def probes() -> dict[str, bool]:
    target = OUTSIDER[1]
    return {
        "ssh from an admin network": reaches(ADMIN[0], ADMIN[1], SSH),
        "ssh from outside": reaches(OUTSIDER[0], target, SSH),
        "the proxy's http port": reaches(OUTSIDER[0], target, PUBLIC[0]),
        "a private port of the host": reaches(OUTSIDER[0], target, PRIVATE),
        "a container published on a public port": reaches(OUTSIDER[0], target, 9443),
        "a container published on another port": reaches(OUTSIDER[0], target, 5433),
    }


def test_the_applied_ruleset_lets_in_the_public_and_the_admins_and_drops_the_rest(
    lab: Lab,
) -> None:
    assert all(probes().values()), probes()  # before: everything answers

    # Applied by someone connected from outside the admin networks: refused, nothing applied.
    session = {"SSH_CONNECTION": f"{OUTSIDER[0]} 50022 {OUTSIDER[1]} 22"}
    locked_out = lab.invoke("security.firewall", "--env", "production", "--apply", "--yes",
                            env=session)  # fmt: skip
    assert locked_out.returncode == 6, locked_out.stderr
    assert "would lock you out" in locked_out.stderr and locked_out.stderr.count("\n") == 1
    assert lab.sh("nft", "list", "tables", ns=lab.host).split() == ["table", "ip", "docker_like"]

    applied = lab.invoke("security.firewall", "--env", "production", "--apply", "--yes")
    assert applied.returncode == 0, applied.stderr
    assert "applied: table inet lorepin guards this host for 'production'" in applied.stderr
    assert probes() == {
        "ssh from an admin network": True,
        "ssh from outside": False,
        "the proxy's http port": True,
        "a private port of the host": False,
        "a container published on a public port": True,
        "a container published on another port": False,  # DOCKER-USER's job, done
    }
    # Applying again replaces it in one go: the same rules, once.
    again = lab.invoke("security.firewall", "--env", "production", "--apply", "--yes")
    assert again.returncode == 0, again.stderr
    listed = lab.sh("nft", "list", "table", "inet", "lorepin", ns=lab.host)
    assert listed.count("chain input") == 1 and listed.count("tcp dport 22") == 1
