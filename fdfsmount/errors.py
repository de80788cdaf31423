"""Errors of the mount's own making (the protocol's live in `proto.errors`)."""

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
