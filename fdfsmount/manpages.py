"""Man pages fdfsmount(8) and fdfs(1), rendered in roff from the commands' own argparse parsers.

# Strategy

The pages are made from ``--help`` (as help2man does), so they cannot drift
from the command line: `render_help` turns one parser's help text into roff --
the usage into SYNOPSIS, headings (``options:``, ``mount options ...:``) into
sections, ``term   definition`` rows into ``.TP`` paragraphs and anything else
indented (examples, fstab lines) into literal blocks. The committed pages in
``man/`` are checked against this output by the tests, and ``scripts/install.sh``
renders them from the installed package.

    python -m fdfsmount.manpages --out man/     # writes man/fdfsmount.8 and man/fdfs.1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__

WIDTH = 80  # help is wrapped as on an 80-column terminal, whatever this one is
_TERM_ROW = re.compile(r"^( {2,})(\S.*?)( {2,})(\S.*)$")
_TERM_ONLY = re.compile(r"^( {2,8})(-\S.*|\S+)$")  # an option or choice; its help wraps below
# "options:", "mount options (-o ...):", or "exit status: text" (a plain phrase, then text).
_HEADING = re.compile(r"^(?:([A-Za-z][^:]*):|([A-Za-z]+(?: [A-Za-z]+)?):\s+(\S.*))$")


def roff_text(text: str) -> str:
    """Escape a line of text for roff: backslashes, hyphens, leading dots and quotes."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def help_text(parser: argparse.ArgumentParser) -> str:
    with _columns(WIDTH):
        return parser.format_help()


@dataclass
class _Block:
    kind: str  # "para", "literal", "term"
    lines: list[str] = field(default_factory=list)
    term: str = ""


def _blocks(lines: Sequence[str], *, literal: bool = False) -> list[_Block]:
    """Group the lines of one help section into paragraphs, literal blocks and term rows
    (`literal`: every indented line is literal, as in examples)."""
    blocks: list[_Block] = []
    if literal and lines and all(not x.strip() or x.startswith(" ") for x in lines):
        return [_Block("literal", [x[2:] if x.startswith("  ") else x for x in lines])]
    for line in lines:
        if not line.strip():
            blocks.append(_Block("break"))
            continue
        indent = len(line) - len(line.lstrip())
        last = blocks[-1] if blocks else None
        row = _TERM_ROW.match(line)
        if last is not None and last.kind == "term" and indent >= 12 and not row:
            last.lines.append(line.strip())  # a wrapped definition
        elif row and not row[2].endswith(":"):
            blocks.append(_Block("term", [row[4].strip()], term=row[2].strip()))
        elif indent >= 2 and _TERM_ONLY.match(line) and "  " not in line.strip():
            blocks.append(_Block("term", [], term=line.strip()))
        elif indent == 0:
            if last is not None and last.kind == "para":
                last.lines.append(line.strip())
            else:
                blocks.append(_Block("para", [line.strip()]))
        elif last is not None and last.kind == "literal":
            last.lines.append(line[2:] if line.startswith("  ") else line)
        else:
            blocks.append(_Block("literal", [line[2:] if line.startswith("  ") else line]))
    return [b for b in blocks if b.kind != "break"]


def _render_blocks(blocks: Sequence[_Block]) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if block.kind == "para":
            out += [".PP", *(roff_text(line) for line in block.lines)]
        elif block.kind == "literal":
            out += [".PP", ".nf", ".RS 4", *(roff_text(line) for line in block.lines), ".RE", ".fi"]
        else:
            out += [".TP", f"\\fB{roff_text(block.term)}\\fR"]
            out += [roff_text(line) for line in block.lines] or [""]
    return out


