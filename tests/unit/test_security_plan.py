"""security.scan's judgement: a sound proxy and container set give no high finding; each
weakness a scan can see (old protocols, weak suites, no HSTS, another certificate, a
missing header, a privileged or exposed container) is named with its severity."""

from __future__ import annotations

from typing import Any

import pytest

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import ci
from lorepin_tasks.plans import security as plan

SOUND = plan.TlsScan(
    accepted={"ssl_2_0": [], "ssl_3_0": [], "tls_1_0": [], "tls_1_1": [],
              "tls_1_2": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
              "tls_1_3": ["TLS_AES_128_GCM_SHA256"]},
    hsts_max_age=31536000, leaf_sha256="ab" * 32,
)  # fmt: skip
HEADERS = {"Strict-Transport-Security": "max-age=31536000", "X-Frame-Options": "DENY",
           "Content-Security-Policy": "default-src 'self'; script-src 'self'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}  # fmt: skip


def container(name: str, service: str, **host: Any) -> dict[str, Any]:
    return {
        "Name": f"/{name}",
        "Config": {"User": host.pop("user", "10001"),
                   "Labels": {"com.docker.compose.service": service}},
        "HostConfig": {"CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges:true"],
                       "ReadonlyRootfs": True, "PortBindings": {}, **host},
    }  # fmt: skip


def test_a_sound_environment_has_no_finding() -> None:
    proxy = container("p", "proxy", PortBindings={"8443/tcp": [{"HostIp": ""}]})  # all addresses
    found = (plan.tls(SOUND, "ab" * 32) + plan.headers(HEADERS, "/")
             + plan.containers([proxy, container("c", "cms")]))  # fmt: skip
    assert found == [] and plan.worst(found) is None and not plan.fails(found, "low")


def test_a_write_that_is_not_refused_without_a_token_is_high() -> None:
    guarded = {(m, p): 401 for m, p, _ in plan.UNGUARDED_PROBES}
    assert plan.access(guarded) == []
    found = plan.access({**guarded, ("POST", "/api/pins"): 422, ("DELETE", "/api/pins/0"): 404})
    assert [(f.severity, f.check, f.what) for f in found] == [
        ("high", "access", "POST /api/pins without a token answered 422, not 401: a change "
                           "anyone can make"),
        ("high", "access", "DELETE /api/pins/0 without a token answered 404, not 401: a change "
                           "anyone can make"),
    ]  # fmt: skip
    # The probes change nothing even where a write is open: an empty body, pin 0.
    assert all(b in (b"{}", None) for _, _, b in plan.UNGUARDED_PROBES)
    assert all(p == "/api/pins" or p.endswith("/0") for _, p, _ in plan.UNGUARDED_PROBES)


def test_each_tls_weakness_is_named() -> None:
    weak = plan.TlsScan(
        accepted={**SOUND.accepted, "tls_1_0": ["TLS_RSA_WITH_AES_128_CBC_SHA"],
                  "tls_1_2": ["TLS_RSA_WITH_AES_128_CBC_SHA", *SOUND.accepted["tls_1_2"]],
                  "tls_1_3": []},
        hsts_max_age=None, leaf_sha256="cd" * 32,
    )  # fmt: skip
    assert [(f.severity, f.what) for f in plan.tls(weak, "ab" * 32)] == [
        ("high", "TLS 1.0 is accepted (1 suites)"),
        ("high", "weak TLS 1.2 suites accepted: TLS_RSA_WITH_AES_128_CBC_SHA"),
        ("low", "TLS 1.3 is not offered"),
        ("high", "no Strict-Transport-Security header"),
        ("high", "the certificate served is not the environment's (tls.crt)"),
    ]
    short = plan.TlsScan(accepted=SOUND.accepted, hsts_max_age=300, leaf_sha256=None)
    assert [f.severity for f in plan.tls(short, None)] == ["medium"]


def test_missing_or_loose_headers_are_named_per_page() -> None:
    loose = {k: v for k, v in HEADERS.items() if k != "X-Frame-Options"}
    loose["Content-Security-Policy"] = "script-src 'self' 'unsafe-inline'"
    loose["Server"] = "Caddy/2.6.2"
    assert [f.what for f in plan.headers(loose, "/admin/")] == [
        "/admin/: no x-frame-options header (clickjacking)",
        "/admin/: the CSP allows inline or eval'd scripts",
        "/admin/: Server header names a version",
    ]


