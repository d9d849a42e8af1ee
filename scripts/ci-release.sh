#!/usr/bin/env bash
# The release workflow's step (.github/workflows/release.yml), runnable by hand the same
# way: `invoke release` (the next version, changelog, tag, images), then the release
# commit and its tag pushed. Usage: scripts/ci-release.sh [none|rc|beta]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pre=${1:-none}
case "$pre" in
  none) flags=() ;;
  rc | beta) flags=(--pre "$pre") ;;
  *) echo "error: the pre-release kind must be none, rc or beta, got '$pre'" >&2; exit 2 ;;
esac
.venv/bin/invoke release --yes "${flags[@]}"
tag=$(git describe --tags --exact-match HEAD)
git push origin "HEAD:$(git rev-parse --abbrev-ref HEAD)" "refs/tags/$tag"
