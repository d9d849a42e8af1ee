"""Invoke entry point: assembles the toolkit's collections (`invoke --list`)."""

from invoke.collection import Collection

from lorepin_tasks import db, stack

ns = Collection()
for t in stack.ns.tasks.values():  # the everyday tasks stay top-level: `invoke up`
    ns.add_task(t)
ns.add_collection(db.ns)
