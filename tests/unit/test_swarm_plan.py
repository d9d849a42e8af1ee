"""The swarm lab and the Swarm backend as data (plans/swarm.py) and their settings."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from lorepin_tasks import settings as settings_mod
from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import swarm as plan

ROOT = Path(__file__).resolve().parents[2]


def test_a_lab_is_the_checkouts_and_the_names() -> None:
    one, again = plan.lab("lab", "c" * 16, "h:/a"), plan.lab("lab", "c" * 16, "h:/a")
    other_checkout, other_name = plan.lab("lab", "d" * 16, "h:/b"), plan.lab("x", "c" * 16, "h:/a")
    assert one == again
    assert len({one.id, other_checkout.id, other_name.id}) == 3
    assert one.subnet.subnet_of(plan.SUBNETS)  # type: ignore[arg-type]
    # Linux caps interface names at 15 characters; the unix socket path at 107.
    assert all(len(n) <= 15 for n in (one.host_link, f"{one.prefix}n1", one.netns("n2")))
    assert len(one.socket("n1")) < 100
    addresses = [one.address(n) for n in ("host", "vip", *plan.NODES)]
    assert len(set(addresses)) == 4
    assert all(ipaddress.ip_address(a) in one.subnet for a in addresses)
    assert one.registry == f"{one.address('host')}:{one.registry_port}"
    assert one.registry_local.startswith("127.0.0.1:")


def test_the_node_engine_runs_in_its_namespace_through_nsenter_with_its_own_paths() -> None:
    lab = plan.lab("lab", "c" * 16, "h:/a")
    argv = plan.dockerd(lab, "n2")
    assert argv[:2] == ["nsenter", f"--net=/var/run/netns/{lab.netns('n2')}"]
    assert "netns" not in argv[2:5]  # not `ip netns exec`: it remounts /sys
    for flag, value in (("--data-root", str(lab.root / "n2")), ("-H", lab.socket("n2")),
                        ("--insecure-registry", lab.registry)):  # fmt: skip
        assert argv[argv.index(flag) + 1] == value
    assert argv[argv.index("--bip") + 1] != plan.dockerd(lab, "n1")[argv.index("--bip") + 1]


def test_a_subnet_another_interface_uses_is_refused() -> None:
    lab = plan.lab("lab", "c" * 16, "h:/a")
    inside = lab.subnet.network_address + 77
    plan.free_subnet(lab, "1: lo    inet 127.0.0.1/8 scope host lo\n")
    with pytest.raises(ConfigError, match=r"already uses \(eth9\)"):
        plan.free_subnet(lab, f"5: eth9    inet {inside}/24 brd x scope global eth9\n")


def test_secrets_and_configs_get_a_new_name_for_a_new_content() -> None:
    a = plan.versioned("stack", "db_password", b"one")
    assert a == plan.versioned("stack", "db_password", b"one")
    assert a != plan.versioned("stack", "db_password", b"two")
    assert a.startswith("stack_db_password_")


def test_the_proxy_follows_the_replicas_by_dns_and_retries_a_dead_one() -> None:
    handler = plan.proxy_config()["apps"]["http"]["servers"]["cms"]["routes"][0]["handle"][0]  # type: ignore[index]
    assert handler["dynamic_upstreams"]["name"] == "tasks.cms"
    assert handler["load_balancing"]["try_duration"]


@pytest.mark.parametrize(
    ("state", "outcome"),
    [("completed", "succeeded"), ("rollback_completed", "rolled-back"), ("paused", "stuck"),
     ("rollback_paused", "stuck"), ("updating", None), ("rollback_started", None), (None, None)],
)  # fmt: skip
def test_swarms_update_states_end_in_an_outcome(state: str | None, outcome: str | None) -> None:
    assert plan.update_outcome(state) == outcome


def test_replicas_outside_the_bounds_are_refused_in_one_line() -> None:
    plan.check_replicas(4, 1, 4, "swarm")
    with pytest.raises(ConfigError, match=r"^0 replicas is outside the bounds of 'swarm', 1\.\.4"):
        plan.check_replicas(0, 1, 4, "swarm")


def test_the_floating_address_follows_the_proxy_check() -> None:
    lab = plan.lab("lab", "c" * 16, "h:/a")
    conf = plan.keepalived_conf(lab, "n2", 8580)
    assert f"{lab.address('vip')}/24 dev eth0" in conf
    assert f"http://{lab.address('n2')}:8580/healthz" in conf
    assert f"priority {plan.VIP_PRIORITY['n2']}" in conf
    assert plan.VIP_PRIORITY["n2"] > plan.VIP_PRIORITY["n1"]


def swarm_env(**override: Any) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "invoke.yaml").read_text())["lorepin"]
    config["environments"]["swarm"].update(override)
    return dict(config)


def test_the_swarm_environment_is_a_server_one_on_swarm() -> None:
    env = settings_mod.load(swarm_env(), root=ROOT, environ={}).environment("swarm")
    assert env.is_server and env.swarm is not None
    assert (env.swarm.lab, env.swarm.min, env.swarm.replicas, env.swarm.max) == ("lab", 1, 2, 4)
    assert env.swarm.autoscale == settings_mod.Autoscale(p99_ms=250)
    assert env.database.pool_size == 4  # per worker; pgbouncer pools them
    staging = settings_mod.load(swarm_env(), root=ROOT, environ={}).environment("staging")
    assert staging.swarm is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"backend": "k8s"}, "backend must be compose or swarm, got 'k8s'"),
        ({"swarm": {"replicas": 9, "max": 4}}, r"min <= replicas <= max, got 1 <= 9 <= 4"),
        ({"swarm": {"lab": "Bad Lab"}}, "swarm.lab must be lowercase"),
        ({"swarm": {"nodes": 3}}, "swarm: unknown setting 'nodes'"),
        ({"swarm": {"min": 0}}, r"swarm.min must be between 1 and 64"),
        ({"backend": "compose"}, "swarm: is for `backend: swarm`"),
        ({"swarm": {"autoscale": {"p99": 5}}}, "swarm.autoscale: unknown setting 'p99'"),
        ({"swarm": {"autoscale": {"p99_ms": 0}}}, r"swarm.autoscale.p99_ms must be between 1"),
        ({"swarm": {"autoscale": "yes"}}, "swarm.autoscale must be a mapping, true or false"),
    ],
)
def test_bad_swarm_settings_are_one_line_errors(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_mod.load(swarm_env(**override), root=ROOT, environ={}).environment("swarm")


def test_pgbouncer_is_sized_for_the_most_replicas_the_environment_may_run() -> None:
    # Every connection of every worker's pools (2 workers x (4 + the activity recorder's
    # 1) per replica, for max + the start-first one) is a client; a client holds a server
    # connection only within a transaction, so half as many serve them, 4..60.
    assert plan.pool_sizes(4, 4) == {"max_client_conn": 60, "default_pool_size": 25,
                                     "reserve_pool_size": 2}  # fmt: skip
    assert plan.pool_sizes(1, 4)["default_pool_size"] == 10
    assert plan.pool_sizes(64, 4)["default_pool_size"] == 60  # PostgreSQL has 100 in all
    client = settings_mod.DbClient(pool_size=4, statement_timeout_ms=500)
    ini = plan.pgbouncer_ini(4, client)
    assert "pool_mode = transaction" in ini and "default_pool_size = 25" in ini
    # invoke.yaml's `database:` timeouts reach PostgreSQL from pgbouncer, not from the
    # client's startup options (which pgbouncer refuses).
    assert "SET statement_timeout = 500; SET idle_in_transaction_session_timeout = 30000" in ini
    assert "lorepin = host=db port=5432 dbname=lorepin" in ini


def test_the_pool_report_keeps_the_applications_pools_and_reads_numbers() -> None:
    head = "database user cl_active cl_waiting cl_cancel_req sv_active sv_idle sv_used "
    head += "sv_tested sv_login maxwait maxwait_us pool_mode"
    pools = "lorepin lorepin_cms 8 1 0 3 2 0 0 0 2 5 transaction\n"
    pools += "pgbouncer pgbouncer 1 0 0 0 0 0 0 0 0 0 statement"
    rows = [line.split() for line in f"{head}\n{pools}".splitlines()]
    assert plan.pool_report(rows) == [
        {"database": "lorepin", "user": "lorepin_cms", "cl_active": 8, "cl_waiting": 1,
         "sv_active": 3, "sv_idle": 2, "maxwait": 2},
    ]  # fmt: skip
    assert plan.pool_report([]) == []


def test_the_stacks_prometheus_probes_both_paths_and_finds_every_replica() -> None:
    lab = plan.lab("lab", "c" * 16, "h:/a")
    config = plan.prometheus_config("swarm", lab, 8580)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}  # type: ignore[attr-defined]
    assert jobs["cms"]["dns_sd_configs"][0]["names"] == ["tasks.cms"]
    probed = {t["labels"]["path"]: t["targets"][0] for t in jobs["proxies"]["static_configs"]}
    assert probed == {p: f"http://{lab.address(p)}:8580/healthz" for p in ("n1", "n2", "vip")}
    off = settings_mod.SwarmPolicy()
    assert plan.autoscaler_variables("s", off, "/x.sock")["LOREPIN_AUTOSCALE_ENABLED"] == "0"


def test_only_the_autoscalers_own_lines_reach_the_trail() -> None:
    now = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)
    good = {"at": "2026-12-02T15:59:00.000+00:00", "from": 2, "to": 1, "outcome": "ok",
            "reason": "no requests"}  # fmt: skip
    assert plan.valid_decision(good, now)
    for bad in (
        {**good, "at": "9999-12-31T00:00:00+00:00"},  # ahead: would hide every later one
        {**good, "at": "2026-12-02T15:59:00"},  # no zone
        {**good, "at": 5},
        {**good, "from": "x"},
        {**good, "to": {"a": 1}},
        {**good, "outcome": "maybe"},
        [1, 2],
    ):
        assert not plan.valid_decision(bad, now), bad


def test_the_port_a_lab_probes_is_read_back_from_its_keepalived_configuration() -> None:
    """A deploy refuses an environment whose http_port the lab's floating address does not
    follow (`swarm.lab.up --port`): the port is read back from what the lab wrote."""
    one = plan.lab("lab", "c" * 16, "/work/checkout")
    assert plan.probed_port(one, "n1", plan.keepalived_conf(one, "n1", 8123)) == 8123
    assert plan.probed_port(one, "n1", plan.keepalived_conf(one, "n2", 8123)) is None
    assert plan.probed_port(one, "n1", "garbage") is None
