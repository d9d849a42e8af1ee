#!/usr/bin/env bash
# The CI dashboard's history, kept on the branch `ci-history` (one JSON line per run of
# main, history.jsonl, and nothing else on that branch): the file is fetched, this run
# appended (`invoke ci.record`, with the arguments given), the page made
# (`invoke ci.report`, build/ci/dashboard.html), and the branch pushed. Git plumbing
# only: the work tree and the checked-out branch stay as they are.
# Usage: scripts/ci-history.sh [ci.record's flags, e.g. --run 1234]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
branch=ci-history
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
parent=""
if git fetch --quiet --depth=1 origin "+refs/heads/$branch:refs/remotes/origin/$branch" 2>/dev/null; then
  parent=$(git rev-parse "refs/remotes/origin/$branch")
  git show "$parent:history.jsonl" >"$work/history.jsonl" 2>/dev/null || true
fi
.venv/bin/invoke ci.record --history "$work/history.jsonl" "$@"
.venv/bin/invoke ci.report --history "$work/history.jsonl" --out build/ci/dashboard.html
cp "$work/history.jsonl" build/ci/history.jsonl
blob=$(git hash-object -w "$work/history.jsonl")
tree=$(printf '100644 blob %s\thistory.jsonl\n' "$blob" | git mktree)
commit=$(git -c user.name=lorepin-ci -c user.email=ci@lorepin.invalid commit-tree "$tree" \
  ${parent:+-p "$parent"} -m "ci history: run ${GITHUB_RUN_ID:-by hand}")
git push --quiet origin "$commit:refs/heads/$branch"
