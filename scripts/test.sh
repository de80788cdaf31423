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

# Files over 1 MB that the run leaves in /tmp are reported and fail it: tests
# delete what they write (pytest keeps only failed tests' temp directories).
tmp_snapshot() { find /tmp -xdev -type f -size +1M 2>/dev/null | sort; }
tmp_before="$(mktemp)"
trap 'rm -f "$tmp_before"' EXIT
tmp_snapshot >"$tmp_before"

# Test files are spread over two workers, one per core (a file's tests stay
# together, so module fixtures such as a mount are set up once); more workers
# starve the timing-sensitive cluster tests. `-n 0` among the arguments runs
# everything in one process.
workers=(-n "${PYTEST_WORKERS:-2}" --dist loadfile)
echo "== pytest ${workers[*]} $*"
started=$SECONDS
status=0
"$BIN/python" -m pytest "${workers[@]}" "$@" || status=$?
elapsed=$((SECONDS - started))

left="$(tmp_snapshot | comm -13 "$tmp_before" -)"
if [[ -n "$left" && $status -eq 0 ]]; then
    echo "== files over 1 MB left in /tmp by the run:"
    echo "$left"
    status=1
fi
printf '== wall time: pytest %dm%02ds, whole command %dm%02ds (exit %d)\n' \
    $((elapsed / 60)) $((elapsed % 60)) $((SECONDS / 60)) $((SECONDS % 60)) "$status"
# pytest's "no tests collected" (5) is a failure here too: a run must test something.
exit "$status"
