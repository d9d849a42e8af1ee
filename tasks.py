"""Invoke entry point: assembles the toolkit's collections (`invoke --list`)."""

from invoke.collection import Collection

from lorepin_tasks.tasks import db, feature, images, release, stack

ns = Collection()
for t in (*stack.ns.tasks.values(), release.version):  # everyday tasks stay top-level
    ns.add_task(t)
ns.add_collection(db.ns)
ns.add_collection(feature.ns)
ns.add_collection(release.ns)
ns.add_collection(images.ns)
ns.add_collection(images.artifacts)
