"""TLS and headers at the proxy: what a browser gets before the CMS is reached."""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from deployed.conftest import Target
from lorepin_tasks.plans.security import HEADERS


def test_tls_is_1_2_or_newer_with_a_certificate_that_verifies(target: Target) -> None:
    where = urlsplit(target.url)
    context = target.context()  # verifies the chain and the host name
    with socket.create_connection((where.hostname, where.port or 443), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=where.hostname) as tls:  # fmt: skip
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    old = target.context()
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.minimum_version = ssl.TLSVersion.TLSv1
    with socket.create_connection((where.hostname, where.port or 443), timeout=10) as raw, \
            pytest.raises(ssl.SSLError):  # fmt: skip
        old.wrap_socket(raw, server_hostname=where.hostname)


@pytest.mark.parametrize("path", ["/api/pins?limit=1", "/admin/"])
def test_every_answer_carries_the_security_headers(target: Target, path: str) -> None:
    status, headers, _ = target.call("GET", path)
    assert status == 200
    present = {k.lower() for k in headers}
    assert not [h for h in HEADERS if h not in present], sorted(present)
    assert "max-age=" in headers["strict-transport-security"]


def test_plain_http_is_sent_to_https(target: Target) -> None:
    if not target.http_url:
        pytest.fail("the environment publishes no plain-HTTP address", pytrace=False)

    class Keep(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(Keep)
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(f"{target.http_url}/api/pins?limit=1", timeout=10)
    assert answer.value.code in (301, 302, 307, 308)
    assert answer.value.headers["location"].startswith("https://")
