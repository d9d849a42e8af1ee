#!/usr/bin/env bash
# On-call entry point: put an environment's database back as a backup holds it.
#   scripts/restore.sh ENV BACKUP_ID [--yes] [--dry-run] [--break-glass REASON]
# Runs exactly what `invoke backup.restore` runs (the CMS stops, a safety backup is
# taken, the data is replaced in one transaction that checks the rows before it commits,
# the CMS starts again; audit record and notification), with nothing but this checkout,
# Docker and the toolkit's .venv. Pick the backup with `invoke backup.list --env ENV`.
# See docs/backups.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 2 ] || [[ $1 == -* ]] || [[ $2 == -* ]]; then
  echo "usage: $0 ENV BACKUP_ID [--yes] [--dry-run] [--break-glass REASON]   (list: invoke backup.list --env ENV)" >&2
  exit 2
fi
env_name=$1
id=$2
shift 2
[ -x "$ROOT/.venv/bin/invoke" ] || { echo "error: no .venv: run scripts/bootstrap.sh" >&2; exit 2; }
cd "$ROOT"
exec "$ROOT/.venv/bin/invoke" backup.restore --env "$env_name" --from "$id" "$@"
