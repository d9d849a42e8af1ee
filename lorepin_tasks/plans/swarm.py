"""Docker Swarm as data: the two-node lab of `invoke swarm.lab.*`, and the stack of a
server environment with `backend: swarm` (docs/production-swarm.md). Pure.

The lab is two Docker engines, each in a network namespace of its own, joined to one
swarm; a third namespace holds the switch (a Linux bridge) they and this host plug into.
The host's own engine is left as it is: it is not a swarm node, its firewall is not
touched (the bridge is outside the host's namespace, so the host's bridge netfilter never
sees the lab's traffic), and it runs only the registry both nodes pull from.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorepin_tasks.errors import ConfigError

if TYPE_CHECKING:
    from lorepin_tasks.settings import DbClient, SwarmPolicy

NODES = ("n1", "n2")
MANAGER, DB_NODE = "n1", "n1"  # the manager holds the database's volume (a node label)
REGISTRY_PORT = 5000  # inside the registry container
LABEL = "dev.lorepin.lab"  # on the registry container: the lab's id
SUBNETS = ipaddress.ip_network("10.231.0.0/16")  # each lab takes a /24 of it


@dataclass(frozen=True, kw_only=True)
class Lab:
    """One lab: its names, addresses and paths, all derived from the checkout and name."""

    name: str
    id: str  # 10 hex digits of the checkout's and the name's digest (lab.json says whose)
    checkout: str
    subnet: ipaddress.IPv4Network
    registry_port: int

    @property
    def prefix(self) -> str:  # namespaces and links: Linux caps interface names at 15
        return f"l{self.id}"

    def netns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def host_link(self) -> str:
        return f"{self.prefix}-h"

    def address(self, node: str) -> str:
        """n1, n2: the nodes; host: this host's side of the switch; vip: the floating one."""
        last = {"host": 1, "vip": 10, **{n: 11 + i for i, n in enumerate(NODES)}}[node]
        return str(self.subnet.network_address + last)

    @property
    def root(self) -> Path:  # the engines' data (images, volumes, swarm state)
        return Path("/var/lib/lorepin-lab") / self.id

    def run_dir(self, node: str) -> Path:  # short: containerd's sockets live under it
        return Path("/run/lorepin-lab") / self.id / node

    def socket(self, node: str) -> str:
        return f"unix://{self.run_dir(node)}/docker.sock"

    def pidfile(self, node: str) -> Path:
        return self.run_dir(node) / "docker.pid"

    def log(self, node: str) -> Path:
        return self.root / f"{node}.log"

    @property
    def registry(self) -> str:
        """Where the nodes pull from (the host's side of the lab's switch)."""
        return f"{self.address('host')}:{self.registry_port}"

    @property
    def registry_local(self) -> str:
        """Where this host pushes to (the loopback: no insecure-registry setting needed)."""
        return f"127.0.0.1:{self.registry_port}"

    @property
    def registry_container(self) -> str:
        return f"{self.prefix}-registry"


def lab(name: str, checkout_id: str, checkout: str) -> Lab:
    digest = hashlib.sha256(f"{checkout_id}/{name}".encode()).hexdigest()
    number = int(digest[:10], 16)
    third = number % 250 + 1
    subnet = ipaddress.ip_network(f"{SUBNETS.network_address + third * 256}/24")
    return Lab(
        name=name,
        id=digest[:10],
        checkout=checkout,
        subnet=subnet,  # type: ignore[arg-type]
        registry_port=15000 + number % 1000,
    )


def docker(lab: Lab, node: str) -> list[str]:
    return ["docker", "-H", lab.socket(node)]


