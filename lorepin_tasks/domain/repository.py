"""What git says about the checkout, as plain data for the release and feature plans."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RepoFacts:
    branch: str | None  # None when HEAD is detached
    dirty: bool  # uncommitted or untracked files
    upstream: str | None
    behind: int  # commits the branch lacks from its upstream (as last fetched)
    head: str
    head_subject: str
    head_time: str  # ISO 8601 commit time
    user_email: str | None
    sign_tags: bool  # tag.gpgSign
