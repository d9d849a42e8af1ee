"""Blue-green deploy planning (plans/deploy.py) and the `deploy:` block of a server
environment: pure, no engine."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import pytest

from lorepin_tasks import settings as settings_mod
from lorepin_tasks.errors import ConfigError, Refused
from lorepin_tasks.plans import deploy as plan
from lorepin_tasks.settings import DeployPolicy, Environment, parse_window

ROOT = Path(__file__).resolve().parents[2]
SERVER_FILES = ["compose/compose.yaml", "compose/server.yaml"]
WHERE = "environment 'staging'"


def staging(deploy: object = None) -> Environment:
    """A staging environment as invoke.yaml would describe it, with `deploy` as its block."""
    spec: dict[str, object] = {"kind": "staging", "compose_files": SERVER_FILES}
    if deploy is not None:
        spec["deploy"] = deploy
    config = {"environments": {"staging": spec}}
    return settings_mod.load(config, root=ROOT, environ={}).environment("staging")


def policy(deploy: object = None) -> DeployPolicy:
    found = staging(deploy).deploy
    assert found is not None
    return found


def at(text: str) -> datetime:
    """An instant in UTC ("2024-01-15 08:30": 2024-01-15 is a Monday)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- the deploy: block -----------------------------------------------------------------


def test_a_server_environment_without_a_deploy_block_deploys_any_time() -> None:
    env = staging()
    assert env.is_server
    assert env.deploy == DeployPolicy(approvals=0, windows=(), timezone="UTC", watch=30)


def test_the_deploy_block_sets_the_policy() -> None:
    found = policy(
        {
            "approvals": 2,
            "windows": ["Mon-Fri 09:00-16:00", "Sat 10:00-12:00"],
            "timezone": "Europe/Paris",
            "watch": 60,
        }
    )
    assert (found.approvals, found.timezone, found.watch) == (2, "Europe/Paris", 60)
    assert [w.text for w in found.windows] == ["Mon-Fri 09:00-16:00", "Sat 10:00-12:00"]


