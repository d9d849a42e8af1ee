"""`nox -s lint`'s check of the repository's secrets/: every file age-encrypted, each a
secret the toolkit places (secrets/<env>/<NAME>.age). A plain-text secret fails here,
before it reaches a commit. lorepin_tasks/plans/secret_store.py."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "cms")]

from lorepin_tasks.plans.secret_store import problems  # noqa: E402

root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
if not root.is_dir():
    sys.exit(f"error: {root} is not a directory")
found = problems(root)
for problem in found:
    print(f"error: {problem}", file=sys.stderr)
sys.exit(1 if found else 0)
