#!/usr/bin/env bash
# Install fdfsmount on a host, or remove it again: one command either way.
#
#   sudo bash scripts/install.sh                     # into /opt/fdfsmount
#   sudo bash scripts/install.sh --uninstall         # remove everything it installed
#
# What it does:
#   - system packages pyfuse3 needs (fuse3, libfuse3-dev, pkg-config, gcc, python3-dev)
#     with apt-get when they are missing (skip with --no-apt);
#   - a virtualenv in PREFIX with fdfsmount installed (not editable);
#   - links BINDIR/fdfsmount and BINDIR/fdfs to it (BINDIR must be on the fixed PATH
#     mount(8) gives helpers, so fstab lines and .mount units of type fuse.fdfsmount work);
#   - UNITDIR/fdfsmount@.service (its ExecStart names PREFIX/bin/fdfsmount);
#   - MANDIR/man8/fdfsmount.8 and MANDIR/man1/fdfs.1, rendered from the installed commands;
#   - example units and fdfsmount.conf.example in PREFIX/share/doc/fdfsmount.
# Every file placed outside PREFIX is listed in PREFIX/installed-files, and every
# directory created outside PREFIX too: --uninstall stops and disables the service's
# instances, then removes exactly those, then PREFIX.
# Nothing goes to /etc/fdfsmount or /etc/fdfs: the mounts' settings are yours.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PREFIX=/opt/fdfsmount
BINDIR=/usr/local/bin
UNITDIR=/etc/systemd/system
MANDIR=/usr/local/share/man
PYTHON=""
USE_APT=1
RELOAD=auto
ACTION=install

usage() {
    cat <<EOF
usage: bash scripts/install.sh [--prefix DIR] [--bindir DIR] [--unitdir DIR] [--mandir DIR]
                               [--python PYTHON] [--no-apt] [--no-reload] [--uninstall]

Install fdfsmount into a virtualenv and link it into the system.

  --prefix DIR     the virtualenv and the install record (default: $PREFIX)
  --bindir DIR     links to fdfsmount and fdfs (default: $BINDIR; mount(8) helpers
                   are looked up in /usr/local/bin, /usr/bin, /bin and the sbin ones)
  --unitdir DIR    where fdfsmount@.service goes (default: $UNITDIR)
  --mandir DIR     where man8/fdfsmount.8 and man1/fdfs.1 go (default: $MANDIR)
  --python PYTHON  the Python (3.11 or newer) to build the virtualenv with
                   (default: the distribution's /usr/bin/python3, built with PGO
                   and LTO; else python3 on the PATH)
  --no-apt         do not install missing system packages
  --no-reload      do not run systemctl daemon-reload
  --uninstall      stop and disable fdfsmount@ instances, then remove what an
                   install with the same --prefix put in place

exit status: 0 done; 1 failed (the message says why); 2 usage error
EOF
}

die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
say() { printf 'install.sh: %s\n' "$*" >&2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --bindir) BINDIR="${2:?--bindir needs a directory}"; shift 2 ;;
        --unitdir) UNITDIR="${2:?--unitdir needs a directory}"; shift 2 ;;
        --mandir) MANDIR="${2:?--mandir needs a directory}"; shift 2 ;;
        --python) PYTHON="${2:?--python needs a program}"; shift 2 ;;
        --no-apt) USE_APT=0; shift ;;
        --no-reload) RELOAD=0; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        -h|--help) usage; exit 0 ;;
        *) printf 'install.sh: unknown argument %q (see --help)\n' "$1" >&2; exit 2 ;;
    esac
done

absolute() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$PWD" "$1" ;; esac; }
PREFIX="$(absolute "$PREFIX")"
BINDIR="$(absolute "$BINDIR")"
UNITDIR="$(absolute "$UNITDIR")"
MANDIR="$(absolute "$MANDIR")"
RECORD="$PREFIX/installed-files"