@pytest.mark.parametrize(
    ("text", "days", "start", "end", "kept"),
    [
        ("Mon-Fri 09:00-16:00", {0, 1, 2, 3, 4}, time(9), time(16), "Mon-Fri 09:00-16:00"),
        ("Fri-Mon 22:00-23:30", {4, 5, 6, 0}, time(22), time(23, 30), "Fri-Mon 22:00-23:30"),
        (
            "Tue-Mon 00:00-23:59",
            {1, 2, 3, 4, 5, 6, 0},
            time(0),
            time(23, 59),
            "Tue-Mon 00:00-23:59",
        ),
        ("wed 12:00-13:00", {2}, time(12), time(13), "wed 12:00-13:00"),
        ("  Sat 10:00-12:00 ", {5}, time(10), time(12), "Sat 10:00-12:00"),
    ],
)
def test_valid_windows(text: str, days: set[int], start: time, end: time, kept: str) -> None:
    window = parse_window(text, "deploy.windows")
    assert (window.days, window.start, window.end) == (frozenset(days), start, end)
    assert window.text == kept


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ("Mon-Fri 16:00-09:00", "ends before it starts"),
        ("Mon-Fri 09:00-09:00", "ends before it starts"),
        ("Mon-Fry 09:00-16:00", "invalid"),
        ("Monday-Friday 09:00-16:00", "invalid"),
        ("Mon-Fri 9:00-16:00", "invalid"),
        ("Mon-Fri 09:60-16:00", "invalid"),
        ("Mon-Fri 09:00-25:00", "invalid"),
        ("Mon-Fri", "invalid"),
    ],
)
def test_bad_windows_are_refused_naming_the_window(window: str, problem: str) -> None:
    expected = (
        f"{WHERE}: deploy.windows: window {window!r} ends before it starts"
        if problem == "ends before it starts"
        else f"{WHERE}: deploy.windows: invalid window {window!r}: like 'Mon-Fri 09:00-16:00'"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        staging({"windows": ["Sat 10:00-12:00", window]})


@pytest.mark.parametrize(
    ("deploy", "message"),
    [
        (
            {"kept": 3, "watch": 30},
            "unknown deploy setting 'kept' (known: approvals, windows, timezone, watch, "
            "ready_timeout, keep, requires_e2e)",
        ),
        ({"timezone": "Mars/Olympus"}, "unknown deploy.timezone 'Mars/Olympus'"),
        ({"timezone": "../../etc/passwd"}, "unknown deploy.timezone '../../etc/passwd'"),
        (
            {"windows": "Mon-Fri 09:00-16:00"},
            "deploy.windows must be a list like ['Mon-Fri 09:00-16:00']",
        ),
        ({"approvals": 11}, "deploy.approvals must be between 0 and 10, got 11"),
        ({"ready_timeout": 2}, "deploy.ready_timeout must be between 5 and 3600, got 2"),
        ({"approvals": -1}, "deploy.approvals must be between 0 and 10, got -1"),
        ({"approvals": "two"}, "deploy.approvals must be a whole number, got 'two'"),
        ({"watch": 3601}, "deploy.watch must be between 0 and 3600, got 3601"),
        ({"watch": 1.5}, "deploy.watch must be a whole number, got 1.5"),
        ({"keep": 1}, "deploy.keep must be between 2 and 100, got 1"),  # serving + kept
        ("yes", "deploy in invoke.yaml must be a mapping, got 'yes'"),
    ],
)
def test_bad_deploy_settings_are_one_line_errors(deploy: object, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(f'{WHERE}: {message}')}$"):
        staging(deploy)


@pytest.mark.parametrize(
    "deploy", [{"approvals": 0}, {"approvals": 10}, {"watch": 0}, {"watch": 3600}]
)
def test_deploy_bounds_are_inclusive(deploy: dict[str, int]) -> None:
    found = policy(deploy)
    key, value = next(iter(deploy.items()))
    assert getattr(found, key) == value


# -- windows ---------------------------------------------------------------------------

PARIS = DeployPolicy(
    windows=(parse_window("Mon-Fri 09:00-16:00", "deploy.windows"),), timezone="Europe/Paris"
)
OVERRIDE_REFUSED = (
    "outside the deploy windows (Mon-Fri 09:00-16:00, Europe/Paris): deploy then, or "
    "pass --outside-window --reason TEXT (recorded)"
)


@pytest.mark.parametrize(
    ("utc", "inside"),
    [
        ("2024-01-15 08:30", True),  # 09:30 in Paris (CET), 08:30 in UTC: before 09:00
        ("2024-01-15 15:30", False),  # 16:30 in Paris, 15:30 in UTC: before 16:00
        ("2024-01-15 08:00", True),  # 09:00 in Paris: the start is in
        ("2024-01-15 15:00", False),  # 16:00 in Paris: the end is out
        ("2024-07-15 07:30", True),  # 09:30 in Paris (CEST, summer time)
        ("2024-07-15 14:30", False),  # 16:30 in Paris (CEST)
        ("2024-01-20 10:00", False),  # Saturday
    ],
)
def test_windows_are_in_the_policys_timezone(utc: str, inside: bool) -> None:
    assert plan.in_window(PARIS, at(utc)) is inside


def test_the_weekday_is_the_one_in_the_policys_timezone() -> None:
    monday_night = DeployPolicy(
        windows=(parse_window("Mon 00:00-06:00", "deploy.windows"),), timezone="Europe/Paris"
    )
    sunday_utc = at("2024-01-14 23:30")  # Monday 00:30 in Paris
    assert plan.in_window(monday_night, sunday_utc)
    assert not plan.in_window(replace(monday_night, timezone="UTC"), sunday_utc)


def test_no_windows_means_any_time() -> None:
    anytime = DeployPolicy(timezone="Europe/Paris")
    saturday_night = at("2024-01-20 02:00")
    assert plan.in_window(anytime, saturday_night)
    assert plan.window_override(anytime, saturday_night, outside_window=False, reason="") is None


@pytest.mark.parametrize(("outside_window", "reason"), [(False, ""), (True, "hotfix for INC-42")])
def test_inside_a_window_needs_no_override(outside_window: bool, reason: str) -> None:
    inside = at("2024-01-15 08:30")
    assert plan.window_override(PARIS, inside, outside_window=outside_window, reason=reason) is None


@pytest.mark.parametrize("reason", ["", "hotfix for INC-42"])
def test_outside_a_window_is_refused_without_the_flag(reason: str) -> None:
    with pytest.raises(Refused, match=f"^{re.escape(OVERRIDE_REFUSED)}$"):
        plan.window_override(PARIS, at("2024-01-15 15:30"), outside_window=False, reason=reason)


@pytest.mark.parametrize("reason", ["", "  \n"])
def test_the_override_needs_a_reason(reason: str) -> None:
    with pytest.raises(
        ConfigError, match=r"^--outside-window needs --reason TEXT: why it cannot wait$"
    ):
        plan.window_override(PARIS, at("2024-01-15 15:30"), outside_window=True, reason=reason)


def test_the_override_records_the_reason() -> None:
    override = plan.window_override(
        PARIS, at("2024-01-15 15:30"), outside_window=True, reason="  hotfix for INC-42\n"
    )
    assert override == "hotfix for INC-42"


# -- approvals -------------------------------------------------------------------------

CUTTER = "alice@example.com"


def approved(*by: str) -> list[dict[str, str]]:
    """Approvals as `git.approvals` reads them from the release commit's note."""
    return [
        {
            "version": "v1.2.0",
            "approved_by": who,
            "approved_at": "2024-01-15T08:00:00+00:00",
            "commit": "c0ffee",
        }
        for who in by
    ]


@pytest.mark.parametrize(
    ("needed", "cutter", "approvals", "have"),
    [
        (0, CUTTER, [], None),
        (1, CUTTER, [], 0),
        (1, CUTTER, approved(CUTTER), 0),
        (1, CUTTER, approved(" Alice@Example.COM "), 0),  # the cutter, however spelled
        (1, "Alice@Example.com", approved(CUTTER), 0),  # the tagger's email as git has it
        (1, CUTTER, approved("bob@example.com"), None),
        (2, CUTTER, approved("bob@example.com", "Bob@example.com"), 1),  # one person
        (2, CUTTER, approved(CUTTER, "bob@example.com"), 1),
        (2, CUTTER, approved("bob@example.com", "carol@example.com"), None),
        (1, None, approved("bob@example.com"), None),  # a lightweight tag: no known cutter
    ],
)
def test_approvals_by_others_than_the_cutter(
    needed: int, cutter: str | None, approvals: list[dict[str, str]], have: int | None
) -> None:
    problem = plan.approval_problem(DeployPolicy(approvals=needed), "v1.2.0", cutter, approvals)
    if have is None:
        assert problem is None
    else:
        assert problem == (
            f"v1.2.0 has {have} of the {needed} approval(s) it needs here "
            "(`invoke release.approve v1.2.0` by someone other than its cutter)"
        )


# -- the release's images --------------------------------------------------------------

CMS_ID = "sha256:" + "a" * 64
DB_ID = "sha256:" + "d" * 64
PROXY_ID = "sha256:" + "e" * 64
COLLECTOR_ID = "sha256:" + "f" * 64
OTHER_ID = "sha256:" + "b" * 64
EXPECTED = plan.release_images("lorepin", "1.2.0")
CMS, DB, PROXY = EXPECTED["cms"], EXPECTED["postgres"], EXPECTED["proxy"]
COLLECTOR = EXPECTED["collector"]
CMS_MISSING = "image lorepin/cms:1.2.0 is not on this engine (`invoke artifacts.download`)"
CMS_DIFFERS = (
    "image lorepin/cms:1.2.0 is sha256:bbbbbbbbbbbb, not the release's sha256:aaaaaaaaaaaa"
)
MANIFEST: dict[str, Any] = {
    "version": "1.2.0",
    "images": {
        "cms": {"image": CMS, "id": CMS_ID},
        "postgres": {"image": DB, "id": DB_ID},
        "proxy": {"image": PROXY, "id": PROXY_ID},
        "collector": {"image": COLLECTOR, "id": COLLECTOR_ID},
    },
}
ALL = {CMS: CMS_ID, DB: DB_ID, PROXY: PROXY_ID, COLLECTOR: COLLECTOR_ID}


def test_a_deploy_starts_the_release_images_of_its_prefix() -> None:
    assert EXPECTED == {
        "cms": "lorepin/cms:1.2.0",
        "postgres": "lorepin/postgres:1.2.0",
        "proxy": "lorepin/proxy:1.2.0",
        "collector": "lorepin/collector:1.2.0",
    }


@pytest.mark.parametrize(
    ("found", "problems"),
    [
        (ALL, []),
        ({**ALL, CMS: None}, [CMS_MISSING]),
        ({DB: DB_ID, PROXY: PROXY_ID, COLLECTOR: COLLECTOR_ID}, [CMS_MISSING]),
        ({**ALL, CMS: OTHER_ID}, [CMS_DIFFERS]),
        (
            {CMS: OTHER_ID, PROXY: PROXY_ID, COLLECTOR: COLLECTOR_ID},
            [
                CMS_DIFFERS,
                "image lorepin/postgres:1.2.0 is not on this engine (`invoke artifacts.download`)",
            ],
        ),
    ],
)
def test_release_problems(found: dict[str, str | None], problems: list[str]) -> None:
    assert plan.release_problems(MANIFEST, EXPECTED, found) == problems


@pytest.mark.parametrize(
    ("images", "problem"),
    [
        ({}, "its manifest names no cms image: restore it"),
        ({"cms": {"image": CMS}}, "its manifest names no cms image: restore it"),
        (
            {"cms": {"image": "evil/cms:1.2.0", "id": CMS_ID}},
            "its manifest's cms image is evil/cms:1.2.0, not lorepin/cms:1.2.0",
        ),
    ],
)
def test_a_manifest_that_does_not_name_what_is_started_is_refused(
    images: dict[str, object], problem: str
) -> None:
    manifest = {"images": {**MANIFEST["images"], **images} if images else {}}
    assert plan.release_problems(manifest, EXPECTED, ALL)[0] == problem


# -- colours ---------------------------------------------------------------------------


def state(active: str | None, blue: str | None, green: str | None) -> plan.State:
    return plan.State(
        colours={
            "blue": plan.Colour(name="blue", version=blue, running=blue is not None),
            "green": plan.Colour(name="green", version=green, running=green is not None),
        },
        active=active,
    )


def test_colours_and_their_services() -> None:
    assert (plan.other("blue"), plan.other("green")) == ("green", "blue")
    assert (plan.service("blue"), plan.service("green")) == ("cms-blue", "cms-green")


@pytest.mark.parametrize(
    ("current", "idle", "serving"),
    [
        (state(None, None, None), "blue", None),  # first deploy
        (state("blue", "1.1.0", None), "green", "1.1.0"),
        (state("green", "1.1.0", "1.2.0"), "blue", "1.2.0"),  # blue kept for a rollback
    ],
)
def test_the_idle_colour_and_what_is_served(
    current: plan.State, idle: str, serving: str | None
) -> None:
    assert (current.idle, current.serving) == (idle, serving)


def test_variables_are_each_colours_version_with_changes() -> None:
    current = state("blue", "1.1.0", None)
    assert plan.variables(current) == {"LOREPIN_BLUE_VERSION": "1.1.0"}
    assert plan.variables(current, green="1.2.0") == {
        "LOREPIN_BLUE_VERSION": "1.1.0",
        "LOREPIN_GREEN_VERSION": "1.2.0",
    }
    assert plan.variables(current, blue=None, green="1.2.0") == {"LOREPIN_GREEN_VERSION": "1.2.0"}


@pytest.mark.parametrize(
    ("dial", "colour"),
    [
        ('"cms-green:8000"\n', "green"),  # what Caddy's admin API answers: a JSON string
        ("cms-blue:8000", "blue"),
        ("  cms-blue:8000  ", "blue"),
        ("", None),
        ("null\n", None),
        ('{"error":"invalid traversal path at: routes/1/handle/1/upstreams"}\n', None),
        ('"cms-red:8000"', None),
        ('"cms-green.example:8000"', None),
        ('"geocoder:8080"', None),
    ],
)
def test_upstream_colour(dial: str, colour: str | None) -> None:
    assert plan.upstream_colour(dial) == colour


# -- the proxy -------------------------------------------------------------------------


def public_handlers(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The handlers of the public server's last route: the one every request reaches."""
    handlers: list[dict[str, Any]] = config["apps"]["http"]["servers"]["public"]["routes"][-1][
        "handle"
    ]
    return handlers


@pytest.mark.parametrize("colour", plan.COLOURS)
def test_the_proxy_routes_to_the_colour_it_is_given(colour: str) -> None:
    config = json.loads(plan.proxy_config(colour, 8443, "staging.example"))
    backend = public_handlers(config)[1]
    assert backend["handler"] == "reverse_proxy"
    assert backend["upstreams"] == [{"dial": f"cms-{colour}:8000"}]
    # What the toolkit reads back (proxy_upstream's path: the backend's @id) names it too.
    assert plan.proxy_upstream(staging())[-1].endswith(f"/id/{backend['@id']}/upstreams/0/dial")
    assert plan.upstream_colour(json.dumps(backend["upstreams"][0]["dial"])) == colour


def test_with_no_colour_the_proxy_answers_503_itself() -> None:
    text = plan.proxy_config(None, 8443, "staging.example")
    backend = public_handlers(json.loads(text))[1]
    assert backend == {
        "handler": "static_response",
        "status_code": 503,
        "body": "no release deployed yet\n",
    }
    assert "upstreams" not in text
    assert "cms-" not in text


@pytest.mark.parametrize(("port", "suffix"), [(8443, ":8443"), (443, "")])
def test_the_proxy_redirects_to_the_public_https_port(port: int, suffix: str) -> None:
    config = json.loads(plan.proxy_config("blue", port, "staging.example"))
    servers = config["apps"]["http"]["servers"]
    redirect = servers["redirect"]["routes"][0]["handle"][0]
    assert redirect["status_code"] == 308
    assert redirect["headers"]["Location"] == [
        f"https://{{http.request.host}}{suffix}{{http.request.uri}}"
    ]
    [policy] = servers["public"]["tls_connection_policies"]
    assert policy["default_sni"] == "staging.example" and policy["protocol_min"] == "tls1.2"
    assert all("ECDHE" in s and ("GCM" in s or "CHACHA20" in s) for s in policy["cipher_suites"])


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://staging.example:8443/cms", "staging.example"),
        ("https://127.0.0.1:9443", "127.0.0.1"),
        ("https://cms.example", "cms.example"),
        (None, "localhost"),
    ],
)
def test_server_name_is_the_host_people_use(url: str | None, name: str) -> None:
    assert plan.server_name(replace(staging(), url=url)) == name


