"""The README is a user guide a newcomer can follow: short, with its table of contents
pointing at real sections, the two one-line commands, and links that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_is_a_short_guide_with_the_sections_people_look_for() -> None:
    assert len(README.splitlines()) <= 250
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    for wanted in (
        "Quick start", "Installing on a host", "Mounting", "fstab and systemd", "Limits",
        "Troubleshooting", "Choices where FastDFS and POSIX differ",
        "Caches and the listing index", "Python library", "Benchmarks",
    ):  # fmt: skip
        assert wanted in headings, wanted
    assert "bash scripts/demo.sh" in README and "bash scripts/test.sh" in README
    assert ".venv/bin" in README  # where the commands are after the quick start
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_contents_and_links_lead_somewhere() -> None:
    anchors = {anchor(h) for h in re.findall(r"^#+ (.+)$", README, flags=re.MULTILINE)}
    for target in re.findall(r"\]\(#([^)]+)\)", README):
        assert target in anchors, target
    for path in re.findall(r"\]\(((?:docs/|systemd/)[^)#]*)", README):
        assert (REPO / path).exists(), path
    for doc in (REPO / "docs").glob("*.md"):
        for path in re.findall(r"\]\(([\w./-]+\.md)", doc.read_text()):
            assert (doc.parent / path).exists(), f"{doc.name}: {path}"


def test_license_is_gpl3_or_later() -> None:
    license_text = (REPO / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in license_text
    assert "Version 3, 29 June 2007" in license_text
    assert 'license = "GPL-3.0-or-later"' in (REPO / "pyproject.toml").read_text()