def test_container_weaknesses_and_what_only_the_proxy_may_publish() -> None:
    found = plan.containers([
        container("db", "db", user="", CapDrop=[], SecurityOpt=[], ReadonlyRootfs=False),
        container("x", "cms", Privileged=True,
                  PortBindings={"8000/tcp": [{"HostIp": "", "HostPort": "8000"}]}),
        container("y", "collector", PortBindings={"5514/tcp": [{"HostIp": "127.0.0.1"}]}),
    ])  # fmt: skip
    assert [(f.severity, f.what) for f in found] == [
        ("medium", "db: starts as root"),
        ("medium", "db: capabilities not dropped"),
        ("medium", "db: no no-new-privileges"),
        ("low", "db: writable root filesystem"),
        ("high", "x: privileged"),
        ("high", "x: 8000/tcp published on 0.0.0.0, not loopback"),
    ]
    assert plan.worst(found) == "high" and plan.fails(found, "high")
    assert not plan.fails([f for f in found if f.severity != "high"], "high")


def test_the_report_orders_by_severity_and_says_what_was_not_checked() -> None:
    findings = [plan.Finding("low", "containers", "a"), plan.Finding("high", "tls", "b|c")]
    rep = plan.report("staging", "https://127.0.0.1:8443", "now", findings, ["tls"],
                      {"api-fuzz": "not built yet"})  # fmt: skip
    assert [f["what"] for f in rep["findings"]] == ["b|c", "a"]
    assert rep["counts"] == {"high": 1, "medium": 0, "low": 1}
    text = plan.markdown(rep)
    assert "| high | tls | b/c |" in text and "- api-fuzz: not built yet" in text


def test_api_fuzz_results_a_5xx_is_high_and_an_undocumented_answer_medium() -> None:
    # schemathesis's JUnit report: a test case per operation, the failure's codes.
    results = ci.junit(
        '<testsuites><testsuite name="schemathesis" tests="3" failures="2">'
        '<testcase name="GET /api/pins"><failure type="failure" message="ST101, ST103">'
        "1. Test Case ID: x\n- ST101 Server error</failure></testcase>"
        '<testcase name="GET /version"><failure type="failure" message="ST104"/></testcase>'
        '<testcase name="GET /healthz"/></testsuite></testsuites>', "fuzz.xml",
    )  # fmt: skip
    assert [(f.severity, f.what) for f in plan.fuzz(results)] == [
        ("high", "GET /api/pins: ST101, ST103 (`schemathesis explain CODE`)"),
        ("medium", "GET /version: ST104 (`schemathesis explain CODE`)"),
    ]
    nothing = plan.fuzz(None, "the schema did not load from https://x/openapi.json")
    assert [(f.severity, f.what) for f in nothing] == [
        ("high", "no operation was tested: the schema did not load from https://x/openapi.json")
    ]


def test_secret_named_image_variables_and_the_allow_list() -> None:
    hits = plan.env_hits("lorepin/cms:1.0.0", ["PATH=/usr/bin", "DB_PASSWORD=hunter2",
                                               "LOREPIN_DB_PASSWORD_FILE=/run/secrets/db",
                                               "API_TOKEN=", "GITHUB_TOKEN_PATH=/x"])  # fmt: skip
    assert [(h.where, h.kind) for h in hits] == [
        ("image lorepin/cms:1.0.0, variable DB_PASSWORD", "secret-named variable")
    ]
    found = plan.secrets([*hits, *hits], allow=set())  # the same hit twice: one finding
    assert len(found) == 1 and "hunter2" not in found[0].what
    assert plan.allowed("# why\n" + hits[0].sha1 + "  # a test value\n", "a") == {hits[0].sha1}
    for bad in (hits[0].sha1, "abc # short", f"{hits[0].sha1}x # long"):
        with pytest.raises(ConfigError, match=r"^\.secrets-allow:1: not '<sha1 of"):
            plan.allowed(bad, ".secrets-allow")
