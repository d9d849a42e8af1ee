"""The two-node swarm lab on this machine (`invoke swarm.lab.*`): namespaces, engines,
the swarm and the registry, made and removed. The plan is plans/swarm.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from lorepin_tasks.errors import ConfigError, LorePinError, Refused, last_line
from lorepin_tasks.plans import swarm as plan
from lorepin_tasks.runtime.executor import Executor, Result

START_TIMEOUT = 60  # seconds an engine has to answer, and the nodes to be Ready


def _alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _ours(lab: plan.Lab) -> list[int]:
    """Processes of this lab's engines (dockerd, containerd and its shims), by their paths."""
    marks = (str(lab.root) + "/", str(lab.run_dir("")).rstrip("/") + "/")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(m in cmdline for m in marks) and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found


def _netns() -> set[str]:
    try:
        return set(os.listdir("/var/run/netns"))
    except OSError:
        return set()


def owner(lab: plan.Lab) -> str | None:
    """The checkout that made the lab, as its lab.json says (None: no record; a record
    that cannot be read names nobody's checkout, so no lab task takes it for ours)."""
    record = lab.root / "lab.json"
    if not record.exists():
        return None
    try:
        return str(json.loads(record.read_text())["checkout"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"unknown ({record} cannot be read: remove the lab by hand if it is yours)"


def require_mine(lab: plan.Lab) -> None:
    """Refuse a lab another checkout made (two checkouts' digests can meet: the record
    decides, never the name)."""
    made_by = owner(lab)
    if made_by is not None and made_by != lab.checkout:
        raise Refused(
            f"lab {lab.id} ('{lab.name}') belongs to the checkout {made_by}, not this one: "
            "name your lab otherwise"
        )


def ask(run: Executor, lab: plan.Lab, node: str, *args: str) -> Result:
    """A read-only question to a node's engine (it may not answer: never raises)."""
    return run.run([*plan.docker(lab, node), *args], capture=True, check=False,
                   mutates=False, quiet=True, timeout=10)  # fmt: skip


def state(run: Executor, lab: plan.Lab) -> dict[str, Any]:
    """What of the lab exists: namespaces, engines (and whether they answer), the swarm's
    nodes as the manager sees them, and the registry."""
    names = _netns()
    engines = {}
    for node in plan.NODES:
        pid = _alive(lab.pidfile(node))
        answer = (
            ask(run, lab, node, "info", "--format", "{{.Swarm.LocalNodeState}}") if pid else None
        )
        engines[node] = {
            "pid": pid,
            "swarm": answer.stdout.strip() if answer and answer.ok else None,
        }
    nodes = []
    if engines[plan.MANAGER]["swarm"] == "active":
        columns = "{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}"
        listed = ask(run, lab, plan.MANAGER, "node", "ls", "--format", columns)
        nodes = [line.split("\t") for line in listed.stdout.splitlines() if line]
    registry = run.run(
        [
            "docker",
            "inspect",
            "-f",
            '{{.State.Status}} {{index .Config.Labels "' + plan.LABEL + '"}}',
            lab.registry_container,
        ],
        capture=True,
        check=False,
        mutates=False,
        quiet=True,
    )
    status, _, owner = registry.stdout.strip().partition(" ")
    confs = [lab.root / f"keepalived-{n}.conf" for n in plan.NODES]
    return {
        "name": lab.name,
        "id": lab.id,
        "subnet": str(lab.subnet),
        "namespaces": sorted(n for n in names if n.startswith(lab.prefix + "-")),
        "engines": engines,
        "nodes": nodes,
        "registry": {"address": lab.registry, "state": status or None, "owner": owner or None},
        "vip": {"address": lab.address("vip"), "node": vip_holder(run, lab) if names else None},
        # `up` went as far as the floating address (its last step), and the port its
        # check probes: a lab without them is what a killed `up` left
        "made": all(c.exists() for c in confs),
        "port": plan.probed_port(lab, plan.MANAGER, confs[0].read_text())
        if confs[0].exists()
        else None,
        "keepalived": {n: bool(_alive(lab.run_dir(n) / "keepalived.pid")) for n in plan.NODES},
        "managers": {n: lab.socket(n) for n in plan.NODES},
    }


def is_up(found: dict[str, Any]) -> bool:
    ready = [n for n in found["nodes"] if len(n) > 1 and n[1] == "Ready"]
    return (
        found["made"]
        and all(found["keepalived"].values())
        and len(ready) == len(plan.NODES)
        and all(e["swarm"] == "active" for e in found["engines"].values())
        and found["registry"]["state"] == "running"
    )


def is_empty(found: dict[str, Any], lab: plan.Lab) -> bool:
    return (
        not found["namespaces"]
        and not any(e["pid"] for e in found["engines"].values())
        and found["registry"]["state"] is None
        and not lab.root.exists()
        and not _ours(lab)
    )


def up(run: Executor, lab: plan.Lab, registry_image: str, port: int) -> None:
    """Make the lab: network, two engines, the registry, the swarm (n1 manages, n2 works),
    and keepalived on each node for the floating address (its check probes `port`)."""
    run.say(f"==> lab '{lab.name}': network {lab.subnet} (namespaces {lab.prefix}-*)")
    for argv in plan.network_up(lab):
        run.run(argv, capture=True)
    if not run.dry_run:
        lab.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (lab.root / "lab.json.new").write_text(
            json.dumps(
                {
                    "name": lab.name,
                    "id": lab.id,
                    "checkout": lab.checkout,
                    "subnet": str(lab.subnet),
                },
                indent=2,
            )
        )
        (lab.root / "lab.json.new").replace(lab.root / "lab.json")  # whole, or not at all
    for node in plan.NODES:
        run.say(f"==> lab '{lab.name}': starting the engine of {node} ({lab.address(node)})")
        _daemon(run, plan.dockerd(lab, node), lab.log(node))
    for node in plan.NODES:
        _wait_engine(run, lab, node)
    run.say(f"==> lab '{lab.name}': registry on {lab.registry}")
    run.run(plan.registry_run(lab, registry_image), capture=True)
    run.say(f"==> lab '{lab.name}': swarm (manager {plan.MANAGER})")
    run.run(plan.swarm_init(lab), capture=True)
    token = run.run(
        [*plan.docker(lab, plan.MANAGER), "swarm", "join-token", "-q", "worker"], capture=True
    ).stdout.strip()
    run.add_secret(token)
    for node in plan.NODES:
        if node != plan.MANAGER:
            run.run(plan.swarm_join(lab, node, token or "TOKEN"), capture=True)
    for node in plan.NODES:
        run.run(plan.node_label(lab, f"{lab.name}-{node}", node), capture=True)
    run.say(f"==> lab '{lab.name}': floating address {lab.address('vip')} (keepalived, VRRP; "
            f"held by a node whose proxy answers on :{port})")  # fmt: skip
    for node in plan.NODES:
        conf = lab.root / f"keepalived-{node}.conf"
        if not run.dry_run:
            conf.write_text(plan.keepalived_conf(lab, node, port))
        _daemon(run, plan.keepalived(lab, node), lab.root / f"keepalived-{node}.log")
    if run.dry_run:
        return
    deadline = time.monotonic() + 10
    while not all(_alive(lab.run_dir(n) / "keepalived.pid") for n in plan.NODES):
        if time.monotonic() > deadline:
            log = lab.root / "keepalived-n1.log"
            tail = log.read_text(errors="replace") if log.exists() else ""
            raise LorePinError(f"keepalived did not start: {last_line(tail) or 'no log'} ({log})")
        time.sleep(0.2)
    deadline = time.monotonic() + START_TIMEOUT
    while not is_up(found := state(run, lab)):
        if time.monotonic() > deadline:
            raise LorePinError(
                f"lab '{lab.name}' did not come up: nodes {found['nodes']}, registry "
                f"{found['registry']['state']} (`invoke swarm.lab.down` removes what is left)"
            )
        time.sleep(1)


def _daemon(run: Executor, argv: list[str], log: Path) -> None:
    """Start a daemon of the lab in the background, its output to `log`: it outlives the
    task (`swarm.lab.down` stops it, by its pid file or its paths)."""
    if run.dry_run:
        run.say(f"+ {' '.join(argv)} >{log} 2>&1 &")
        return
    for arg in argv:
        if arg.startswith("/run/lorepin-lab/"):
            Path(arg).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(log, "ab") as out:
        subprocess.Popen(
            argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )


def vip_holder(run: Executor, lab: plan.Lab) -> str | None:
    """The node whose link holds the floating address, if one does."""
    for node in plan.NODES:
        found = run.run(
            ["ip", "netns", "exec", lab.netns(node), "ip", "-o", "-4", "addr", "show", "eth0"],
            capture=True, check=False, mutates=False, quiet=True,
        )  # fmt: skip
        if f" {lab.address('vip')}/" in found.stdout:
            return node
    return None


def _wait_engine(run: Executor, lab: plan.Lab, node: str) -> None:
    if run.dry_run:
        return
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        answer = ask(run, lab, node, "version", "--format", "{{.Server.Version}}")
        if answer.ok:
            return
        if time.monotonic() > deadline or (not _alive(lab.pidfile(node)) and _started_long(lab)):
            tail = lab.log(node).read_text(errors="replace") if lab.log(node).exists() else ""
            raise LorePinError(
                f"the engine of {node} did not start: {last_line(tail) or 'no log'} "
                f"({lab.log(node)}; `invoke swarm.lab.down` removes what is left)"
            )
        time.sleep(0.5)


def _started_long(lab: plan.Lab) -> bool:
    """Ten seconds after the lab's record was written: a missing pid is a dead engine."""
    made = lab.root / "lab.json"
    return made.exists() and time.time() - made.stat().st_mtime > 10


def down(run: Executor, lab: plan.Lab) -> None:
    """Remove everything of the lab, in reverse, whatever state a kill left it in."""
    for node in reversed(plan.NODES):
        if _alive(lab.pidfile(node)):
            run.run(
                [*plan.docker(lab, node), "swarm", "leave", "--force"],
                capture=True,
                check=False,
                timeout=60,
            )
    for node in reversed(plan.NODES):
        pid = _alive(lab.pidfile(node))
        if pid:
            run.say(f"==> lab '{lab.name}': stopping the engine of {node} (pid {pid})")
            if not run.dry_run:
                _stop(pid, grace=30)
    if not run.dry_run:
        for pid in _ours(lab):  # a killed engine's containerd and shims
            _stop(pid, grace=5)
        _unmount(lab)
    names = _netns()
    for argv in plan.network_down(lab):
        if argv[-1] in names or run.dry_run:
            run.run(argv, capture=True, check=False)
    if not run.dry_run:  # the host's link goes a moment after the switch's namespace
        deadline = time.monotonic() + 10
        while lab.host_link in _links() and time.monotonic() < deadline:
            time.sleep(0.2)
    run.run(["docker", "rm", "-f", "-v", lab.registry_container], capture=True, check=False)
    run.run(["rm", "-rf", str(lab.root), str(lab.run_dir("")).rstrip("/")], capture=True)
    if not run.dry_run:
        for group in Path("/sys/fs/cgroup").glob(f"*/lorepin-lab-{lab.id}-*"):
            for sub in sorted(group.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    sub.rmdir()
            group.rmdir()


def _links() -> set[str]:
    listed = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False)
    return {line.split(":")[1].strip().partition("@")[0] for line in listed.stdout.splitlines()
            if line.count(":") >= 2}  # fmt: skip


def _stop(pid: int, *, grace: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return


def _unmount(lab: plan.Lab) -> None:
    marks = (str(lab.root) + "/", str(lab.run_dir("")).rstrip("/") + "/")
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(marks)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def require_root() -> None:
    if os.geteuid() != 0:
        raise ConfigError("the swarm lab makes network namespaces and engines: run it as root")
    missing = [t for t in ("ip", "nsenter", "unshare", "dockerd", "keepalived")
               if shutil.which(t) is None]  # fmt: skip
    if missing:
        raise ConfigError(
            f"the swarm lab needs {', '.join(missing)}: scripts/bootstrap.sh installs them"
        )


def registry_present(run: Executor, image: str) -> bool:
    found = run.run(
        ["docker", "image", "inspect", image], capture=True, check=False, mutates=False, quiet=True
    )
    return found.ok
