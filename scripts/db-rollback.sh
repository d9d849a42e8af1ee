#!/usr/bin/env bash
# On-call entry point: roll an environment's schema back to a revision.
#   scripts/db-rollback.sh ENV REVISION [--yes] [--dry-run]
# Runs exactly what `invoke db.downgrade` runs (same lock, log, backup policy and
# confirmation), with nothing but this checkout, Docker and the toolkit's .venv.
# See docs/runbooks/schema-rollback.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 2 ]; then
  echo "usage: $0 ENV REVISION [--yes] [--dry-run]   (revisions: invoke db.history --env ENV)" >&2
  exit 2
fi
env_name=$1 revision=$2
shift 2
[ -x "$ROOT/.venv/bin/invoke" ] || { echo "error: no .venv: run scripts/bootstrap.sh" >&2; exit 2; }
cd "$ROOT"
exec "$ROOT/.venv/bin/invoke" db.downgrade --env "$env_name" --to "$revision" "$@"
