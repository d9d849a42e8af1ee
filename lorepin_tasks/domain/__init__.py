"""The toolkit's pure domain rules: versions from commits, changelogs, revisions.

No I/O here: the runtime adapters read git and Docker and hand these plain data.
"""
