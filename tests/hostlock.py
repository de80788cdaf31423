"""One lock for tests that touch, or check, the host's /usr/local/bin.

The fstab tests link ``fdfsmount`` there for the duration of a test (mount(8)
finds helpers only on the default PATH); the install test checks that nothing
appears there. Test runs in parallel (several workers, several checkouts) take
this lock around such work. It is a lock on the directory itself, so it leaves
no file behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from fdfsmount.helper import DEFAULT_PREFIX


@contextlib.contextmanager
def usr_local_bin_locked() -> Iterator[None]:
    fd = os.open(DEFAULT_PREFIX, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