def network_up(lab: Lab) -> list[list[str]]:
    """The switch, the host's link to it and each node's namespace with its link."""
    sw = ["ip", "netns", "exec", lab.switch]
    argv = [
        ["ip", "netns", "add", lab.switch],
        [*sw, "ip", "link", "set", "lo", "up"],
        [*sw, "ip", "link", "add", "br0", "type", "bridge"],
        [*sw, "ip", "link", "set", "br0", "up"],
        ["ip", "link", "add", lab.host_link, "type", "veth", "peer", "name", "host",
         "netns", lab.switch],
        ["ip", "addr", "add", f"{lab.address('host')}/24", "dev", lab.host_link],
        ["ip", "link", "set", lab.host_link, "up"],
        [*sw, "ip", "link", "set", "host", "master", "br0", "up"],
    ]  # fmt: skip
    for node in NODES:
        ns = ["ip", "netns", "exec", lab.netns(node)]
        link = f"{lab.prefix}-{node}"
        argv += [
            ["ip", "netns", "add", lab.netns(node)],
            ["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0",
             "netns", lab.netns(node)],
            ["ip", "link", "set", link, "netns", lab.switch],
            [*sw, "ip", "link", "set", link, "master", "br0", "up"],
            [*ns, "ip", "link", "set", "lo", "up"],
            [*ns, "ip", "addr", "add", f"{lab.address(node)}/24", "dev", "eth0"],
            [*ns, "ip", "link", "set", "eth0", "up"],
            [*ns, "ip", "route", "add", "default", "via", lab.address("host")],
        ]  # fmt: skip
    return argv


def dockerd(lab: Lab, node: str) -> list[str]:
    """A node's engine: in its namespace (nsenter: `ip netns exec` remounts /sys and the
    engine then finds no devices cgroup), with its own hostname, paths and bridge."""
    index = NODES.index(node) + 1
    return [
        "nsenter", f"--net=/var/run/netns/{lab.netns(node)}",
        "unshare", "--uts", "--",
        "sh", "-c", 'hostname "$0" && exec "$@"', f"{lab.name}-{node}",
        "dockerd",
        "--data-root", str(lab.root / node),
        "--exec-root", str(lab.run_dir(node) / "exec"),
        "-H", lab.socket(node),
        "--pidfile", str(lab.pidfile(node)),
        "--cgroup-parent", f"lorepin-lab-{lab.id}-{node}",
        "--bip", f"172.29.{index}.1/24",
        "--default-address-pool", f"base=172.30.{index * 16}.0/20,size=24",
        "--insecure-registry", lab.registry,
        "--log-level", "warn",
    ]  # fmt: skip


def registry_run(lab: Lab, image: str) -> list[str]:
    return [
        "docker", "run", "-d", "--name", lab.registry_container,
        "--label", f"{LABEL}={lab.id}", "--restart", "unless-stopped",
        "-p", f"127.0.0.1:{lab.registry_port}:{REGISTRY_PORT}",
        "-p", f"{lab.address('host')}:{lab.registry_port}:{REGISTRY_PORT}",
        image,
    ]  # fmt: skip


def swarm_init(lab: Lab) -> list[str]:
    address = lab.address(MANAGER)
    return [
        *docker(lab, MANAGER), "swarm", "init",
        "--advertise-addr", address, "--listen-addr", f"{address}:2377",
        "--default-addr-pool", "10.232.0.0/16",
    ]  # fmt: skip


def swarm_join(lab: Lab, node: str, token: str) -> list[str]:
    return [
        *docker(lab, node), "swarm", "join", "--token", token,
        "--advertise-addr", lab.address(node), f"{lab.address(MANAGER)}:2377",
    ]  # fmt: skip


def node_label(lab: Lab, hostname: str, node: str) -> list[str]:
    labels = ["--label-add", f"lorepin.node={node}"]
    if node == DB_NODE:
        labels += ["--label-add", "lorepin.db=true"]
    return [*docker(lab, MANAGER), "node", "update", *labels, hostname]


def network_down(lab: Lab) -> list[list[str]]:
    """Deleting a namespace deletes the links in it (and their peers)."""
    return [["ip", "netns", "delete", ns] for ns in (*map(lab.netns, NODES), lab.switch)]


def free_subnet(lab: Lab, addresses: str) -> None:
    """Refuse a lab whose /24 another interface of this host uses (`ip -o addr` output)."""
    for line in addresses.splitlines():
        for word in line.split():
            if "/" not in word:
                continue
            try:
                network = ipaddress.ip_interface(word).network
            except ValueError:
                continue
            if network.version == 4 and network.overlaps(lab.subnet):
                raise ConfigError(
                    f"lab '{lab.name}' would use {lab.subnet}, which this host already "
                    f"uses ({line.split()[1]}): remove it, or name the lab otherwise"
                )


