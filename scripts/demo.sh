#!/usr/bin/env bash
# The one demo command: install what the product needs (idempotent), then run
# the demo. Arguments are passed through to `python -m fdfsmount.demo`.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash scripts/bootstrap.sh

exec "$REPO_ROOT/.venv/bin/python" -m fdfsmount.demo "$@"
