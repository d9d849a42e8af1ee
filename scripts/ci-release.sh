#!/usr/bin/env bash
# The release workflow's step (.github/workflows/release.yml), runnable by hand the same
# way: `invoke release` (the next version, changelog, tag, images), then the release
# commit and its tag pushed together (--atomic). Usage: scripts/ci-release.sh none|rc|beta
# (the kind is required: an empty call is no way to cut a release).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pre=${1:-}
case "$pre" in
  none) flags=() ;;
  rc | beta) flags=(--pre "$pre") ;;
  *) echo "error: say what to cut: scripts/ci-release.sh none|rc|beta (got '$pre')" >&2; exit 2 ;;
esac
.venv/bin/invoke release --yes "${flags[@]}"
tag=$(git describe --tags --exact-match HEAD)
# Both or neither: a tag on a commit the branch never got would be a release of nothing.
git push --atomic origin "HEAD:refs/heads/${LOREPIN_RELEASE_BRANCH:-main}" "refs/tags/$tag"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  echo "version=${tag#v}" >>"$GITHUB_OUTPUT"  # for the staging deploy after it
fi
