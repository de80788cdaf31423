"""Errors of the mount's own making (the protocol's live in `proto.errors`), and
`sole_error` for the commands' reports."""

from __future__ import annotations

import errno as _errno
import os


class Refused(Exception):
    """A change the mount will not make; stands for one errno (EPERM, EROFS, EXDEV, ...).

    The message says why, for the one log line `fs` writes about it.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code

    @classmethod
    def not_permitted(cls, message: str) -> Refused:
        return cls(_errno.EPERM, message)

    def __str__(self) -> str:
        return f"{super().__str__()} ({os.strerror(self.errno)})"


def sole_error(exc: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups (trio nurseries wrap
    what fails in them), or `exc` itself when it holds several or none."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
