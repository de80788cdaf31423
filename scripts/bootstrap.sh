#!/usr/bin/env bash
# Install what fdfsmount needs on a Debian machine: system packages, then a
# project virtualenv in .venv with the package installed in editable mode.
#
# Usage: bash scripts/bootstrap.sh [EXTRAS]    e.g. "test"; default: none.
#
# Idempotent and quick when nothing changed: system packages are checked with
# dpkg before apt runs, and pip runs only when pyproject.toml or the requested
# extras differ from the last successful install (a stamp file in .venv).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

EXTRAS="${1:-}"
VENV="$REPO_ROOT/.venv"
BASE_PIP=""  # set when the venv is made without pip (see ensure_venv)
# fuse3/libfuse3-dev/pkg-config/gcc/python3-dev: build and run pyfuse3.
# python3-venv: ensurepip for Debian's Python, where no other pip can install into it.
# attr: getfattr/setfattr for the xattr tests. systemd: systemd-analyze verify.
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv attr systemd)
# The test path also installs the programs the tests run on a mount: nginx (its
# smallest build), rsync, ImageMagick (identify) and file; fio verifies through
# the mount in the fault tests.
if [[ ",$EXTRAS," == *",test,"* ]]; then
    APT_PACKAGES+=(nginx-light rsync imagemagick file fio)
fi

log() { printf '[bootstrap] %s\n' "$*" >&2; }

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

install_system_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0

    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null; then
            sudo=(sudo -n)
        else
            log "missing system packages (${missing[*]}) and not root; install them first"
            exit 1
        fi
    fi
    log "installing system packages: ${missing[*]}"
    # apt/dpkg progress output is long; keep it in a file and show it on failure.
    local apt_log
    apt_log="$(mktemp)"
    # Packaged services (nginx) must not start and listen on every address: tests run
    # their own on 127.0.0.1. policy-rc.d answering 101 tells invoke-rc.d so.
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    local ok=1
    {
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends "${missing[@]}"
    } </dev/null >"$apt_log" 2>&1 || ok=""
    [[ -n $added_policy ]] && "${sudo[@]}" rm -f "$policy"
    if [[ -z $ok ]]; then
        tail -n 40 "$apt_log" >&2
        log "apt-get failed (full log: $apt_log)"
        exit 1
    fi
    rm -f "$apt_log"
}

python_ok() {
    "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

# The interpreter the venv is built on. The distribution's /usr/bin/python3 comes
# first: Debian builds it with profile-guided and link-time optimization and links
# it statically, where a default pyenv or source build loads libpython as a shared
# library built without them. The builtin servers spend about a quarter less CPU
# per small request on the former (docs/builtin-servers.md). FDFS_PYTHON picks one.
find_python() {
    local candidate
    if [[ -n "${FDFS_PYTHON:-}" ]]; then
        if python_ok "$FDFS_PYTHON"; then
            command -v "$FDFS_PYTHON"
            return 0
        fi
        log "FDFS_PYTHON=$FDFS_PYTHON is not a Python >= 3.11 with the venv module"
        exit 1
    fi
    for candidate in /usr/bin/python3 python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null && python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    log "no python3 >= 3.11 with the venv module found"
    exit 1
}

# A Python whose pip can install into the interpreter $1 (pip >= 22.3: --python);
# nothing if there is none (then the venv gets a pip of its own from ensurepip).
find_pip_for() {
    local candidate
    for candidate in "$1" /usr/bin/python3 python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -m pip --python "$1" --version >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
}

ensure_venv() {
    # A venv whose interpreter vanished (e.g. the base Python was removed) is rebuilt.
    if [[ -x "$VENV/bin/python" ]] && python_ok "$VENV/bin/python"; then
        return 0
    fi
    local python
    python="$(find_python)"
    log "creating $VENV with $python ($("$python" --version 2>&1))"
    rm -rf "$VENV"
    # A pip of its own is installed with the packages below, by a pip that can
    # install into another interpreter, which takes seconds less than venv's
    # ensurepip (and Debian's Python has no ensurepip without python3-venv).
    BASE_PIP="$(find_pip_for "$python")"
    if [[ -n "$BASE_PIP" ]]; then
        "$python" -m venv --without-pip "$VENV"
    else
        "$python" -m venv "$VENV"
    fi
}

install_python_packages() {
    local spec="." stamp="$VENV/.fdfsmount-installed" want
    [[ -n "$EXTRAS" ]] && spec=".[$EXTRAS]"
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) extras=$EXTRAS"
    if [[ -f "$stamp" ]]; then
        local have
        have="$(cat "$stamp")"
        # An install with test extras also satisfies a plain one.
        if [[ "$have" == "$want" || ( -z "$EXTRAS" && "${have%% *}" == "${want%% *}" ) ]]; then
            return 0
        fi
    fi
    log "pip install -e '$spec'"
    rm -f "$stamp"
    if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        # Made without pip (or an earlier install broke off before pip was in).
        [[ -n "$BASE_PIP" ]] || BASE_PIP="$(find_pip_for "$VENV/bin/python")"
        [[ -n "$BASE_PIP" ]] || "$VENV/bin/python" -m ensurepip -q
    fi
    if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        "$BASE_PIP" -m pip --python "$VENV/bin/python" install --disable-pip-version-check -q \
            pip -e "$spec"
    else
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e "$spec"
    fi
    printf '%s\n' "$want" >"$stamp"
}

install_system_packages
ensure_venv
install_python_packages