# -- the staging certificate -----------------------------------------------------------


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_the_certificate_names_every_host() -> None:
    hosts = ["staging.example", "localhost", "127.0.0.1", "10.0.0.5", "4cms.example"]
    argv = plan.tls_certificate(Path("/s/tls.crt"), Path("/s/tls.key"), hosts)
    assert argv[:3] == ["openssl", "req", "-x509"]
    assert option(argv, "-subj") == "/CN=staging.example"
    assert option(argv, "-addext") == (
        "subjectAltName=DNS:staging.example,DNS:localhost,IP:127.0.0.1,IP:10.0.0.5,DNS:4cms.example"
    )
    assert (option(argv, "-keyout"), option(argv, "-out")) == ("/s/tls.key", "/s/tls.crt")
    assert "-nodes" in argv  # the proxy starts unattended: no passphrase


def test_an_ipv6_url_gets_an_ip_subject_alt_name() -> None:
    host = plan.server_name(replace(staging(), url="https://[::1]:8443"))
    argv = plan.tls_certificate(Path("/s/tls.crt"), Path("/s/tls.key"), [host])
    assert option(argv, "-addext") == "subjectAltName=IP:::1"


# -- the audit record ------------------------------------------------------------------


def test_a_record_holds_what_happened() -> None:
    detail = {"from": "1.1.0", "colour": "green"}
    record = plan.record(
        seq=7,
        at="2024-01-15T08:30:00+00:00",
        who="alice@example.com on box",
        action="deploy",
        env="production",
        version="1.2.0",
        outcome="ok",
        detail=detail,
        steps=[
            plan.Step(name="starting cms-green", seconds=3.14159, ok=True),
            plan.Step(name="switching the proxy", seconds=0.004, ok=False),
        ],
    )
    detail["colour"] = "blue"  # the record keeps its own copy
    assert record == {
        "seq": 7,
        "at": "2024-01-15T08:30:00+00:00",
        "who": "alice@example.com on box",
        "action": "deploy",
        "env": "production",
        "version": "1.2.0",
        "outcome": "ok",
        "detail": {"from": "1.1.0", "colour": "green"},
        "steps": [
            {"name": "starting cms-green", "seconds": 3.14, "ok": True},
            {"name": "switching the proxy", "seconds": 0.0, "ok": False},
        ],
    }


