"""``fdfsmount install-helper``: put ``fdfsmount`` where mount(8) and systemd find it.

``mount -t fuse.fdfsmount`` (fstab, ``.mount`` units) runs ``mount.fuse3``,
which runs ``fdfsmount SOURCE MOUNTPOINT -o OPTIONS`` through ``/bin/sh`` with
mount(8)'s sanitized environment: no ``PATH``, so the shell's default
(``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``) applies and
a virtualenv's ``bin`` is never searched. The helper is a symlink to this
installation's ``fdfsmount`` script (or, without one, a two-line wrapper that
runs ``python -m fdfsmount`` with this interpreter).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .usage import UsageParser

PROG = "fdfsmount install-helper"
DEFAULT_PREFIX = "/usr/local/bin"
#: Where /bin/sh looks when PATH is unset (Debian's dash; bash's is alike).
HELPER_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def installed_script() -> Path | None:
    """This installation's ``fdfsmount`` console script, if there is one."""
    for bindir in (Path(sys.prefix) / "bin", Path(sys.executable).parent):
        candidate = bindir / "fdfsmount"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def wrapper_text() -> str:
    return f'#!/bin/sh\nexec {sys.executable} -m fdfsmount "$@"\n'


def is_ours(path: Path, script: Path | None) -> bool:
    """True if `path` is a helper this command would install (so replacing it is safe)."""
    if path.is_symlink():
        return script is not None and Path(os.readlink(path)) == script
    try:
        return path.read_text(errors="replace") == wrapper_text()
    except OSError:
        return False


def install(prefix: Path, *, force: bool = False) -> str:
    """Install the helper into `prefix`; one line saying what was done."""
    target = prefix / "fdfsmount"
    script = installed_script()
    if script is not None and target.resolve() == script.resolve() and not target.is_symlink():
        return f"{target} is this installation's own script; nothing to do"
    if target.is_symlink() or target.exists():
        if is_ours(target, script):
            return f"{target} is already in place"
        if not force:
            raise ValueError(f"{target} exists and is not ours; use --force to replace it")
    prefix.mkdir(parents=True, exist_ok=True)
    tmp = prefix / ".fdfsmount.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    if script is not None:
        tmp.symlink_to(script)
        what = f"{target} -> {script}"
    else:
        tmp.write_text(wrapper_text())
        tmp.chmod(0o755)
        what = f"{target}: runs {sys.executable} -m fdfsmount"
    os.replace(tmp, target)
    return what


def remove(prefix: Path) -> str:
    target = prefix / "fdfsmount"
    if not (target.is_symlink() or target.exists()):
        return f"{target} is not there"
    if not is_ours(target, installed_script()):
        raise ValueError(f"{target} is not a helper installed by this fdfsmount; left alone")
    target.unlink()
    return f"removed {target}"


def parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog=PROG,
        description=(
            "Link this installation's fdfsmount into a directory on the fixed PATH mount(8)\n"
            "helpers run with, so that fstab lines and .mount units of type fuse.fdfsmount\n"
            "work. The same by hand:  ln -s $(command -v fdfsmount) /usr/local/bin/fdfsmount"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help=f"directory to install into (default: {DEFAULT_PREFIX})",
    )
    p.add_argument("--force", action="store_true", help="replace an fdfsmount that is not ours")
    p.add_argument("--remove", action="store_true", help="remove the helper instead")
    return p


def helper_main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    prefix = Path(args.prefix).absolute()
    try:
        print(remove(prefix) if args.remove else install(prefix, force=args.force))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"fdfsmount: install-helper: {reason}", file=sys.stderr)
        return 1
    if not args.remove and os.fspath(prefix) not in HELPER_PATH:
        print(
            f"note: mount(8) runs helpers with PATH unset; {prefix} is not among "
            f"{':'.join(HELPER_PATH)}, so fstab mounts will not find it there",
            file=sys.stderr,
        )
    return 0
