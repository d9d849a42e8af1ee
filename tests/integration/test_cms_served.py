"""The CMS served by uvicorn, as in its image, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

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
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        listener.close()


def send(conn: http.client.HTTPConnection, method: str, path: str, body: str = "") -> int | str:
    """The response's status, or the name of the error that stood in for one."""
    try:
        conn.request(method, path, body=body or None, headers={"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError as exc:
        return type(exc).__name__


def test_sixty_four_concurrent_readers_are_all_served(served: Address) -> None:
    """More clients than threads and database connections: all served, none refused."""
    assert send(http.client.HTTPConnection(*served), "POST", "/api/pins", json.dumps(PIN)) == 201
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