def test_a_record_without_detail_or_steps() -> None:
    record = plan.record(
        seq=1,
        at="2024-01-15T08:30:00+00:00",
        who="alice@example.com on box",
        action="rollback",
        env="staging",
        version=None,
        outcome="refused",
    )
    assert (record["version"], record["detail"], record["steps"]) == (None, {}, [])


# -- rollback: has the schema been contracted past the target release? ---------------

LEDGER = {
    "0006": ("0005", False),
    "0005": ("0004", True),  # contract: the release at 0004 cannot run after it
    "0004": ("0003", False),
    "0003": (None, False),
}


@pytest.mark.parametrize(
    ("current", "head", "blocking"),
    [
        ("0006", "0006", None),  # the same schema
        ("0006", "0005", None),  # only expand revisions above the target's head
        ("0006", "0004", "0005"),  # a contract revision between
        ("0006", "0003", "0005"),  # the lowest contract revision is named
        ("0004", "0006", None),  # a newer release: its readiness judges
        ("0006", "9999", None),  # a head the ledger does not know: readiness judges
    ],
)
def test_rollback_is_refused_past_a_contract_revision(
    current: str, head: str, blocking: str | None
) -> None:
    assert plan.contract_between(current, head, LEDGER) == blocking


def test_schema_facts_read_the_current_revision_and_the_ledger() -> None:
    current, ledger = plan.schema_facts(
        [["current", "0005", "f"], ["0005", "0004", "t"], ["0004", "", "f"]]
    )
    assert current == "0005"
    assert ledger == {"0005": ("0004", True), "0004": (None, False)}
    assert plan.schema_facts([["current", "", "f"]]) == (None, {})


