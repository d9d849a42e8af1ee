"""Run the CMS as its image does: uvicorn's workers on :8000 and, beside them, the metrics of
all of them on the metrics port (9464), which only the environment's own network reaches.

The `local` environment sets LOREPIN_RELOAD_DIRS (colon-separated): one worker, restarted
when a file there changes, with the same metrics port, so local can be monitored too.

prometheus-client's multiprocess mode: every worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR (a tmpfs, emptied here at start), and this process adds them up
when Prometheus scrapes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from lorepin_cms import logs
from lorepin_cms.config import ConfigError, positive_int, switch

# The metrics port: inside the environment's network only. (Not imported from
# lorepin_cms.metrics: its values must first be created by the workers, not here.)
PORT = 9464


def main() -> None:
    try:
        workers = positive_int(os.environ, "WEB_CONCURRENCY", 1)
        port = positive_int(os.environ, "LOREPIN_CMS_PORT", 8000)
        metrics_port = positive_int(os.environ, "LOREPIN_METRICS_PORT", PORT)
        metrics = switch(os.environ, "LOREPIN_METRICS")
        reload_dirs = [d for d in os.environ.get("LOREPIN_RELOAD_DIRS", "").split(":") if d]
        level = os.environ.get("LOREPIN_LOG_LEVEL", "info").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"LOREPIN_LOG_LEVEL must be debug, info, warning or error, got {level.lower()!r}"
            )
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    # The image sets it (a tmpfs of the container's own); a run by hand gets one of its own.
    directory = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp()))
    shutil.rmtree(directory, ignore_errors=True)  # a restart's old values are not this run's
    directory.mkdir(parents=True)
    host = os.environ.get("LOREPIN_CMS_HOST", "0.0.0.0")  # noqa: S104 (the container's)
    if metrics:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(metrics_port, addr=host, registry=registry)
    uvicorn.run(
        "lorepin_cms.app:create_app",
        factory=True,
        host=host,
        port=port,
        proxy_headers=True,
        workers=1 if reload_dirs else workers,
        reload=bool(reload_dirs),
        reload_dirs=reload_dirs or None,
        log_config=logs.config(level),  # JSON lines, in every worker
        access_log=False,  # lorepin_cms.logs writes one, with the request id
    )


if __name__ == "__main__":
    main()
