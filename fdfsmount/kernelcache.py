"""What the daemon tells the kernel about its caches: forget pages, names; store pages.

Nothing is sent until the mount is live (`KernelCache.attached`): the same
code runs in tests that call `Operations` directly, without a kernel.

The kernel may answer a notification only once it holds a lock that a pending
request of ours holds too (a page being read, a directory being changed), and
only the daemon's own loop can answer that request. So notifications that can
wait run in a thread, and `store` runs in the loop only where no request can
hold a page of the inode (see its docstring).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from typing import cast

import pyfuse3
import trio

log = logging.getLogger(__name__)

#: ``pyfuse3.notify_store``'s shape: (inode, offset, data); it takes any buffer (its stub
#: says bytes).
StoreFn = Callable[[int, int, bytes], None]


class KernelCache:
    """Tells the kernel to forget what it caches, or hands it pages; idle until attached."""

    def __init__(
        self, nursery: trio.Nursery | None = None, *, store: StoreFn = pyfuse3.notify_store
    ) -> None:
        self._nursery = nursery
        self._store = store
        self._can_store = True
        self.attached = False
        self.stored = 0  # files handed to the page cache

    def use(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def forget_data(self, inode: int) -> None:
        """Drop the pages and attributes of `inode` (after a failed write-back)."""
        if self.attached and inode and self._nursery is not None:
            # In a thread: the kernel may wait for a read of this inode we have to answer.
            self._nursery.start_soon(trio.to_thread.run_sync, _invalidate_inode, inode)

    def forget_entry(self, parent_inode: int | None, name: str) -> None:
        if self.attached and parent_inode:
            pyfuse3.invalidate_entry_async(parent_inode, os.fsencode(name), ignore_enoent=True)

    def store(self, inode: int, data: bytes | bytearray | memoryview) -> bool:
        """Put `data` in the page cache of `inode` from offset 0, now, in the loop.

        Only for an inode that no open file refers to: the kernel locks each
        page while storing, and a read in flight holds its pages locked until
        we answer it, which the loop could not do while it waits here. With
        no open file there is no read. False if nothing was stored.
        """
        if not (self.attached and self._can_store):
            return False
        try:
            self._store(inode, 0, cast(bytes, data))
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                self._can_store = False  # an old kernel: never again
            log.debug("storing %d bytes of inode %d in the page cache: %s", len(data), inode, exc)
            return False
        self.stored += 1
        return True


def _invalidate_inode(inode: int) -> None:
    try:
        pyfuse3.invalidate_inode(inode)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.debug("invalidate inode %d: %s", inode, exc)