def test_a_deploy_starts_the_collector_database_backup_site_and_proxy_once_never_recreated() -> (
    None
):
    argv = plan.infra_up(staging(), wait_timeout=90)
    assert argv[argv.index("up") :] == [
        "up", "--detach", "--wait", "--wait-timeout", "90", "--no-build", "--pull", "never",
        "--no-recreate", "collector", "db", "backup-site", "proxy",
    ]  # fmt: skip


def test_a_downloaded_build_manifest_reads_as_a_release_manifest() -> None:
    built = {
        "version": "1.2.0",
        "tags": ["1.2.0"],
        "git_revision": "abc123",
        "images": [
            {"service": "cms", "name": "cms", "id": CMS_ID},
            {"service": "db", "name": "postgres", "id": DB_ID},
            {"service": "proxy", "name": "proxy", "id": PROXY_ID},
            {"service": "collector", "name": "collector", "id": COLLECTOR_ID},
        ],
    }
    manifest = plan.from_build_manifest(built, "lorepin", "1.2.0")
    assert manifest is not None and manifest["git_sha"] == "abc123"
    assert plan.release_problems(manifest, EXPECTED, ALL) == []
    assert plan.from_build_manifest({"images": [{"name": "cms"}]}, "lorepin", "1.2.0") is None
    assert plan.from_build_manifest([], "lorepin", "1.2.0") is None