reload_systemd() {
    [[ "$RELOAD" == 0 ]] && return 0
    # Only when the units went where this host's systemd looks and systemd runs.
    if [[ -d /run/systemd/system && "$UNITDIR" == /etc/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl daemon-reload || say "systemctl daemon-reload failed"
    fi
}

# -- uninstall -----------------------------------------------------------------

# Instances of the service (enabled with `systemctl enable fdfsmount@...`) go first:
# stopped when this host's systemd runs them, their .wants links removed either way.
disable_instances() {
    local unit link
    if [[ "$RELOAD" != 0 && -d /run/systemd/system && "$UNITDIR" == /etc/systemd/system ]] &&
        command -v systemctl >/dev/null; then
        for unit in $(systemctl list-units 'fdfsmount@*' --all --plain --no-legend 2>/dev/null | awk '{print $1}'); do
            systemctl disable --now "$unit" || say "could not stop $unit"
        done
    fi
    for link in "$UNITDIR"/*.wants/fdfsmount@*.service; do
        if [[ -L "$link" ]]; then rm -f -- "$link"; fi
    done
}

uninstall() {
    [[ -f "$RECORD" ]] || die "$PREFIX has no install record ($RECORD): nothing installed there"
    disable_instances
    local kind path
    # Files first, then directories deepest first (the record lists them in creation order).
    while IFS=$'\t' read -r kind path; do
        [[ "$kind" == file ]] || continue
        if [[ -L "$path" || -f "$path" ]]; then
            rm -f -- "$path"
        fi
    done <"$RECORD"
    local dirs
    dirs="$(tac "$RECORD" | sed -n 's/^dir\t//p')"
    rm -rf -- "$PREFIX"
    while IFS= read -r path; do
        [[ -n "$path" ]] || continue
        rmdir -- "$path" 2>/dev/null || say "left $path (not empty)"
    done <<<"$dirs"
    reload_systemd
    say "removed fdfsmount from $PREFIX"
}

# -- install -------------------------------------------------------------------

python_ok() { "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

find_python() {
    local candidate
    # The distribution's build first: profile-guided, link-time optimized and linked
    # statically, it runs the daemon with less CPU than a default pyenv or source build.
    for candidate in ${PYTHON:+"$PYTHON"} /usr/bin/python3 python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null && python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    die "no Python 3.11 or newer with the venv module${PYTHON:+ (tried $PYTHON)}"
}

system_packages() {
    [[ "$USE_APT" == 1 ]] || return 0
    command -v dpkg-query >/dev/null || return 0
    local missing=() pkg
    for pkg in fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing system packages (${missing[*]}); install them as root or run this as root"
    say "installing system packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# record KIND PATH: remember something placed outside PREFIX, for --uninstall.
record() { printf '%s\t%s\n' "$1" "$2" >>"$RECORD"; }

# make_dir DIR: mkdir -p, recording each directory that did not exist.
make_dir() {
    local dir="$1" missing=()
    while [[ ! -d "$dir" ]]; do
        missing=("$dir" "${missing[@]}")
        dir="$(dirname "$dir")"
    done
    for dir in "${missing[@]}"; do
        mkdir -- "$dir"
        record dir "$dir"
    done
}

# place SOURCE DEST: copy a file (mode 644) outside PREFIX, refusing to overwrite a foreign one.
place() {
    local source="$1" dest="$2"
    make_dir "$(dirname "$dest")"
    if [[ -e "$dest" || -L "$dest" ]] && ! grep -qxF "file	$dest" "$RECORD.old" 2>/dev/null; then
        die "$dest exists and is not from an earlier install here; move it away first"
    fi
    install -m 644 -- "$source" "$dest"
    record file "$dest"
}

# link TARGET DEST: a symlink outside PREFIX, same rule.
link() {
    local target="$1" dest="$2"
    make_dir "$(dirname "$dest")"
    if [[ -e "$dest" || -L "$dest" ]]; then
        if [[ "$(readlink -- "$dest" || true)" != "$target" ]] && ! grep -qxF "file	$dest" "$RECORD.old" 2>/dev/null; then
            die "$dest exists and is not ours; move it away first (or choose --bindir)"
        fi
        rm -f -- "$dest"
    fi
    ln -s -- "$target" "$dest"
    record file "$dest"
}

install_all() {
    system_packages
    local python
    python="$(find_python)"
    if [[ -e "$PREFIX" && ! -f "$RECORD" ]] && [[ -n "$(ls -A "$PREFIX" 2>/dev/null)" ]]; then
        die "$PREFIX exists and is not an fdfsmount install; choose another --prefix"
    fi
    local parents=() dir
    dir="$(dirname "$PREFIX")"
    while [[ ! -d "$dir" ]]; do parents=("$dir" "${parents[@]}"); dir="$(dirname "$dir")"; done
    mkdir -p -- "$PREFIX"
    # A reinstall replaces the record; what the old one lists may be overwritten.
    if [[ -f "$RECORD" ]]; then mv -- "$RECORD" "$RECORD.old"; fi
    : >"$RECORD"
    for dir in "${parents[@]}"; do record dir "$dir"; done
    # Directories an earlier install created stay ours to remove.
    if [[ -f "$RECORD.old" ]]; then grep "^dir	" "$RECORD.old" >>"$RECORD" || true; fi
    # The virtualenv gets its pip with fdfsmount, from the base Python's pip when that
    # can install into another interpreter (pip >= 22.3: --python): seconds less than
    # venv's ensurepip.
    local installer=("$PREFIX/bin/python" -m pip)
    if [[ ! -x "$PREFIX/bin/python" ]]; then
        say "creating the virtualenv $PREFIX with $python"
        if "$python" -m pip --python "$python" --version >/dev/null 2>&1; then
            "$python" -m venv --without-pip -- "$PREFIX"
        else
            "$python" -m venv -- "$PREFIX"
        fi
    fi
    if ! "$PREFIX/bin/python" -m pip --version >/dev/null 2>&1; then
        installer=("$python" -m pip --python "$PREFIX/bin/python")
    fi
    # Built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds in.
    local source stamp="$PREFIX/.source-sha256" digest
    source="$(mktemp -d)"
    # Tools' caches are no source: mypy may be writing its own meanwhile (the test
    # command runs it beside the tests), and they would change the digest below.
    tar -C "$REPO_ROOT" --exclude=./.venv --exclude=./.git --exclude=./build \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=./.mypy_cache \
        --exclude=./.ruff_cache --exclude=./.pytest_cache --exclude=./.hypothesis \
        -cf - . | tar -C "$source" -xf -
    # The same source again (and the install still importable): pip has nothing to do.
    digest="$(cd "$source" && find . -type f -print0 | LC_ALL=C sort -z |
        xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]] &&
        "$PREFIX/bin/python" -c 'import fdfsmount' 2>/dev/null; then
        say "fdfsmount from $REPO_ROOT is installed in $PREFIX already"
    else
        say "installing fdfsmount from $REPO_ROOT into $PREFIX"
        rm -f -- "$stamp"
        if ! "${installer[@]}" install --disable-pip-version-check -q pip "$source"; then
            rm -rf -- "$source"
            die "pip could not install fdfsmount into $PREFIX"
        fi
        printf '%s\n' "$digest" >"$stamp"
    fi
    rm -rf -- "$source"

    link "$PREFIX/bin/fdfsmount" "$BINDIR/fdfsmount"
    link "$PREFIX/bin/fdfs" "$BINDIR/fdfs"

    local staging="$PREFIX/share/fdfsmount"
    mkdir -p -- "$staging/man"
    "$PREFIX/bin/python" -m fdfsmount.manpages --out "$staging/man" >/dev/null
    place "$staging/man/fdfsmount.8" "$MANDIR/man8/fdfsmount.8"
    place "$staging/man/fdfs.1" "$MANDIR/man1/fdfs.1"

    # The service runs this install's fdfsmount, whatever PATH systemd has.
    sed "s|^ExecStart=/usr/bin/env fdfsmount |ExecStart=$PREFIX/bin/fdfsmount |" \
        "$REPO_ROOT/systemd/fdfsmount@.service" >"$staging/fdfsmount@.service"
    place "$staging/fdfsmount@.service" "$UNITDIR/fdfsmount@.service"

    local doc="$PREFIX/share/doc/fdfsmount"
    mkdir -p -- "$doc"
    cp -- "$REPO_ROOT"/systemd/*.mount "$REPO_ROOT"/systemd/*.automount \
        "$REPO_ROOT/systemd/fdfsmount.conf.example" "$REPO_ROOT/README.md" "$REPO_ROOT/LICENSE" "$doc/"
    rm -f -- "$RECORD.old"
    reload_systemd
    say "installed: $("$BINDIR/fdfsmount" --version) in $PREFIX"
    say "commands: $BINDIR/fdfsmount, $BINDIR/fdfs; service: $UNITDIR/fdfsmount@.service; man fdfsmount, man fdfs"
    say "examples: $doc"
}

case "$ACTION" in
    install) install_all ;;
    uninstall) uninstall ;;
esac
