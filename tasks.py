"""Invoke entry point: assembles the toolkit's collections (`invoke --list`)."""

from invoke.collection import Collection

from lorepin_tasks import stack

ns = Collection()
for t in stack.ns.tasks.values():
    ns.add_task(t)