def monitoring_route(config: dict[str, Any]) -> dict[str, Any]:
    routes = config["apps"]["http"]["servers"]["public"]["routes"]
    found: list[dict[str, Any]] = [r for r in routes if r.get("match") == [
        {"path": ["/monitoring/*"]}]]  # fmt: skip
    return found[0] if found else {}


def test_the_monitoring_is_behind_an_allow_list_and_a_password_only_once_set_up() -> None:
    from lorepin_tasks.plans import proxy

    assert monitoring_route(json.loads(plan.proxy_config("blue", 8443, "s.example"))) == {}
    access = proxy.Monitoring(allow=("10.0.0.0/8",), password_hash="$2a$14$abc")
    config = json.loads(plan.proxy_config("blue", 8443, "s.example", access))
    route = monitoring_route(config)
    assert route["terminal"] is True  # never on to the CMS
    refuse, login, prometheus, rest = route["handle"][1]["routes"]
    assert refuse["match"] == [{"not": [{"remote_ip": {"ranges": ["10.0.0.0/8"]}}]}]
    assert refuse["handle"][0]["status_code"] == 403 and refuse["terminal"] is True
    basic = login["handle"][0]["providers"]["http_basic"]
    assert basic["accounts"] == [{"username": "monitor", "password": "$2a$14$abc"}]
    assert prometheus["handle"][0]["upstreams"] == [{"dial": "prometheus:9090"}]
    assert rest["handle"][0]["status_code"] == 404
    # Before the CMS's catch-all; the proxy's own metrics on a port of their own.
    routes = config["apps"]["http"]["servers"]["public"]["routes"]
    assert routes.index(route) < len(routes) - 1
    assert config["apps"]["http"]["servers"]["metrics"]["listen"] == [":9180"]


