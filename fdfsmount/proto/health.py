"""Server health: which servers failed lately, and which files no replica could serve.

# Strategy
One `ServerHealth` is shared by everything that picks a server: the client
notes every transport failure (connect refused, timeout, broken reply) and
every success, and whoever orders a list of servers -- the client's replica
and tracker fallback, the mount's replica directory -- asks `order` for it.
So a server that made one caller wait out its timeout goes last for everyone
for `failure_memory` seconds, whatever timeout was configured, instead of
being guessed "slow" by each caller from its own clock.

Separately, a file that no replica could serve is remembered for
`down_memory` seconds (`file_down` / `check_file`): the kernel retries a
failed page read at once, and that retry must fail at once too instead of
waiting out every replica's timeout again. The memory is per file, so other
files on the same servers are tried normally -- right after a storage
recovers, only files that really failed keep failing, and only briefly.

No I/O here: times come from the caller's clock (`trio.current_time()` by default).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import trio

from .errors import FdfsError, Timeout
from .message import ServerAddr

#: Seconds a server that failed is tried after the others.
FAILURE_MEMORY = 30.0
#: Seconds reads of a file that failed on every replica fail at once.
DOWN_MEMORY = 3.0
#: Files remembered as down at most (oldest forgotten first).
_MAX_DOWN_FILES = 10_000


class ServerHealth:
    """Failure memory per server and per file, shared by all who choose servers."""

    def __init__(
        self,
        *,
        failure_memory: float = FAILURE_MEMORY,
        down_memory: float = DOWN_MEMORY,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.failure_memory = failure_memory
        self.down_memory = down_memory
        self._clock = clock
        self._failed_at: dict[ServerAddr, float] = {}
        self._down: OrderedDict[Hashable, tuple[float, FdfsError]] = OrderedDict()

    # -- servers -------------------------------------------------------------

    def failed(self, addr: ServerAddr) -> None:
        """``addr`` failed to answer (connect error, timeout, broken reply)."""
        self._failed_at[addr] = self._clock()

    def succeeded(self, addr: ServerAddr) -> None:
        if self._failed_at:
            self._failed_at.pop(addr, None)

    def failed_recently(self, addr: ServerAddr) -> bool:
        when = self._failed_at.get(addr)
        return when is not None and self._clock() - when < self.failure_memory

    def order(self, addrs: Sequence[ServerAddr]) -> list[ServerAddr]:
        """``addrs`` with the servers that failed recently moved last (order kept otherwise)."""
        if not self._failed_at:
            return list(addrs)
        healthy = [a for a in addrs if not self.failed_recently(a)]
        if len(healthy) == len(addrs):
            return healthy
        return healthy + [a for a in addrs if a not in healthy]

    # -- files ---------------------------------------------------------------

    def file_down(self, file_key: Hashable, error: FdfsError) -> None:
        """No replica could serve ``file_key``: fail its reads at once for a moment."""
        self._down[file_key] = (self._clock(), error)
        self._down.move_to_end(file_key)
        while len(self._down) > _MAX_DOWN_FILES:
            self._down.popitem(last=False)

    def file_up(self, file_key: Hashable) -> None:
        if self._down:
            self._down.pop(file_key, None)

    def check_file(self, file_key: Hashable, op: str = "download_file") -> None:
        """Raise `Timeout` if ``file_key`` failed on every replica within `down_memory`."""
        if not self._down:
            return
        entry = self._down.get(file_key)
        if entry is None:
            return
        when, error = entry
        if self._clock() - when >= self.down_memory:
            del self._down[file_key]
            return
        raise Timeout(f"{op} {file_key}: every replica failed just now ({error})")
