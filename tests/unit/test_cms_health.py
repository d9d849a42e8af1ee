"""/healthz says the process is alive whatever else is busy or down."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from lorepin_cms.app import create_app
from lorepin_cms.config import Config
from tests.conftest import ROOT


def test_healthz_answers_while_every_worker_thread_is_busy() -> None:
    config = Config(
        database_url=make_url("postgresql+psycopg://lorepin:x@127.0.0.1:9/lorepin"),
        version="9.9.9",
        git_revision="abc",
        migrations_dir=ROOT / "migrations",
    )
    with TestClient(create_app(config)) as client, ThreadPoolExecutor(1) as caller:
        assert client.portal is not None
        limiter = client.portal.call(anyio.to_thread.current_default_thread_limiter)
        borrowers = [object() for _ in range(int(limiter.total_tokens))]
        try:
            for borrower in borrowers:  # as if every thread were stuck in a slow query
                client.portal.call(limiter.acquire_on_behalf_of, borrower)
            health = caller.submit(client.get, "/healthz")
            assert health.result(timeout=5).json() == {"status": "alive"}
        finally:
            for borrower in borrowers:
                client.portal.call(limiter.release_on_behalf_of, borrower)