# --- the stack of a server environment on Swarm -------------------------------------

STACK_FILE = "compose/swarm.yaml"
# Beside the CMS: a deploy checks they run (`docker stack deploy` does not wait for them).
SUPPORT = ("pgbouncer", "prometheus", "pgbouncer-exporter", "blackbox", "autoscaler")
# The stack's monitoring and autoscaler run the checkout's monitoring image (as
# `monitor.up` does), built and pushed with each deploy (Docker's cache makes it quick).
MONITORING_IMAGE = "monitoring"
MONITORING_DIR = "monitoring"
METRICS_PORT = 9464  # the CMS's metrics, every worker's added up (lorepin_cms.serve)
PROMETHEUS_PORT = 9090
BLACKBOX_PORT = 9115
PGBOUNCER_EXPORTER_PORT = 9127
IMAGES = {"db": "postgres", "cms": "cms", "proxy": "proxy"}  # service: release image
SECRETS = ("db_password", "cms_db_password")
CMS_PORT = 8000
PROXY_PORT = 8080  # inside the proxy's container; published on each node's address
# What `docker service inspect` says of an update (UpdateStatus.State): done, or not.
UPDATE_DONE = {"completed": "succeeded", "rollback_completed": "rolled-back"}
UPDATE_STUCK = ("paused", "rollback_paused")


NAMES_KEY = ".swarm-names.key"  # in the secrets_dir: the key of the secrets' names


def versioned(stack: str, what: str, content: bytes, key: bytes = b"") -> str:
    """A secret's or config's name in Swarm: they are immutable, so a new content is a
    new name, and a deploy that changes one rotates it. A secret's is keyed (HMAC with
    the environment's own random key), so its name never lets its value be guessed."""
    digest = hmac.new(key, content, hashlib.sha256) if key else hashlib.sha256(content)
    return f"{stack}_{what}_{digest.hexdigest()[:12]}"


def proxy_config() -> dict[str, object]:
    """Caddy's config on every node: the CMS replicas are what `tasks.cms` resolves to,
    re-read each second; a refused or reset connection to a replica that went away is
    retried on another one (GET; other methods when the dial failed), so replicas come
    and go without a failed request."""
    upstream = {
        "handler": "reverse_proxy",
        "dynamic_upstreams": {
            "source": "a", "name": "tasks.cms", "port": str(CMS_PORT), "refresh": "1s",
        },
        "load_balancing": {
            "selection_policy": {"policy": "round_robin"},
            "try_duration": "10s",
            "try_interval": "100ms",
        },
        "health_checks": {"passive": {"fail_duration": "5s", "max_fails": 1}},
        # A replica on a lost node does not refuse: its dial times out. Soon, then another.
        "transport": {"protocol": "http", "dial_timeout": "1s"},
    }  # fmt: skip
    return {
        "admin": {"listen": "127.0.0.1:2019"},
        "apps": {
            "http": {
                "servers": {
                    "cms": {
                        "listen": [f":{PROXY_PORT}"],
                        "automatic_https": {"disable": True},
                        "routes": [{"handle": [upstream]}],
                    }
                }
            }
        },
    }


# The CMS's connections: each worker's own pool (invoke.yaml's `database:`, as for
# Compose), then pgbouncer (transaction mode) on the database's node, which sets the
# `database:` timeouts on its server connections (a client's startup options never reach
# them).
POOLER_PORT = 6432
CMS_WORKERS = 2  # uvicorn's worker processes per CMS replica: WEB_CONCURRENCY
CMS_EXTRA = 1  # each worker's activity recorder's own connection (lorepin_cms.activity)
SERVER_MAX = 60  # PostgreSQL's 100, less the toolkit's, the migrator's and the monitoring's


