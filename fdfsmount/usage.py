"""The parser every fdfsmount command line uses: a usage mistake is one line and status 1."""

from __future__ import annotations

import argparse
from typing import NoReturn

#: Exit status of a command that failed, a usage error included (mount(8)'s
#: "incorrect invocation" for a helper).
EXIT_FAIL = 1


class UsageParser(argparse.ArgumentParser):
    """A usage mistake is one line and exit status 1, as `--help` documents (and mount(8)
    expects of a helper: 1 is "incorrect invocation")."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_FAIL, f"{self.prog}: {message} (see '{self.prog} --help')\n")
