"""The host firewall of a server environment as an nftables ruleset. Pure.

One table of the toolkit's own, `inet lorepin`, replaced whole in one transaction (nft
applies a file atomically: the old rules hold until the new ones are in):

- input: established traffic, loopback and ICMP pass; the proxy's ports (the environment's
  http_port and https_port) are public; SSH only from `firewall.admin_networks`; everything
  else is dropped and counted.
- forward: what Docker publishes. A connection Docker's DNAT sends to a container is let
  through only when its original port is one of the public ones, which is what Docker's
  `DOCKER-USER` chain is for (`ct original proto-dst`: the port before the DNAT). The
  containers' own traffic, and replies, pass. Docker's own chains are left alone.

A ruleset that would lock SSH out (no admin network, or one that leaves out the address
the operator is connected from) is refused before anything is applied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from lorepin_tasks.errors import ConfigError, Refused

TABLE = "lorepin"


@dataclass(frozen=True)
class Firewall:
    env: str
    public_ports: tuple[int, ...]
    admin_networks: tuple[str, ...]
    ssh_port: int = 22


def _elements(items: Iterable[object]) -> str:
    return ", ".join(str(i) for i in items)


def refusal(fw: Firewall, ssh_connection: str | None) -> str | None:
    """Why the ruleset must not be applied (None: it may): it would lock SSH out, for
    everyone or for the operator applying it (`ssh_connection`: their session's
    SSH_CONNECTION, "client-address client-port server-address server-port")."""
    if not fw.admin_networks:
        return (f"environment '{fw.env}' has no firewall.admin_networks in invoke.yaml: the "
                "ruleset would drop every SSH connection, yours too")  # fmt: skip
    if fw.ssh_port in fw.public_ports:
        return f"the SSH port {fw.ssh_port} is one of the public ports: SSH would be open to all"
    if ssh_connection:
        client, _, rest = ssh_connection.strip().partition(" ")
        server_port = rest.split(" ")[2] if len(rest.split(" ")) == 3 else ""
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return f"SSH_CONNECTION names {client[:60]!r}, not an address: cannot tell who you are"
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # ::ffff:10.1.1.5 is 10.1.1.5
        if server_port and server_port != str(fw.ssh_port):
            return (f"you are connected to SSH on port {server_port[:6]}, and the ruleset opens "
                    f"SSH on port {fw.ssh_port} only (firewall.ssh_port): it would lock you "
                    "out")  # fmt: skip
        if not any(address in ipaddress.ip_network(n) for n in fw.admin_networks):
            return (f"you are connected over SSH from {address}, which is not in "
                    f"firewall.admin_networks ({_elements(fw.admin_networks)}): the ruleset "
                    "would lock you out")  # fmt: skip
    return None


def ruleset(fw: Firewall) -> str:
    """The nft script: the table made (so the delete never fails), deleted, made anew."""
    if not fw.public_ports:
        raise ConfigError(f"environment '{fw.env}' publishes no port: nothing to open")
    v4 = [n for n in fw.admin_networks if ipaddress.ip_network(n).version == 4]
    v6 = [n for n in fw.admin_networks if ipaddress.ip_network(n).version == 6]
    ports = "{ " + _elements(sorted(set(fw.public_ports))) + " }"
    ssh = [f"        ip saddr {{ {_elements(v4)} }} tcp dport {fw.ssh_port} accept"] if v4 else []
    ssh += [f"        ip6 saddr {{ {_elements(v6)} }} tcp dport {fw.ssh_port} accept"] if v6 else []
    return "\n".join(
        [
            f"# The host firewall of environment '{fw.env}' (invoke security.firewall).",
            f"table inet {TABLE} {{}}",
            f"delete table inet {TABLE}",
            f"table inet {TABLE} {{",
            "    chain input {",
            "        type filter hook input priority filter; policy drop;",
            "        ct state invalid drop",
            "        ct state established,related accept",
            '        iifname "lo" accept',
            "        meta l4proto { icmp, ipv6-icmp } accept",
            f"        tcp dport {ports} accept",
            *ssh,
            '        counter comment "dropped: not public, not SSH from an admin network"',
            "    }",
            "    chain forward {",
            "        type filter hook forward priority filter; policy accept;",
            "        ct state established,related accept",
            f"        meta l4proto tcp ct status dnat ct original proto-dst {ports} accept",
            '        ct status dnat counter drop comment "a published port that is not public"',
            "    }",
            "}",
            "",
        ]
    )


def apply(path: str) -> list[list[str]]:
    """Check the file, then apply it (one transaction)."""
    return [["nft", "--check", "--file", path], ["nft", "--file", path]]


LIST = ["nft", "--json", "list", "table", "inet", TABLE]


def refuse_remote(env: str, remote: str | None) -> None:
    if remote:
        raise Refused(
            f"environment '{env}' runs on {remote}: apply its ruleset there, as root "
            f"(`invoke security.firewall --env {env} > lorepin.nft`, then `nft -f lorepin.nft`)"
        )
