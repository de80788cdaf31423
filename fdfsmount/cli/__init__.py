"""Command-line tools built on the protocol client.

`main` is the ``fdfs`` console script. It imports the command (trio, the
client) only once running, so a Ctrl-C while Python is still loading gives
the same one line as a Ctrl-C later, not a traceback from the import.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .fdfs import main as run_fdfs
    except KeyboardInterrupt:
        print("fdfs: interrupted", file=sys.stderr)
        return 130
    return run_fdfs()
