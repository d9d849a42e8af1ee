"""What a checkout is at a point in time: its version, commit and commit time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Revision:
    version: str
    sha: str
    created: str  # the commit's time: the same commit builds the same image metadata


UNKNOWN = Revision(version="0.0.0-dev", sha="unknown", created="unknown")


def from_describe(described: str, sha: str, created: str) -> Revision:
    """`git describe --tags --match 'v[0-9]*' --dirty --always` -> a Revision.

    A tag gives `v1.2.3`, `v1.2.3-4-gabc1234` or `v1.2.3-dirty`; without a release tag
    `--always` gives the short sha (`abc1234[-dirty]`), shown as a 0.0.0 dev version.
    """
    if described.startswith("v") and described[1:2].isdigit():
        return Revision(version=described[1:], sha=sha, created=created)
    return Revision(version=f"0.0.0-dev+g{described}", sha=sha, created=created)
