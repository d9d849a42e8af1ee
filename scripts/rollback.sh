#!/usr/bin/env bash
# On-call entry point: put an environment back on the release before the current one.
#   scripts/rollback.sh ENV [VERSION] [--yes] [--dry-run]
# Runs exactly what `invoke rollback` runs (same locks, checks, audit record and
# notification), with nothing but this checkout, Docker and the toolkit's .venv. The kept
# release comes back in about a second; an older one starts from its image.
# See docs/runbooks/rollback.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 1 ] || [[ $1 == -* ]]; then
  echo "usage: $0 ENV [VERSION] [--yes] [--dry-run]   (history: invoke deploy.history --env ENV)" >&2
  exit 2
fi
env_name=$1
shift
to=()
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  to=(--to "$1")
  shift
fi
[ -x "$ROOT/.venv/bin/invoke" ] || { echo "error: no .venv: run scripts/bootstrap.sh" >&2; exit 2; }
cd "$ROOT"
exec "$ROOT/.venv/bin/invoke" rollback --env "$env_name" "${to[@]}" "$@"
