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
# attr: getfattr/setfattr for the xattr tests. systemd: systemd-analyze verify.
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc python3-dev attr systemd)
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

find_python() {
    local candidate
    for candidate in python3 /usr/bin/python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null && python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    log "no python3 >= 3.11 with the venv module found"
    exit 1
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
    # A pip of its own is installed with the packages below, by the base Python's
    # pip when it can install into another interpreter (pip >= 22.3: --python),
    # which takes seconds less than venv's ensurepip.
    if "$python" -m pip --python "$python" --version >/dev/null 2>&1; then
        "$python" -m venv --without-pip "$VENV"
        BASE_PIP="$python"
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
        [[ -n "$BASE_PIP" ]] || BASE_PIP="$(find_python)"
        if ! "$BASE_PIP" -m pip --python "$BASE_PIP" --version >/dev/null 2>&1; then
            "$VENV/bin/python" -m ensurepip -q
        fi
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
