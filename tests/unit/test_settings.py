from __future__ import annotations

from pathlib import Path

import pytest

from lorepin_tasks import settings as settings_mod
from lorepin_tasks.errors import ConfigError
from lorepin_tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def load(
    config: dict[str, object] | None = None,
    environ: dict[str, str] | None = None,
    root: Path = ROOT,
) -> Settings:
    return settings_mod.load(config or {}, root=root, environ=environ or {})


def test_defaults_describe_the_local_environment() -> None:
    local = load().environment("local")
    assert local.kind == "local"
    assert local.project == "lorepin-local"
    assert local.http_port == 8080
    assert local.compose_files == tuple(
        ROOT / f"compose/{name}.yaml" for name in ("compose", "mocks", "local")
    )
    assert local.secrets_dir == Path("~/.local/state/lorepin/lorepin-local/secrets").expanduser()
    assert local.generates_secrets


def test_project_config_overrides_defaults_key_by_key() -> None:
    s = load({"wait_timeout": 30, "environments": {"local": {"http_port": 9000}}})
    local = s.environment("local")
    assert (s.wait_timeout, local.http_port, local.project) == (30, 9000, "lorepin-local")


def test_unknown_environment_names_the_valid_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"^unknown environment 'nope'; valid environments: local$"
    ):
        load().environment("nope")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"http_port": 70000}, "http_port must be between 0 and 65535"),
        ({"http_port": "eighty"}, "http_port must be a whole number"),
        ({"kind": "cloud"}, "kind must be one of"),
        ({"project": "Bad Name"}, "invalid Compose project name"),
        (
            {"compose_files": ["compose/missing.yaml"]},
            "compose file compose/missing.yaml does not exist",
        ),
        ({"image_tag": "no spaces"}, "invalid image tag"),
        ({"replica": "synchronous"}, "a replica is for server environments, not local"),
        ({"monitoring": {"retention": "15 days"}}, "monitoring.retention must look like 15d"),
        ({"monitoring": {"retention": 15}}, "monitoring.retention must look like 15d"),
        ({"monitoring": "on"}, "monitoring in invoke.yaml must be a mapping"),
        ({"monitoring": {"allow": "10.0.0.0/8"}}, "monitoring.allow must be a list of networks"),
        ({"monitoring": {"allow": []}}, "monitoring.allow must be a list of networks"),
        ({"monitoring": {"allow": ["10.0.0.0/33"]}}, "monitoring.allow must be a list"),
        ({"monitoring": {"allow": ["everyone"]}}, "monitoring.allow must be a list"),
        ({"admin": {"allow": []}}, "admin.allow must be a list of networks"),
        ({"admin": {"deny": ["10.0.0.0/8"]}}, "admin: unknown setting 'deny'"),
        ({"firewall": {"admin_networks": ["lan"]}}, "firewall.admin_networks must be a list"),
        ({"firewall": {"ssh_port": 0}}, "firewall.ssh_port must be between 1 and 65535"),
        ({"firewall": {"ssh": 22}}, "firewall: unknown setting 'ssh'"),
    ],
)
def test_invalid_environment_settings_are_one_line_errors(
    override: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load({"environments": {"local": override}})
    assert "\n" not in str(info.value)


def test_invalid_environment_name_is_rejected() -> None:
    with pytest.raises(ConfigError, match="names are lowercase"):
        load(
            {
                "environments": {
                    "Prod!": {"kind": "production", "compose_files": ["compose/compose.yaml"]}
                }
            }
        )


def test_base_image_comes_from_env_then_config_then_bootstrap_record(tmp_path: Path) -> None:
    (tmp_path / "compose").mkdir()
    for name in ("compose.yaml", "mocks.yaml", "local.yaml"):
        (tmp_path / "compose" / name).write_text("services: {}\n")
    assert load(root=tmp_path).base_image is None
    (tmp_path / ".lorepin").mkdir()
    (tmp_path / ".lorepin/base-image.env").write_text("BASE_IMAGE=recorded:1\n")
    assert load(root=tmp_path).base_image == "recorded:1"
    assert load({"base_image": "configured:2"}, root=tmp_path).base_image == "configured:2"
    assert (
        load({"base_image": "configured:2"}, {"BASE_IMAGE": "env:3"}, tmp_path).base_image
        == "env:3"
    )


def test_environment_variables_override_the_selected_environment() -> None:
    env = load(
        environ={
            "LOREPIN_PROJECT": "lorepin-e2e-1",
            "LOREPIN_HTTP_PORT": "0",
            "LOREPIN_DB_PORT": "0",
            "LOREPIN_IMAGE_TAG": "t1",
            "LOREPIN_SECRETS_DIR": "/tmp/s",
            "LOREPIN_BACKUP_DIR": "/tmp/b",
        }
    ).environment("local")
    assert (
        env.project,
        env.http_port,
        env.db_port,
        env.image_tag,
        env.secrets_dir,
        env.backups_dir,
    ) == ("lorepin-e2e-1", 0, 0, "t1", Path("/tmp/s"), Path("/tmp/b"))
    assert env.compose_files == load().environment("local").compose_files
    assert load().environments["local"].project == "lorepin-local"  # as configured


def test_state_follows_the_project_unless_configured() -> None:
    environ = {"XDG_STATE_HOME": "/state"}
    local = load(environ=environ).environment("local")
    assert local.secrets_dir == Path("/state/lorepin/lorepin-local/secrets")
    assert local.backups_dir == Path("/state/lorepin/lorepin-local/backups")
    assert local.lock_file == Path("/state/lorepin/lorepin-local/lock")
    moved = load(environ={**environ, "LOREPIN_PROJECT": "lorepin-x"}).environment("local")
    assert moved.secrets_dir == Path("/state/lorepin/lorepin-x/secrets")
    assert moved.lock_file == Path("/state/lorepin/lorepin-x/lock")
    pinned = load(
        {"environments": {"local": {"secrets_dir": "/etc/lorepin/local"}}},
        {**environ, "LOREPIN_PROJECT": "lorepin-x"},
    )
    assert pinned.environment("local").secrets_dir == Path("/etc/lorepin/local")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LOREPIN_HTTP_PORT", "x", "LOREPIN_HTTP_PORT must be a whole number"),
        ("LOREPIN_DB_PORT", "99999", "LOREPIN_DB_PORT must be between 0 and 65535"),
        ("LOREPIN_PROJECT", "../etc", "LOREPIN_PROJECT: invalid Compose project name"),
        ("LOREPIN_IMAGE_TAG", "a+b", "LOREPIN_IMAGE_TAG: invalid image tag"),
    ],
)
def test_bad_override_is_rejected(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(environ={variable: value}).environment("local")


def test_policies_are_resolved_once_with_the_settings() -> None:
    s = load(
        {
            "release": {"branch": "trunk", "version_files": ["a.toml"]},
            "feature": {"ttl": "2d", "seed_count": 5},
            "db": {"lock_wait": 5},
        },
        {"LOREPIN_RELEASE_WEBHOOK_URL": "https://hooks.example.invalid/x"},
    )
    assert (s.release.branch, s.release.version_files, s.release.two_person_rule) == (
        "trunk",
        ("a.toml",),
        True,
    )
    assert (s.feature.ttl.days, s.feature.seed_count, s.lock_wait) == (2, 5, 5.0)
    assert s.webhook_url == "https://hooks.example.invalid/x"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"release": {"initial_version": "one"}}, "release.initial_version 'one' is not a SemVer"),
        ({"feature": {"ttl": "forever"}}, "invalid ttl 'forever'"),
        ({"feature": {"seed_count": -1}}, "feature.seed_count must be between"),
        ({"db": {"lock_wait": "soon"}}, "db.lock_wait must be a whole number"),
    ],
)
def test_bad_policies_are_one_line_errors(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(config)


def test_the_checkout_id_is_stable_and_differs_per_checkout_and_host(tmp_path: Path) -> None:
    a = settings_mod.Checkout.of(Path("/src/a"), "box")
    assert a == settings_mod.Checkout.of(Path("/src/a"), "box")
    assert a.id != settings_mod.Checkout.of(Path("/src/b"), "box").id
    assert a.id != settings_mod.Checkout.of(Path("/src/a"), "other").id
    assert a.where == "box:/src/a"


def test_ca_bundle_prefers_explicit_setting(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load(environ={"LOREPIN_CA_BUNDLE": str(bundle)}).ca_bundle == bundle


def test_a_replica_makes_the_cms_ask_both_databases_for_the_writable_one() -> None:
    from lorepin_tasks.plans import compose

    def server(**extra: object) -> dict[str, object]:
        files = ["compose/compose.yaml", "compose/server.yaml"]
        return {"kind": "production", "compose_files": files, **extra}

    s = load({"environments": {"p": server(replica="synchronous"), "q": server()}})
    production, unreplicated = s.environment("p"), s.environment("q")
    assert (production.replica, unreplicated.replica) == ("synchronous", None)
    values = compose.variables(s, production)
    assert values["LOREPIN_DB_HOSTS"] == "db,db-replica"
    assert values["LOREPIN_DB_SYNC_STANDBY"] == "replica"
    assert "LOREPIN_DB_HOSTS" not in compose.variables(s, unreplicated)
    unsynced = load({"environments": {"p": server(replica="asynchronous")}})
    assert "LOREPIN_DB_SYNC_STANDBY" not in compose.variables(unsynced, unsynced.environment("p"))
    with pytest.raises(ConfigError, match="replica must be synchronous, asynchronous or none"):
        load({"environments": {"p": server(replica="sometimes")}})


def test_monitoring_retention_is_per_environment_and_reaches_prometheus() -> None:
    from lorepin_tasks.plans import compose

    server = {"kind": "staging", "compose_files": ["compose/compose.yaml", "compose/server.yaml"]}
    settings = load(
        {
            "environments": {
                "staging": {**server, "project": "s", "monitoring": {"retention": "8w"}},
                "production": {**server, "project": "p", "kind": "production"},
            }
        }
    )
    staging, production = settings.environment("staging"), settings.environment("production")
    assert (staging.monitoring_retention, production.monitoring_retention) == ("8w", "15d")
    assert compose.variables(settings, staging)["LOREPIN_MONITORING_RETENTION"] == "8w"
    assert "10.0.0.0/8" in production.monitoring_allow  # the private networks by default


def test_the_monitoring_allow_list_is_networks_as_written_or_single_addresses() -> None:
    server = {"kind": "staging", "compose_files": ["compose/compose.yaml", "compose/server.yaml"]}
    allow = ["192.0.2.7", "2001:db8::/32", "198.51.100.9/24"]
    settings = load({"environments": {"staging": {**server, "monitoring": {"allow": allow}}}})
    assert settings.environment("staging").monitoring_allow == (
        "192.0.2.7/32", "2001:db8::/32", "198.51.100.0/24"
    )  # fmt: skip


def test_the_admin_allow_list_and_the_firewall_settings() -> None:
    server = {"kind": "staging", "compose_files": ["compose/compose.yaml", "compose/server.yaml"]}
    settings = load({"environments": {
        "staging": {**server, "admin": {"allow": ["192.0.2.7"]},
                    "firewall": {"admin_networks": ["10.1.0.0/16"], "ssh_port": 2222}},
        "production": {**server, "kind": "production"},
    }})  # fmt: skip
    staging, production = settings.environment("staging"), settings.environment("production")
    assert staging.admin_allow == ("192.0.2.7/32",)
    assert "172.16.0.0/12" in production.admin_allow  # the private networks by default
    assert (staging.firewall_admin_networks, staging.firewall_ssh_port) == (("10.1.0.0/16",), 2222)
    assert (production.firewall_admin_networks, production.firewall_ssh_port) == ((), 22)


def test_local_publishes_its_monitoring_on_a_port_of_its_own_and_nothing_else_does() -> None:
    from lorepin_tasks.plans import compose

    settings = load({"environments": {"local": {"monitoring": {"port": 19090}}}})
    local = settings.environment("local")
    assert local.monitoring_port == 19090
    assert compose.variables(settings, local)["LOREPIN_MONITORING_PORT"] == "19090"
    assert load({}).environment("local").monitoring_port == 9090
    overridden = load({}, environ={"LOREPIN_MONITORING_PORT": "0"}).environment("local")
    assert overridden.monitoring_port == 0  # Docker picks
    server = {"kind": "staging", "compose_files": ["compose/compose.yaml", "compose/server.yaml"]}
    staging = load({"environments": {"staging": server}})
    assert staging.environment("staging").monitoring_port is None  # through the proxy
    assert "LOREPIN_MONITORING_PORT" not in compose.variables(
        staging, staging.environment("staging")
    )
    with pytest.raises(ConfigError, match=r"monitoring\.port must be"):
        load({"environments": {"local": {"monitoring": {"port": 70000}}}})


def test_a_server_environment_has_a_log_collector_port_retention_and_slow_query_time() -> None:
    from lorepin_tasks.plans import compose

    server = {"kind": "staging", "compose_files": ["compose/compose.yaml", "compose/server.yaml"]}
    logs = {"port": 18514, "retention_days": 30, "slow_query_ms": 100}
    settings = load({"environments": {"staging": {**server, "logs": logs}}})
    staging = settings.environment("staging")
    assert (staging.log_port, staging.log_retention_days, staging.slow_query_ms) == (18514, 30, 100)
    values = compose.variables(settings, staging)
    assert (values["LOREPIN_LOG_PORT"], values["LOREPIN_LOG_RETENTION_DAYS"],
            values["LOREPIN_DB_SLOW_MS"]) == ("18514", "30", "100")  # fmt: skip
    moved = load({"environments": {"staging": server}}, environ={"LOREPIN_LOG_PORT": "28514"})
    assert moved.environment("staging").log_port == 28514
    assert load({}).environment("local").log_port is None  # `invoke logs` only
    refusals = (({"port": 0}, "logs.port must be between 1 and 65535"),
                ({"retention_days": "a week"}, "logs.retention_days must be a whole"))  # fmt: skip
    for bad, message in refusals:
        with pytest.raises(ConfigError, match=message):
            load({"environments": {"staging": {**server, "logs": bad}}}).environment("staging")


def test_the_cms_database_settings_are_per_environment_and_checked() -> None:
    from lorepin_tasks.plans import compose

    given = {"database": {"pool_size": 8, "statement_timeout_ms": 5000}}
    settings = load({"environments": {"local": given}})
    values = compose.variables(settings, settings.environment("local"))
    names = ("POOL_SIZE", "POOL_TIMEOUT", "STATEMENT_TIMEOUT_MS", "IDLE_IN_TRANSACTION_TIMEOUT_MS")
    assert [values[f"LOREPIN_DB_{n}"] for n in names] == ["8", "5", "5000", "30000"]
    with pytest.raises(ConfigError, match="unknown setting 'pool'"):
        load({"environments": {"local": {"database": {"pool": 3}}}}).environment("local")
    with pytest.raises(ConfigError, match=r"database\.pool_size must be between 1 and 1000"):
        load({"environments": {"local": {"database": {"pool_size": 0}}}}).environment("local")


def test_the_activity_settings_are_per_environment_and_checked() -> None:
    from lorepin_tasks.plans import compose

    settings = load({"environments": {"local": {"activity": {"retention_days": 3}}}})
    values = compose.variables(settings, settings.environment("local"))
    assert values["LOREPIN_ACTIVITY_RETENTION_DAYS"] == "3"
    assert load({}).environment("local").activity_retention_days == 30  # unset: 30 days
    for bad in (0, "a month", 4000):
        with pytest.raises(ConfigError, match=r"activity\.retention_days must be"):
            load({"environments": {"local": {"activity": {"retention_days": bad}}}}).environment(
                "local"
            )
    off = load({"environments": {"local": {"activity": {"enabled": False}}}})
    assert compose.variables(off, off.environment("local"))["LOREPIN_ACTIVITY"] == "off"
    assert values["LOREPIN_ACTIVITY"] == "on"
    refusals = (({"retention": 1}, "activity: unknown setting 'retention'"),
                ({"enabled": "no"}, "activity.enabled must be true or false"))  # fmt: skip
    for given, message in refusals:
        with pytest.raises(ConfigError, match=message):
            load({"environments": {"local": {"activity": given}}}).environment("local")


def test_the_secrets_recipients_and_the_age_identity_are_read_and_checked() -> None:
    key = "age1" + "q" * 58
    settings = load({"environments": {"local": {"secrets": {"recipients": [key]}}}},
                    environ={"HOME": "/home/x"})  # fmt: skip
    assert settings.environment("local").secrets_recipients == (key,)
    assert settings.age_identity == Path("/home/x/.config/lorepin/age.key")
    given = load({}, environ={"LOREPIN_AGE_IDENTITY": "/keys/me.key", "HOME": "/home/x"})
    assert given.age_identity == Path("/keys/me.key")
    for bad, error in (({"recipients": ["ssh-ed25519 AAAA"]}, "must be a list of age public"),
                       ({"recipients": key}, "must be a list of age public"),
                       ({"recipient": [key]}, "secrets: unknown setting 'recipient'")):  # fmt: skip
        with pytest.raises(ConfigError, match=error):
            load({"environments": {"local": {"secrets": bad}}})
