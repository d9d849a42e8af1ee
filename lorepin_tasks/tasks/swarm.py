"""The swarm lab: a real two-node Docker Swarm on this machine, for developers and tests
(`invoke swarm.lab.up`, `swarm.lab.status`, `swarm.lab.down`); docs/production-swarm.md.

A lab belongs to the checkout that made it (its id is the checkout's and the name's
digest): another checkout's lab of the same name is another lab, never touched.
"""

from __future__ import annotations

import json
from contextlib import ExitStack

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, NothingToDo, Refused
from lorepin_tasks.plans import swarm as plan
from lorepin_tasks.runtime import swarm_lab
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.settings import LAB_NAME, Settings, whole_number
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    JSON_HELP,
    YES_HELP,
    executor,
    load_settings,
    locked,
    open_env,
    require_base_image,
    task,
)

NAME_HELP = "the lab's name (default: lab; an environment's `swarm.lab` names the one it uses)"


def _lab(settings: Settings, name: str) -> plan.Lab:
    if not LAB_NAME.match(name):
        raise ConfigError(f"invalid lab name {name!r}: lowercase letters and digits, max 8")
    return plan.lab(name, settings.checkout.id, settings.checkout.where)


@task(
    name="up",
    help={
        "name": NAME_HELP,
        "port": "the port the floating address's check probes on each node: the http_port "
        "of the environment on this lab (default 8580)",
        "dry_run": DRY_HELP,
    },
)
def lab_up(c: Context, name: str = "lab", port: str = "8580", dry_run: bool = False) -> None:
    """Make a two-node swarm on this machine: two engines in network namespaces, one
    swarm (n1 manages and holds the database's label), and the registry both pull from."""
    settings = load_settings(c)
    lab = _lab(settings, name)
    checked = whole_number(port, "--port", low=1, high=65535)
    run = executor(c, dry_run)
    swarm_lab.require_root()
    swarm_lab.require_mine(lab)
    found = swarm_lab.state(run, lab)
    if swarm_lab.is_up(found) and found["port"] != checked:
        raise ConfigError(
            f"lab '{name}' is up already, its floating address following port "
            f"{found['port']}, not {checked}: `invoke swarm.lab.down --name {name} --yes`, "
            f"then `invoke swarm.lab.up --name {name} --port {checked}` (its stacks go)"
        )
    if swarm_lab.is_up(found):
        raise NothingToDo(f"lab '{name}' is up already (`invoke swarm.lab.status --name {name}`)")
    if found["made"]:  # made whole once: what is down is for a person to look at, not to wipe
        raise Refused(
            f"lab '{name}' is there but not up (an engine or keepalived stopped, or a node "
            f"not ready): `invoke swarm.lab.status --name {name}` shows what; `invoke "
            f"swarm.lab.down --name {name} --yes`, then `up`, remakes it (its stacks and "
            "volumes go)"
        )
    if not swarm_lab.is_empty(found, lab):
        run.say(f"==> lab '{name}': removing what a previous run left")
        swarm_lab.down(run, lab)
    addresses = run.run(["ip", "-o", "-4", "addr"], capture=True, mutates=False, quiet=True)
    plan.free_subnet(lab, addresses.stdout)
    require_base_image(settings)
    image = f"{settings.image_prefix}/registry:lab"
    if not swarm_lab.registry_present(run, image):
        run.say(f"==> building {image} (Debian's docker-registry)")
        run.run(
            [
                "docker",
                "build",
                "-q",
                "-t",
                image,
                "--build-arg",
                f"BASE_IMAGE={settings.base_image}",
                str(settings.root / "compose/images/registry"),
            ],
            capture=True,
        )
    try:
        swarm_lab.up(run, lab, image, checked)
    except BaseException:
        if not run.dry_run:
            run.say(f"==> lab '{name}' did not come up: removing it")
            swarm_lab.down(run, lab)
        raise
    if not run.dry_run:
        print(
            f"lab '{name}' is up: nodes {', '.join(lab.address(n) for n in plan.NODES)}, "
            f"manager {lab.socket(plan.MANAGER)}, registry {lab.registry}"
        )


@task(name="down", help={"name": NAME_HELP, "yes": YES_HELP, "dry_run": DRY_HELP})
def lab_down(c: Context, name: str = "lab", yes: bool = False, dry_run: bool = False) -> None:
    """Remove the lab: its stacks and volumes, the swarm, both engines, the namespaces and
    the registry. Asks first (its environments' data goes with it)."""
    settings = load_settings(c)
    lab = _lab(settings, name)
    run = executor(c, dry_run)
    swarm_lab.require_root()
    swarm_lab.require_mine(lab)
    found = swarm_lab.state(run, lab)
    if swarm_lab.is_empty(found, lab):
        raise NothingToDo(f"there is no lab '{name}' of this checkout")
    if not run.dry_run:
        confirm(
            f"Remove lab '{name}' with every stack and volume on it (environments on it "
            "lose their data)?",
            yes=yes,
        )
    with ExitStack() as held:  # no deploy, rollback or scale of its environments meanwhile
        for env in sorted(settings.environments):
            policy = settings.environments[env].swarm
            if policy is not None and policy.lab == name:
                ctx = open_env(c, env, dry_run=dry_run, settings=settings, swarm=True)
                held.enter_context(locked(ctx, "swarm.lab.down"))
        swarm_lab.down(run, lab)
    if not run.dry_run:
        left = swarm_lab.state(run, lab)
        if not swarm_lab.is_empty(left, lab):
            raise ConfigError(f"lab '{name}' was not wholly removed: {json.dumps(left)}")
        print(f"lab '{name}' removed")


@task(name="status", help={"name": NAME_HELP, "json_": JSON_HELP})
def lab_status(c: Context, name: str = "lab", json_: bool = False) -> None:
    """The lab's nodes, engines, registry and addresses."""
    settings = load_settings(c)
    lab = _lab(settings, name)
    run = executor(c, False)
    swarm_lab.require_mine(lab)
    found = swarm_lab.state(run, lab)
    found["up"] = swarm_lab.is_up(found)
    if json_:
        print(json.dumps(found, indent=2))
        return
    if swarm_lab.is_empty(found, lab):
        print(f"no lab '{name}' (`invoke swarm.lab.up --name {name}` makes it)")
        return
    print(f"lab '{name}' ({lab.id}, {lab.subnet}): {'up' if found['up'] else 'NOT up'}")
    for node in plan.NODES:
        engine = found["engines"][node]
        print(
            f"  {node}  {lab.address(node):<15} engine pid {engine['pid'] or '-'}  "
            f"swarm {engine['swarm'] or '-'}  ({lab.socket(node)})"
        )
    for hostname, status, availability, manager in ([*n, "", "", ""][:4] for n in found["nodes"]):
        print(f"  node {hostname}: {status}, {availability}{f', {manager}' if manager else ''}")
    print(f"  registry {lab.registry}: {found['registry']['state'] or 'absent'}")
    vip = found["vip"]
    print(f"  floating address {vip['address']} (held while a node's proxy answers on "
          f":{found['port'] or '?'}): held by {vip['node'] or 'no node'}")  # fmt: skip


lab_ns = Collection("lab")
lab_ns.add_task(lab_up)
lab_ns.add_task(lab_down)
lab_ns.add_task(lab_status)
ns = Collection("swarm")
ns.add_collection(lab_ns)
