"""The man pages are the commands' own help: the committed pages match what the argparse
parsers render today, and both render cleanly with man(1)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fdfsmount.manpages import PAGES, roff_text

MAN_DIR = Path(__file__).resolve().parent.parent / "man"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_committed_page_matches_the_parsers(name: str) -> None:
    committed = (MAN_DIR / name).read_text()
    assert committed == PAGES[name](), (
        f"man/{name} is out of date: run `python -m fdfsmount.manpages --out man`"
    )


def test_every_option_and_subcommand_is_on_its_page() -> None:
    fdfsmount_page = PAGES["fdfsmount.8"]()
    for option in ("groups=G1[,G2...]", "metrics=HOST:PORT", "--foreground", "drop-caches"):
        assert roff_text(option) in fdfsmount_page, option
    fdfs_page = PAGES["fdfs.1"]()
    for command in ("FDFS UPLOAD", "FDFS META SET", "FDFS LS", "--tracker HOST:PORT"):
        assert roff_text(command) in fdfs_page, command


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man")
@pytest.mark.parametrize("name", sorted(PAGES))
def test_man_renders_the_page_without_warnings(name: str) -> None:
    done = subprocess.run(
        ["man", "--warnings", "-l", str(MAN_DIR / name)],
        capture_output=True, text=True, timeout=60, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "SYNOPSIS" in done.stdout and "EXIT STATUS" in done.stdout


def test_roff_escapes() -> None:
    assert roff_text(".hidden") == "\\&.hidden"
    assert roff_text("a-b\\c") == "a\\-b\\ec"
