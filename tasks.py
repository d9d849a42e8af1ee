"""Invoke entry point: assembles the toolkit's collections (`invoke --list`)."""

import sys
from pathlib import Path

from invoke.collection import Collection

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.settings import check_project_file
from lorepin_tasks.tasks import (
    activity,
    audit,
    backup,
    ci,
    cms,
    data,
    db,
    deploy,
    dr,
    e2e,
    feature,
    images,
    incident,
    logs,
    monitor,
    perf,
    release,
    repo,
    secrets,
    security,
    stack,
    staging,
    swarm,
)

try:  # before Invoke reads it: a broken invoke.yaml is one line, not a traceback
    check_project_file(Path(__file__).resolve().parent / "invoke.yaml")
except ConfigError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(int(exc.exit_code))

ns = Collection()
for t in (
    *stack.ns.tasks.values(),
    release.version,
    deploy.rollback,
    deploy.scale,
    monitor.errors,
    perf.perf,
    e2e.e2e,
):  # top
    if t is not stack.logs:  # `invoke logs` is the logs collection's default
        ns.add_task(t)
logs.ns.add_task(stack.logs, name="show", default=True)
ns.add_collection(logs.ns)
ns.add_collection(backup.ns)
ns.add_collection(dr.ns)
ns.add_collection(db.ns)
ns.add_collection(data.ns)
ns.add_collection(staging.ns)
ns.add_collection(swarm.ns)
ns.add_collection(feature.ns)
ns.add_collection(release.ns)
ns.add_collection(images.ns)
ns.add_collection(images.artifacts)
ns.add_collection(deploy.ns)
ns.add_collection(audit.ns)
ns.add_collection(activity.ns)
ns.add_collection(cms.ns)
ns.add_collection(ci.ns)
ns.add_collection(repo.ns)
ns.add_collection(secrets.ns)
ns.add_collection(security.ns)
ns.add_collection(monitor.ns)
ns.add_collection(incident.ns)
