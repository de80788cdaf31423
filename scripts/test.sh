#!/usr/bin/env bash
# The one test command: install everything (idempotent), then lint, type-check
# and run the test suite. Arguments are passed through to pytest.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash scripts/bootstrap.sh test

BIN="$REPO_ROOT/.venv/bin"

lint_paths=()
for dir in fdfsmount harness tests bench; do
    [[ -d "$dir" ]] && lint_paths+=("$dir")
done

echo "== ruff check ${lint_paths[*]}"
"$BIN/ruff" check "${lint_paths[@]}"

echo "== mypy"
"$BIN/mypy"

echo "== pytest $*"
exec "$BIN/python" -m pytest "$@"