def _sections(text: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """Usage, then (heading, lines) pairs; the text before the first heading is the
    description (heading "")."""
    lines = text.rstrip("\n").splitlines()
    usage: list[str] = []
    while lines and (lines[0].startswith("usage:") or (usage and lines[0].startswith(" "))):
        usage.append(lines.pop(0).removeprefix("usage: "))
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in lines:
        heading = _HEADING.match(line)
        if heading and len(heading[1] or heading[2]) < 60:
            title = heading[1] or heading[2]
            sections.append((title, [heading[3]] if heading[3] else []))
        else:
            sections[-1][1].append(line)
    usage_text = "\n".join(u.strip() if i else u for i, u in enumerate(usage))
    return usage_text, [(h, body) for h, body in sections if h or any(x.strip() for x in body)]


def render_help(parser: argparse.ArgumentParser, *, heading_level: str = ".SH") -> list[str]:
    """One parser's help as roff: SYNOPSIS-style usage, then its sections."""
    usage, sections = _sections(help_text(parser))
    out = [".nf", *(f"\\fB{roff_text(u)}\\fR" for u in usage.splitlines()), ".fi"]
    for heading, body in sections:
        if heading:
            out.append(f'{heading_level} "{roff_text(heading.upper())}"')
        out += _render_blocks(_blocks(body, literal=heading.lower().startswith("example")))
    return out


def render_page(
    name: str,
    section: int,
    summary: str,
    parsers: Sequence[tuple[str, argparse.ArgumentParser]],
    *,
    files: Sequence[tuple[str, str]] = (),
    environment: Sequence[tuple[str, str]] = (),
    see_also: str = "",
) -> str:
    """A whole page: the first parser is the command, the others its subcommands."""
    out = [
        f'.\\" Generated by python -m fdfsmount.manpages from the {name} parsers; do not edit.',
        f'.TH {name.upper()} {section} "" "fdfsmount {__version__}" "fdfsmount"',
        ".SH NAME",
        f"{name} \\- {roff_text(summary)}",
        ".SH SYNOPSIS",
    ]
    (_title, main), *subcommands = parsers
    main_lines = render_help(main)
    # SYNOPSIS is the usage; DESCRIPTION the rest of the main help.
    synopsis_end = main_lines.index(".fi") + 1
    out += main_lines[:synopsis_end]
    out.append(".SH DESCRIPTION")
    out += main_lines[synopsis_end:]
    for title, sub in subcommands:
        out.append(f'.SH "{roff_text(title.upper())}"')
        out += render_help(sub, heading_level=".SS")
    if environment:
        out.append(".SH ENVIRONMENT")
        for var, text in environment:
            out += [".TP", f"\\fB{roff_text(var)}\\fR", roff_text(text)]
    if files:
        out.append(".SH FILES")
        for path, text in files:
            out += [".TP", f"\\fI{roff_text(path)}\\fR", roff_text(text)]
    if see_also:
        out += [".SH \"SEE ALSO\"", roff_text(see_also)]
    return "\n".join(out) + "\n"


def fdfsmount_page() -> str:
    from .helper import parser as helper_parser
    from .mount_cli import parser as mount_parser
    from .status import ctl_parser
    from .status import parser as status_parser
    from .warmup import parser as warmup_parser

    return render_page(
        "fdfsmount",
        8,
        "mount a FastDFS cluster as a FUSE file system",
        [
            ("fdfsmount", mount_parser()),
            ("fdfsmount status", status_parser()),
            ("fdfsmount ctl", ctl_parser()),
            ("fdfsmount warmup", warmup_parser()),
            ("fdfsmount install-helper", helper_parser()),
        ],
        files=[
            ("/etc/fdfsmount/INSTANCE.conf", "FDFS_SOURCE and FDFS_OPTIONS of fdfsmount@INSTANCE"),
            ("/run/fdfsmount/", "status sockets and state files of root's mounts"),
            ("/var/cache/fdfsmount/", "root's alias catalogs (names created in /GROUP/)"),
        ],
        environment=[
            ("FDFSMOUNT_RUNTIME_DIR", "where status sockets and state files go"),
            ("NOTIFY_SOCKET, WATCHDOG_USEC", "set by systemd: readiness and watchdog"),
        ],
        see_also="fdfs(1), mount.fuse3(8), fusermount3(1), systemd.service(5)",
    )


def fdfs_page() -> str:
    from .cli.fdfs import build_parser

    parser = build_parser()
    commands: dict[str, argparse.ArgumentParser] = getattr(parser, "commands", {})
    return render_page(
        "fdfs",
        1,
        "upload, download and inspect files in a FastDFS cluster",
        [("fdfs", parser), *((f"fdfs {name}", sub) for name, sub in commands.items())],
        environment=[("FDFS_TRACKERS", "comma-separated HOST:PORT trackers")],
        files=[("/etc/fdfs/client.conf", "read when no tracker is given otherwise")],
        see_also="fdfsmount(8)",
    )


PAGES = {"fdfsmount.8": fdfsmount_page, "fdfs.1": fdfs_page}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fdfsmount.manpages", description="Write fdfsmount.8 and fdfs.1."
    )
    p.add_argument("--out", metavar="DIR", default="man", help="directory (default: man)")
    p.add_argument(
        "--sections", action="store_true", help="write into DIR/man8 and DIR/man1 (a mandir)"
    )
    args = p.parse_args(argv)
    for name, render in PAGES.items():
        directory = Path(args.out) / f"man{name[-1]}" if args.sections else Path(args.out)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(render())
        print(directory / name)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
