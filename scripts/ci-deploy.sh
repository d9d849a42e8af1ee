#!/usr/bin/env bash
# The deploy workflows' step (.github/workflows/deploy-*.yml), runnable by hand the same
# way: `invoke deploy` of a version to a server environment, the newest release tag when
# none is given. Usage: scripts/ci-deploy.sh ENV [VERSION]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
env_name=${1:?usage: scripts/ci-deploy.sh ENV [VERSION]}
version=${2:-}
if [ -z "$version" ]; then  # the newest final release (pre-releases are named by hand)
  version=$(git tag --list 'v[0-9]*' --sort=-v:refname | { grep -v -- - || true; } | head -n 1)
  [ -n "$version" ] || { echo "error: no release tag to deploy (run the release workflow first)" >&2; exit 2; }
fi
exec .venv/bin/invoke deploy --env "$env_name" --version "$version" --yes