def pool_sizes(max_replicas: int, pool_size: int) -> dict[str, int]:
    """pgbouncer's sizes from the most replicas the environment may scale to, plus the one
    a start-first update adds, so neither a scale nor a deploy outgrows them: every
    connection of every worker's pools is a client, and since a client holds a server
    connection only during a transaction, half as many server connections serve them
    (at least 4, at most SERVER_MAX), with a reserve for bursts. The 10 beyond are the
    exporter's and `db.report`'s."""
    clients = (max_replicas + 1) * CMS_WORKERS * (pool_size + CMS_EXTRA)
    return {
        "max_client_conn": clients + 10,
        "default_pool_size": min(SERVER_MAX, max(4, -(-clients // 2))),
        "reserve_pool_size": 2,
    }


def pgbouncer_ini(max_replicas: int, client: DbClient, host: str = "db",
                  database: str = "lorepin", user: str = "lorepin_cms") -> str:  # fmt: skip
    """pgbouncer's configuration: one database, the CMS's role, transaction pooling. The
    auth file is made from the role's secret when the task starts (lorepin-pgbouncer)."""
    sizes = pool_sizes(max_replicas, client.pool_size)
    settings = (
        f"SET statement_timeout = {client.statement_timeout_ms}; "
        f"SET idle_in_transaction_session_timeout = {client.idle_in_transaction_timeout_ms}"
    )
    return f"""[databases]
{database} = host={host} port=5432 dbname={database} connect_query='{settings}'

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = {POOLER_PORT}
unix_socket_dir =
pidfile =
auth_type = scram-sha-256
auth_file = /tmp/pgbouncer/userlist.txt
; the CMS's role may read the pool's figures (SHOW POOLS): db.report, the exporter
stats_users = {user}
pool_mode = transaction
max_client_conn = {sizes["max_client_conn"]}
default_pool_size = {sizes["default_pool_size"]}
reserve_pool_size = {sizes["reserve_pool_size"]}
reserve_pool_timeout = 1
; a client waiting this long for a server connection gets an error (the CMS: a 503)
query_wait_timeout = 5
server_connect_timeout = 3
server_idle_timeout = 60
server_lifetime = 3600
; the database's task gets a new address when it is rescheduled: resolve it again soon
dns_max_ttl = 1
log_connections = 0
log_disconnections = 0
"""


def show_pools(docker: list[str], container: str) -> list[str]:
    """pgbouncer's `SHOW POOLS`, asked inside its task as the CMS's role (a stats user):
    the password is read there from the task's secret, never passed in."""
    script = (
        'PGPASSWORD="$(cat "$LOREPIN_DB_PASSWORD_FILE")" exec psql -X -q -A -P footer=off '
        f'-F "$(printf \'\\t\')" -h 127.0.0.1 -p {POOLER_PORT} -U "$LOREPIN_DB_USER" '
        '-c "SHOW POOLS" pgbouncer'
    )
    return [*docker, "exec", container, "sh", "-c", script]


def pool_report(rows: list[list[str]]) -> list[dict[str, object]]:
    """pgbouncer's `SHOW POOLS` (psql's tab-separated rows with a header) for db.report:
    per database and user, clients active and waiting, server connections in use and
    idle, and the longest wait."""
    if not rows:
        return []
    head, body = rows[0], rows[1:]
    keep = ("database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "maxwait")
    pools: list[dict[str, object]] = []
    for row in body:
        found = dict(zip(head, row, strict=False))
        if found.get("database") == "pgbouncer" or not all(k in found for k in keep):
            continue
        pools.append({k: found[k] if k in ("database", "user") else int(found[k]) for k in keep})
    return pools


def prometheus_config(env: str, lab: Lab, http_port: int) -> dict[str, object]:
    """The stack's Prometheus: every CMS replica's metrics (found through `tasks.cms`, as
    the proxy finds them), and both paths users take, probed from inside the swarm: each
    node's proxy and the floating address (blackbox, /healthz)."""
    paths = [(n, lab.address(n)) for n in NODES] + [("vip", lab.address("vip"))]
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "15s",
                   "external_labels": {"env": env}},
        "scrape_configs": [
            {"job_name": "prometheus",
             "static_configs": [{"targets": [f"127.0.0.1:{PROMETHEUS_PORT}"]}]},
            {"job_name": "cms",
             "dns_sd_configs": [{"names": ["tasks.cms"], "type": "A", "port": METRICS_PORT,
                                 "refresh_interval": "5s"}]},
            {"job_name": "pgbouncer",
             "static_configs": [{"targets": [f"pgbouncer-exporter:{PGBOUNCER_EXPORTER_PORT}"]}]},
            {"job_name": "proxies", "metrics_path": "/probe",
             "params": {"module": ["http_ready"]},
             "static_configs": [{"targets": [f"http://{address}:{http_port}/healthz"],
                                 "labels": {"path": name}} for name, address in paths],
             "relabel_configs": [
                 {"source_labels": ["__address__"], "target_label": "__param_target"},
                 {"source_labels": ["__param_target"], "target_label": "instance"},
                 {"target_label": "__address__", "replacement": f"blackbox:{BLACKBOX_PORT}"},
             ]},
        ],
    }  # fmt: skip


def autoscaler_variables(stack: str, policy: SwarmPolicy, socket: str) -> dict[str, str]:
    """The autoscaler's settings in the stack (monitoring/autoscaler.py reads them); with
    `swarm.autoscale` off it decides nothing (and keeps its decision log readable)."""
    auto = policy.autoscale
    values = {
        "LOREPIN_AUTOSCALE_ENABLED": "1" if auto else "0",
        "LOREPIN_AUTOSCALE_SERVICE": service(stack, "cms"),
        "LOREPIN_AUTOSCALE_MIN": str(policy.min),
        "LOREPIN_AUTOSCALE_MAX": str(policy.max),
        "LOREPIN_DOCKER_SOCKET": socket,
    }
    if auto:
        values.update({
            "LOREPIN_AUTOSCALE_P99_MS": str(auto.p99_ms),
            "LOREPIN_AUTOSCALE_COOLDOWN": str(auto.cooldown),
            "LOREPIN_AUTOSCALE_DOWN_AFTER": str(auto.scale_down_after),
            "LOREPIN_AUTOSCALE_INTERVAL": str(auto.interval),
        })  # fmt: skip
    return values


def build_monitoring(root: Path, base_image: str | None) -> list[str]:
    """The checkout's monitoring image; `-q`: its id is all it says."""
    base = ["--build-arg", f"BASE_IMAGE={base_image}"] if base_image else []
    return ["docker", "build", "-q", *base, str(root / MONITORING_DIR)]


AUTOSCALE = "autoscale"  # the trail's action for the autoscaler's decisions
DECISIONS = "/var/lib/lorepin-autoscaler/decisions.jsonl"  # on its volume, on the manager


def valid_decision(decision: object, now: datetime) -> bool:
    """A line of the decision log as the autoscaler writes it: anything else (a torn or
    forged line, a time ahead of now, which would hide every later decision from the
    trail) is skipped."""
    if not isinstance(decision, dict) or decision.get("outcome") not in ("ok", "failed"):
        return False
    if not all(type(decision.get(k)) is int for k in ("from", "to")):
        return False
    try:
        at = datetime.fromisoformat(str(decision.get("at")))
    except ValueError:
        return False
    return at.tzinfo is not None and at <= now + timedelta(minutes=1)


def decision_record(decision: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(outcome, detail) of an autoscaler decision as the trail keeps it."""
    outcome = "succeeded" if decision.get("outcome") == "ok" else "failed"
    keep = ("from", "to", "p99_ms", "target_ms", "reason", "error")
    return outcome, {"run_at": decision["at"], **{k: decision[k] for k in keep if k in decision}}


def release_ref(registry: str, prefix: str, image: str, version: str, digest: str) -> str:
    """An image as every node pulls it: the registry's, by digest (the tag is for people)."""
    return f"{registry}/{prefix}/{image}:{version}@{digest}"


def check_replicas(replicas: int, low: int, high: int, env: str) -> None:
    if not low <= replicas <= high:
        raise ConfigError(
            f"{replicas} replicas is outside the bounds of '{env}', {low}..{high} "
            f"(invoke.yaml's swarm.min and swarm.max)"
        )


def update_outcome(state: str | None) -> str | None:
    """'succeeded', 'rolled-back', 'stuck' or None (still going) from UpdateStatus.State."""
    if state in UPDATE_DONE:
        return UPDATE_DONE[state]
    if state in UPDATE_STUCK:
        return "stuck"
    return None


def stack_deploy(lab: Lab, stack: str, file: Path) -> list[str]:
    """`--resolve-image never`: the digests are ours; no node asks a public registry."""
    return [*docker(lab, MANAGER), "stack", "deploy", "--resolve-image", "never",
            "--prune", "-c", str(file), stack]  # fmt: skip


def service(stack: str, name: str) -> str:
    return f"{stack}_{name}"


def migrate_job(lab: Lab, stack: str, image: str, secrets: dict[str, str], who: str,
                action: list[str], name: str) -> list[str]:  # fmt: skip
    """The migrator as a one-shot Swarm job on the stack's network, with the secrets by
    their versioned names mounted where the migrator reads them."""
    mounts = [
        arg
        for secret, versioned_name in secrets.items()
        for arg in ("--secret", f"source={versioned_name},target={secret}")
    ]
    return [
        *docker(lab, MANAGER), "service", "create", "--detach", "--quiet",
        "--name", name, "--mode", "replicated-job", "--restart-condition", "none",
        "--network", f"{stack}_internal", *mounts,
        "--env", "LOREPIN_DB_HOST=db", "--env", "LOREPIN_DB_USER=lorepin",
        "--env", "LOREPIN_DB_NAME=lorepin",
        "--env", "LOREPIN_DB_PASSWORD_FILE=/run/secrets/db_password",
        "--env", "LOREPIN_CMS_DB_PASSWORD_FILE=/run/secrets/cms_db_password",
        "--label", f"dev.lorepin.stack={stack}",
        image, "python", "-m", "lorepin_cms.migrator", "--who", who, *action,
    ]  # fmt: skip


# --- the floating address (network failover) ----------------------------------------

VIP_PRIORITY = {"n1": 100, "n2": 110}  # the worker holds it while its proxy answers


def keepalived_conf(lab: Lab, node: str, port: int) -> str:
    """keepalived (Debian's) on a node: VRRP on the lab's switch for the floating address.
    The node holds it while its own proxy answers /healthz on `port`; when that fails
    (the node's engine, proxy or link gone), the instance faults and the other node, whose
    advertisements then stop being outranked, takes the address within ~3 s."""
    check = f"/usr/bin/curl -fsS -m 1 -o /dev/null http://{lab.address(node)}:{port}/healthz"
    return f"""global_defs {{
  router_id lorepin-{lab.id}-{node}
  enable_script_security
  script_user root
}}
vrrp_script proxy {{
  script "{check}"
  interval 1
  timeout 1
  fall 2
  rise 2
}}
vrrp_instance lab {{
  state BACKUP
  interface eth0
  virtual_router_id {int(lab.id, 16) % 254 + 1}
  priority {VIP_PRIORITY[node]}
  advert_int 1
  virtual_ipaddress {{
    {lab.address("vip")}/24 dev eth0
  }}
  track_script {{
    proxy
  }}
}}
"""


def probed_port(lab: Lab, node: str, conf: str) -> int | None:
    """The port a node's keepalived configuration (`keepalived_conf`) probes, if any."""
    found = re.search(rf"http://{re.escape(lab.address(node))}:(\d+)/healthz", conf)
    return int(found[1]) if found else None


def keepalived(lab: Lab, node: str) -> list[str]:
    run = lab.run_dir(node)
    return [
        "nsenter", f"--net=/var/run/netns/{lab.netns(node)}",
        "keepalived", "--dont-fork", "--log-console", "--vrrp",
        "-f", str(lab.root / f"keepalived-{node}.conf"),
        "-p", str(run / "keepalived.pid"), "-r", str(run / "vrrp.pid"),
    ]  # fmt: skip
