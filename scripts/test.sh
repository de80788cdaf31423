#!/usr/bin/env bash
# The one test command: install everything (idempotent), then lint, type-check
# and run the test suite. Arguments are passed through to pytest.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash scripts/bootstrap.sh test

BIN="$REPO_ROOT/.venv/bin"

lint_paths=()
for dir in fdfsmount harness tests bench scripts; do
    [[ -d "$dir" ]] && lint_paths+=("$dir")
done

echo "== ruff check ${lint_paths[*]}"
"$BIN/ruff" check "${lint_paths[@]}"


# Test clusters, mounts and temp files live in a directory of this run on a RAM
# file system when one has room: a storage's store path holds 65,536 data
# directories, which a disk takes seconds to create and remove. TMPDIR (which
# tempfile, pytest and the harness follow) points there; the directory goes at
# the end. Set FDFS_TEST_TMPDIR to choose another parent (e.g. /tmp).
run_tmp=""
pick_tmp_parent() {
    if [[ -n "${FDFS_TEST_TMPDIR:-}" ]]; then
        printf '%s\n' "$FDFS_TEST_TMPDIR"
        return
    fi
    local free_kib
    free_kib="$(df -P -k /dev/shm 2>/dev/null | awk 'NR == 2 && $1 == "tmpfs" { print $4 }')"
    if [[ -n "$free_kib" && -w /dev/shm && "$free_kib" -ge $((4 * 1024 * 1024)) ]]; then
        echo /dev/shm
    else
        echo /tmp
    fi
}
# Short names: unix socket paths under it must stay within 108 bytes.
run_tmp="$(mktemp -d -p "$(pick_tmp_parent)" fdfs-tests.XXXXXX)"

# Files over 1 MB that the run leaves in /tmp or in its own directory are
# reported and fail it: tests delete what they write (pytest keeps only failed
# tests' temp directories, under the run's directory).
# The checkout itself (which may be under /tmp) is not looked at: its caches are
# its own. (find fails when a file vanishes under it; what it listed is right.)
tmp_snapshot() {
    { find /tmp "$run_tmp" -xdev -path "$REPO_ROOT" -prune -o -type f -size +1M -print \
        2>/dev/null || true; } | sort
}
tmp_before="$(mktemp -p "$run_tmp")"
status=0
cleanup() {
    # A passing run leaves nothing. A failing one keeps its directory, where pytest
    # kept the failed tests' temp directories, and says so. A directory something
    # is still mounted under is never removed (the tests unmount what they mount).
    if grep -qs " ${run_tmp}/" /proc/mounts; then
        echo "== mounts left under $run_tmp; not removing it" >&2
    elif [[ $status -eq 0 ]]; then
        rm -rf -- "$run_tmp"
    else
        echo "== the failed tests' files are in $run_tmp (rm -rf it when done)" >&2
    fi
}
trap cleanup EXIT
tmp_snapshot >"$tmp_before"

# The run starts hundreds of Python processes (workers, servers, daemons, the
# CLI). Where PYTHONDONTWRITEBYTECODE is set, each would compile the project's
# modules again, and each worker rewrite every test module: the run writes
# bytecode (into the checkout's __pycache__ directories, which git ignores).
unset PYTHONDONTWRITEBYTECODE

# Four workers on two cores: the tests wait on servers and timeouts more than
# they use the CPU. A worker takes a module at a time, so module fixtures such as
# a mount are set up once, except in the modules of independent cluster tests,
# which are shared out test by test; the costliest units go first
# (tests/conftest.py, costs measured in tests/test_costs.json). `-n 0` among the
# arguments runs everything in one process.
workers=(-n "${PYTEST_WORKERS:-4}" --dist loadscope --no-loadscope-reorder)
echo "== pytest ${workers[*]} $*"
started=$SECONDS
echo "== temporary files of the run: $run_tmp"
# mypy checks meanwhile (the tests wait on servers more than they use the CPU);
# its report follows the tests'.
mypy_log="$run_tmp/mypy.log"
"$BIN/mypy" >"$mypy_log" 2>&1 &
mypy_pid=$!
TMPDIR="$run_tmp" "$BIN/python" -m pytest --basetemp "$run_tmp/t" "${workers[@]}" "$@" ||
    status=$?
elapsed=$((SECONDS - started))
echo "== mypy"
mypy_status=0
wait "$mypy_pid" || mypy_status=$?
cat "$mypy_log"
rm -f "$mypy_log"
if [[ $mypy_status -ne 0 && $status -eq 0 ]]; then
    status=$mypy_status
fi

left="$(tmp_snapshot | comm -13 "$tmp_before" -)"
if [[ -n "$left" && $status -eq 0 ]]; then
    echo "== files over 1 MB left by the run:"
    echo "$left"
    status=1
fi
printf '== wall time: pytest %dm%02ds, whole command %dm%02ds (exit %d)\n' \
    $((elapsed / 60)) $((elapsed % 60)) $((SECONDS / 60)) $((SECONDS % 60)) "$status"
# pytest's "no tests collected" (5) is a failure here too: a run must test something.
exit "$status"
