"""The CMS's settings from its environment."""

from __future__ import annotations

import pytest

from lorepin_cms.config import Config, ConfigError, database_url


def test_request_bodies_are_limited_to_one_mib_unless_configured() -> None:
    assert Config.from_env({}).max_body_bytes == 1024 * 1024
    assert Config.from_env({"LOREPIN_MAX_BODY_BYTES": "4096"}).max_body_bytes == 4096


@pytest.mark.parametrize("value", ["0", "-1", "1MB", "1.5"])
def test_a_body_limit_that_is_not_a_positive_whole_number_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="LOREPIN_MAX_BODY_BYTES"):
        Config.from_env({"LOREPIN_MAX_BODY_BYTES": value})


def test_sixteen_database_connections_per_process_unless_configured() -> None:
    assert Config.from_env({}).db_pool_size == 16
    assert Config.from_env({"LOREPIN_DB_POOL_SIZE": "4"}).db_pool_size == 4
    with pytest.raises(ConfigError, match="LOREPIN_DB_POOL_SIZE"):
        Config.from_env({"LOREPIN_DB_POOL_SIZE": "0"})


def test_one_database_host_is_asked_as_it_is() -> None:
    url = database_url({"LOREPIN_DB_HOST": "db", "LOREPIN_DB_PASSWORD": "x"})
    assert (url.host, dict(url.query)) == ("db", {})


def test_several_hosts_are_asked_for_the_one_that_takes_writes() -> None:
    url = database_url({"LOREPIN_DB_HOST": "db,db-replica", "LOREPIN_DB_PASSWORD": "x"})
    assert url.host == "db,db-replica"
    assert dict(url.query) == {"target_session_attrs": "read-write", "connect_timeout": "3"}


def test_metrics_are_on_unless_switched_off_and_nothing_else_is_a_switch() -> None:
    assert Config.from_env({}).metrics is True
    assert Config.from_env({"LOREPIN_METRICS": "off"}).metrics is False
    assert Config.from_env({"LOREPIN_METRICS": " ON "}).metrics is True
    with pytest.raises(ConfigError, match="LOREPIN_METRICS must be on or off, got 'no'"):
        Config.from_env({"LOREPIN_METRICS": "no"})


def test_the_pool_wait_and_the_statement_timeouts_are_configured_or_defaults() -> None:
    default = Config.from_env({})
    assert (default.db_pool_timeout, default.db_statement_timeout_ms,
            default.db_idle_in_transaction_timeout_ms) == (5, 15_000, 30_000)  # fmt: skip
    given = Config.from_env({"LOREPIN_DB_POOL_TIMEOUT": "2",
                             "LOREPIN_DB_STATEMENT_TIMEOUT_MS": "500",
                             "LOREPIN_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": "9000"})  # fmt: skip
    assert (given.db_pool_timeout, given.db_statement_timeout_ms,
            given.db_idle_in_transaction_timeout_ms) == (2, 500, 9000)  # fmt: skip
    with pytest.raises(ConfigError, match="LOREPIN_DB_STATEMENT_TIMEOUT_MS"):
        Config.from_env({"LOREPIN_DB_STATEMENT_TIMEOUT_MS": "soon"})
