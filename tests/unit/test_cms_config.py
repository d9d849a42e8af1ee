"""The CMS's database address: one host, or several of which it keeps the writable one."""

from __future__ import annotations

from lorepin_cms.config import database_url


def test_one_host_is_asked_as_it_is() -> None:
    url = database_url({"LOREPIN_DB_HOST": "db", "LOREPIN_DB_PASSWORD": "x"})
    assert (url.host, dict(url.query)) == ("db", {})


def test_several_hosts_are_asked_for_the_one_that_takes_writes() -> None:
    url = database_url({"LOREPIN_DB_HOST": "db,db-replica", "LOREPIN_DB_PASSWORD": "x"})
    assert url.host == "db,db-replica"
    assert dict(url.query) == {"target_session_attrs": "read-write", "connect_timeout": "3"}
