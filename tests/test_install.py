"""``scripts/install.sh`` into a temporary prefix (every destination given, so the real
/usr/local, /etc and /opt are never touched): commands linked and runnable, the unit verifies
and runs this install's daemon, both man pages render; a second install is a no-op in effect;
``--uninstall`` leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "scripts" / "install.sh"
REAL_PLACES = [
    Path("/usr/local/bin/fdfsmount"),
    Path("/usr/local/bin/fdfs"),
    Path("/etc/systemd/system/fdfsmount@.service"),
    Path("/usr/local/share/man/man8/fdfsmount.8"),
    Path("/opt/fdfsmount"),
]


def tree(root: Path) -> list[str]:
    return sorted(os.fspath(p.relative_to(root)) for p in root.rglob("*"))


def real_state() -> list[tuple[str, bool, float]]:
    out = []
    for path in REAL_PLACES:
        exists = path.exists() or path.is_symlink()
        out.append((os.fspath(path), exists, path.lstat().st_mtime if exists else 0.0))
    return out


def run_install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [
        "bash", os.fspath(INSTALL),
        "--prefix", os.fspath(root / "opt" / "fdfsmount"),
        "--bindir", os.fspath(root / "usr" / "local" / "bin"),
        "--unitdir", os.fspath(root / "etc" / "systemd" / "system"),
        "--mandir", os.fspath(root / "usr" / "local" / "share" / "man"),
        "--python", sys.executable, "--no-apt", "--no-reload", *extra,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_install_into_a_temporary_prefix_and_uninstall_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "usr").mkdir()  # one destination's parent exists already, the rest do not
    wants = root / "etc" / "systemd" / "system" / "remote-fs.target.wants"
    wants.mkdir(parents=True)  # as systemd keeps it
    before = tree(root)
    real_before = real_state()
    build_dirs = [(REPO / "build").exists(), (REPO / "fdfsmount.egg-info").exists()]
    try:
        done = run_install(root)
        assert done.returncode == 0, done.stderr
        prefix = root / "opt" / "fdfsmount"
        bindir = root / "usr" / "local" / "bin"
        for name in ("fdfsmount", "fdfs"):
            link = bindir / name
            assert link.is_symlink() and link.resolve() == (prefix / "bin" / name).resolve()
        version = subprocess.run(
            [bindir / "fdfsmount", "--version"], capture_output=True, text=True, timeout=60
        )
        assert version.returncode == 0 and version.stdout.startswith("fdfsmount ")
        help_text = subprocess.run(
            [bindir / "fdfs", "--help"], capture_output=True, text=True, timeout=60
        )
        assert help_text.returncode == 0 and "FDFS_TRACKERS" in help_text.stdout

        unit = root / "etc" / "systemd" / "system" / "fdfsmount@.service"
        assert f"ExecStart={prefix}/bin/fdfsmount " in unit.read_text()
        if shutil.which("systemd-analyze"):
            verify_dir = tmp_path / "verify"
            verify_dir.mkdir()
            shutil.copy(unit, verify_dir)
            verified = subprocess.run(
                ["systemd-analyze", "verify", "./fdfsmount@mnt-fdfs.service"],
                cwd=verify_dir, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert verified.returncode == 0 and verified.stderr == "", verified.stderr
        mandir = root / "usr" / "local" / "share" / "man"
        for page in (mandir / "man8" / "fdfsmount.8", mandir / "man1" / "fdfs.1"):
            assert page.read_text() == (REPO / "man" / page.name).read_text()
            if shutil.which("man"):
                shown = subprocess.run(
                    ["man", "-l", os.fspath(page)], capture_output=True, text=True, timeout=60,
                    env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"},
                )  # fmt: skip
                assert shown.returncode == 0 and "SYNOPSIS" in shown.stdout, shown.stderr

        # Again: an install over an install is fine and still uninstalls cleanly.
        again = run_install(root)
        assert again.returncode == 0, again.stderr
        # A prefix holding something other than an install is refused.
        (prefix / "installed-files").rename(tmp_path / "record")
        refused = run_install(root)
        assert refused.returncode == 1 and "not an fdfsmount install" in refused.stderr
        (tmp_path / "record").rename(prefix / "installed-files")

        # An instance enabled meanwhile (as `systemctl enable` does) goes with the unit.
        (wants / "fdfsmount@mnt-fdfs.service").symlink_to(unit)
        removed = run_install(root, "--uninstall")
        assert removed.returncode == 0, removed.stderr
        assert tree(root) == before
        nothing = run_install(root, "--uninstall")
        assert nothing.returncode == 1 and "nothing installed there" in nothing.stderr
    finally:
        prefix = root / "opt" / "fdfsmount"
        if prefix.exists():  # a failure above: take it away all the same
            subprocess.run(
                ["bash", os.fspath(INSTALL), "--prefix", os.fspath(prefix), "--uninstall",
                 "--no-reload"], capture_output=True, timeout=120,
            )  # fmt: skip
    assert real_state() == real_before
    # Built from a copy: the checkout gets no build/ or egg-info from the install.
    assert [(REPO / "build").exists(), (REPO / "fdfsmount.egg-info").exists()] == build_dirs


def test_usage_errors() -> None:
    done = subprocess.run(
        ["bash", os.fspath(INSTALL), "--frobnicate"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "unknown argument" in done.stderr
    shown = subprocess.run(
        ["bash", os.fspath(INSTALL), "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and "--uninstall" in shown.stdout and "--bindir" in shown.stdout