def test_the_admin_page_is_refused_outside_its_allow_list_before_the_cms() -> None:
    open_to_all = json.loads(plan.proxy_config("blue", 8443, "s.example"))
    routes = open_to_all["apps"]["http"]["servers"]["public"]["routes"]
    assert not [r for r in routes if "/admin/*" in str(r.get("match"))]
    config = json.loads(plan.proxy_config("blue", 8443, "s.example", None, ("10.0.0.0/8",)))
    routes = config["apps"]["http"]["servers"]["public"]["routes"]
    [admin] = [r for r in routes if "/admin/*" in str(r.get("match"))]
    assert admin["match"] == [{"path": ["/admin", "/admin/*"],
                               "not": [{"remote_ip": {"ranges": ["10.0.0.0/8"]}}]}]  # fmt: skip
    assert admin["handle"][0]["status_code"] == 403 and admin["terminal"] is True
    assert routes.index(admin) < len(routes) - 1  # before the CMS's catch-all


def test_the_proxy_keeps_only_a_sane_client_request_id() -> None:
    """The id the CMS logs and puts in SQL: the proxy replaces any other with its own."""
    import re

    from lorepin_cms.logs import REQUEST_ID_FORMAT
    from lorepin_tasks.plans import proxy

    config = proxy.config(
        proxy.Route(upstream="cms-blue:8000", server_name="x", public_https_port=443)
    )
    first = config["apps"]["http"]["servers"]["public"]["routes"][0]
    pattern = first["match"][0]["not"][0]["header_regexp"]["X-Request-Id"]["pattern"]
    assert first["handle"][0]["request"]["set"] == {"X-Request-Id": ["{http.request.uuid}"]}
    for sane in ("req-1", "0b6e5a1c-6a7d-4c43-9a3e-1f2b3c4d5e6f", "x" * 128):
        assert re.search(pattern, sane) and REQUEST_ID_FORMAT.fullmatch(sane)
    for bad in ("", "a'*/;DROP", "x" * 129, "héllo", "a b"):
        assert not re.search(pattern, bad) and not REQUEST_ID_FORMAT.fullmatch(bad)
