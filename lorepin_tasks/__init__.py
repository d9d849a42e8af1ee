"""LorePin delivery toolkit: Invoke tasks that build, run, migrate and ship the CMS."""
