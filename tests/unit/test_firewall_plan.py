"""The host firewall's ruleset and the refusals that keep SSH reachable."""

from __future__ import annotations

import pytest

from lorepin_tasks.plans import firewall as plan

WALL = plan.Firewall(env="production", public_ports=(443, 80), admin_networks=("10.0.0.0/8",
                     "2001:db8::/32"), ssh_port=2222)  # fmt: skip


def test_the_ruleset_opens_the_public_ports_and_ssh_to_the_admin_networks_only() -> None:
    rules = plan.ruleset(WALL)
    lines = [line.strip() for line in rules.splitlines()]
    # Replaced whole in one transaction: made (so the delete cannot fail), deleted, made anew.
    assert lines[1:4] == ["table inet lorepin {}", "delete table inet lorepin",
                          "table inet lorepin {"]  # fmt: skip
    assert "type filter hook input priority filter; policy drop;" in lines
    assert "tcp dport { 80, 443 } accept" in lines
    assert "ip saddr { 10.0.0.0/8 } tcp dport 2222 accept" in lines
    assert "ip6 saddr { 2001:db8::/32 } tcp dport 2222 accept" in lines
    # DOCKER-USER's job: a published port passes only when its original port is public.
    assert "meta l4proto tcp ct status dnat ct original proto-dst { 80, 443 } accept" in lines
    assert sum("tcp dport 2222" in line for line in lines) == 2  # nowhere else


@pytest.mark.parametrize(
    ("wall", "client", "says"),
    [
        (plan.Firewall("staging", (443,), ()), None, "no firewall.admin_networks"),
        (plan.Firewall("staging", (22, 443), ("10.0.0.0/8",)), None, "SSH would be open to all"),
        (
            WALL,
            "192.168.1.7 50000 10.0.0.2 2222",
            "you are connected over SSH from 192.168.1.7, which is not in",
        ),
        (WALL, "not-an-address 1 2 3", "cannot tell who you are"),
        (
            WALL,
            "10.1.1.5 50000 10.1.1.1 22",
            "connected to SSH on port 22, and the ruleset opens SSH on port 2222 only",
        ),
    ],
)
def test_a_ruleset_that_would_lock_ssh_out_is_refused(
    wall: plan.Firewall, client: str | None, says: str
) -> None:
    refused = plan.refusal(wall, client)
    assert refused is not None and says in refused


def test_an_operator_inside_the_admin_networks_may_apply_it() -> None:
    assert plan.refusal(WALL, "10.1.2.3 50000 10.0.0.2 2222") is None
    assert plan.refusal(WALL, "2001:db8::7 50000 2001:db8::1 2222") is None
    assert plan.refusal(WALL, "::ffff:10.1.1.5 50000 ::ffff:10.0.0.2 2222") is None
    assert plan.refusal(WALL, None) is None  # not over SSH: at the console
