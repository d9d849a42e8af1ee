"""pgbouncer's metrics for Prometheus on Swarm: Debian's prometheus-pgbouncer-exporter (1.7),
adapted to the pgbouncer it watches (compose/swarm.yaml's `pgbouncer-exporter`).

Debian's exporter predates pgbouncer 1.8, which renamed SHOW STATS' columns: its
`total_requests` is gone, and every scrape would fail on it. Here its collectors read the
names pgbouncer 1.18 has, and the pools' server connections too (in use, idle: what
`db.report` shows). The password is the CMS role's (a stats user in pgbouncer), from its
secret file into a passfile on the task's tmpfs; libpq reads it there, so it is in no
environment variable or argument.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from prometheus_pgbouncer_exporter import cli, collectors

STATS = {
    "total_query_count": ("queries_total", "SQL queries pooled by pgbouncer"),
    "total_xact_count": ("transactions_total", "SQL transactions pooled by pgbouncer"),
    "total_received": ("received_bytes_total", "Bytes received by pgbouncer"),
    "total_sent": ("sent_bytes_total", "Bytes sent by pgbouncer"),
    "total_query_time": ("query_microseconds_total", "Microseconds spent running queries"),
    "total_wait_time": ("wait_microseconds_total", "Microseconds clients waited for a server"),
}
POOLS = {
    "cl_active": ("active_clients", "Client connections linked to a server connection"),
    "cl_waiting": ("waiting_clients", "Client connections waiting for a server connection"),
    "sv_active": ("active_servers", "Server connections linked to a client"),
    "sv_idle": ("idle_servers", "Server connections idle and ready for a client"),
    "maxwait": ("max_wait_seconds", "How long the oldest waiting client has waited"),
}


def main() -> None:
    secret = Path(os.environ.get("LOREPIN_DB_PASSWORD_FILE", "/run/secrets/cms_db_password"))
    try:
        password = secret.read_text().strip()
    except OSError as exc:
        sys.exit(f"lorepin-pgbouncer-exporter: cannot read {secret}: {exc.strerror}")
    passfile = Path("/tmp/pgpass")  # noqa: S108 (the task's own tmpfs)
    passfile.touch(mode=0o600)
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    passfile.write_text(f"*:*:pgbouncer:*:{escaped}\n")
    os.environ["PGPASSFILE"] = str(passfile)
    collectors.StatsCollector.metrics = STATS
    collectors.PoolsCollector.metrics = POOLS
    cli.main()


if __name__ == "__main__":
    main()
