"""The CMS served by uvicorn, as in its image, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import bearer, free_port, grant
from tests.integration.test_cms_api import PIN, migrate

pytestmark = pytest.mark.docker

Address = tuple[str, int]


@pytest.fixture
def served(database_url: str) -> Iterator[Address]:
    """One uvicorn process of the CMS on a fresh, migrated database; its host and port."""
    migrate(database_url)
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "lorepin_cms.app:create_app", "--factory",
         "--fd", str(listener.fileno()), "--log-level", "warning"],
        pass_fds=[listener.fileno()],
        env={**os.environ, "DATABASE_URL": database_url},
    )  # fmt: skip
    address: Address = listener.getsockname()
    try:
        deadline = time.monotonic() + 30
        while send(http.client.HTTPConnection(*address, timeout=5), "GET", "/healthz") != 200:
            assert server.poll() is None, "uvicorn exited"
            assert time.monotonic() < deadline, "uvicorn did not answer within 30 s"
            time.sleep(0.1)
        yield address
    finally:
        stop(server)
        listener.close()


def stop(server: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def send(
    conn: http.client.HTTPConnection, method: str, path: str, body: str = "", token: str = ""
) -> int | str:
    """The response's status, or the name of the error that stood in for one."""
    headers = {"content-type": "application/json", **(bearer(token) if token else {})}
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError as exc:
        return type(exc).__name__


def test_sixty_four_concurrent_readers_are_all_served(served: Address, database_url: str) -> None:
    """More clients than threads and database connections: all served, none refused."""
    made = send(http.client.HTTPConnection(*served), "POST", "/api/pins", json.dumps(PIN),
                grant(database_url))  # fmt: skip
    assert made == 201
    clients, each = 64, 40
    start = threading.Barrier(clients)

    def reader(_: int) -> list[int | str]:
        conn = http.client.HTTPConnection(*served, timeout=10)  # kept alive, like a browser
        outcomes: list[int | str] = []
        try:
            conn.connect()
            start.wait(timeout=30)  # all at once, as under a burst of traffic
            while len(outcomes) < each and outcomes[-1:] in ([], [200]):  # stop at a failure
                outcomes.append(send(conn, "GET", "/api/pins/1"))
        finally:
            conn.close()
        return outcomes

    with ThreadPoolExecutor(clients) as pool:
        outcomes = Counter(o for mine in pool.map(reader, range(clients)) for o in mine)
    assert outcomes == {200: clients * each}


def scrape(port: int) -> dict[str, float]:
    """The metrics port's samples: {'name{labels}': value}."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_the_metrics_port_adds_up_every_worker(database_url: str) -> None:
    """As in the image: two uvicorn workers, one metrics port counting the requests of both."""
    migrate(database_url)
    port = metrics_port = free_port()
    while metrics_port == port:
        metrics_port = free_port()
    values = f"/tmp/lorepin-metrics-test-{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "lorepin_cms.serve"],
        env={**os.environ, "DATABASE_URL": database_url, "WEB_CONCURRENCY": "2",
             "LOREPIN_CMS_HOST": "127.0.0.1", "LOREPIN_CMS_PORT": str(port),
             "LOREPIN_METRICS_PORT": str(metrics_port), "LOREPIN_DB_POOL_SIZE": "4",
             "PROMETHEUS_MULTIPROC_DIR": values},
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        # Both workers up: each adds its pool's 4 to the size once its app is made. Before
        # that, on a slow machine one worker may serve everything and the other count nothing.
        deadline = time.monotonic() + 30
        while send(http.client.HTTPConnection("127.0.0.1", port), "GET", "/healthz") != 200 or (
            scrape(metrics_port).get("lorepin_db_pool_size") != 8  # 2 workers x 4
        ):
            assert server.poll() is None, f"the CMS exited: {server.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "both workers did not answer within 30 s"
            time.sleep(0.2)
        created = send(http.client.HTTPConnection("127.0.0.1", port), "POST", "/api/pins",
                       json.dumps(PIN), grant(database_url))  # fmt: skip
        assert created == 201
        # New connections each time: uvicorn's workers share the socket, so both serve some.
        reads = [send(http.client.HTTPConnection("127.0.0.1", port), "GET", "/api/pins/1")
                 for _ in range(30)]  # fmt: skip
        missing = send(http.client.HTTPConnection("127.0.0.1", port), "GET", "/api/pins/999999")
        assert reads == [200] * 30 and missing == 404
        samples = scrape(metrics_port)
        route = 'method="GET",route="/api/pins/{pin_id}"'
        assert samples[f'lorepin_http_requests_total{{{route},status="200"}}'] == 30
        assert samples[f'lorepin_http_requests_total{{{route},status="404"}}'] == 1
        assert samples[f'lorepin_http_request_duration_seconds_count{{{route},status="200"}}'] == 30
        assert samples['lorepin_errors_total{category="client"}'] == 1
        assert samples["lorepin_db_pool_size"] == 8
        assert samples["lorepin_db_pool_in_use"] == 0  # every handler gave its connection back
        assert not [k for k in samples if "/api/pins/1" in k]  # templates, never raw paths
    finally:
        stop(server)
        shutil.rmtree(values, ignore_errors=True)


def test_every_line_is_json_and_names_its_request(database_url: str) -> None:
    """As in the image: uvicorn's own lines and the CMS's are JSON, and the access line of
    a request carries the id the proxy gave it (an id that could break out of an SQL
    comment is dropped, not logged)."""
    migrate(database_url)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lorepin_cms.serve"],
        env={**os.environ, "DATABASE_URL": database_url, "WEB_CONCURRENCY": "1",
             "LOREPIN_CMS_HOST": "127.0.0.1", "LOREPIN_CMS_PORT": str(port),
             "LOREPIN_METRICS": "off", "LOREPIN_ENV_NAME": "staging",
             "LOREPIN_COLOUR": "blue", "LOREPIN_VERSION": "1.2.3"},
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while send(http.client.HTTPConnection("127.0.0.1", port), "GET", "/healthz") != 200:
            assert server.poll() is None, f"the CMS exited: {server.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "the CMS did not answer within 30 s"
            time.sleep(0.2)
        token = grant(database_url)
        for rid in ("req-7f3a", "x*/ DROP TABLE pins; /*"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            headers = {"content-type": "application/json", "x-request-id": rid, **bearer(token)}
            conn.request("POST", "/api/pins", body=json.dumps(PIN), headers=headers)
            assert conn.getresponse().status == 201
    finally:
        stop(server)
    lines = [json.loads(line) for line in server.communicate()[1].splitlines() if line]
    assert {line["logger"] for line in lines} >= {"uvicorn.error", "lorepin_cms.access"}
    posts = [line for line in lines if line["event"] == "request" and line["method"] == "POST"]
    assert [(p["request_id"], p["route"], p["status"]) for p in posts] == [
        ("req-7f3a", "/api/pins", 201),
        (None, "/api/pins", 201),
    ]
    assert {(p["service"], p["env"], p["colour"], p["version"]) for p in posts} == {
        ("cms", "staging", "blue", "1.2.3")
    }
    assert all(p["level"] == "info" and p["duration_ms"] > 0 for p in posts)
