"""Connection pool: idle connections kept per server address, opened on demand.

Only connections whose last exchange completed cleanly come back (see
`Connection.reusable`); broken, busy (cancelled or partly read) and expired
ones are closed. Opening a connection is bounded by ``connect_timeout``: the
pool is the edge where connecting happens, so it applies `trio.fail_after`
itself and turns `trio.TooSlowError` into `Timeout` and refusals into
`ConnectError`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

from .connection import Connection, ConnState, Role
from .errors import ConnectError, ConnectTimeout, ServerError
from .message import ServerAddr
from .stats import ClientStats

log = logging.getLogger(__name__)

#: Idle connections older than this are checked for a close by the server.
_CHECK_AFTER_IDLE = 1.0

#: Opens a byte stream to a server; the default is `trio.open_tcp_stream`.
ConnectFn = Callable[[ServerAddr], Awaitable[trio.abc.Stream]]


async def open_tcp(addr: ServerAddr) -> trio.abc.Stream:
    return await trio.open_tcp_stream(addr.host, addr.port)


def _reason(exc: OSError) -> str:
    """The strerror of a connect failure, also when trio wraps several attempts."""
    if exc.strerror:
        return exc.strerror
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        for inner in cause.exceptions:
            if isinstance(inner, OSError) and inner.strerror:
                return inner.strerror
    return str(exc)


class ConnectionPool:
    """Idle connections per server; LIFO reuse keeps the warmest ones busy."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        max_idle_per_server: int = 8,
        idle_timeout: float = 60.0,
        connect: ConnectFn | None = None,
        stats: ClientStats | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle_per_server = max_idle_per_server
        self.idle_timeout = idle_timeout
        self._connect = connect or open_tcp
        self.stats = stats if stats is not None else ClientStats()
        self._idle: dict[ServerAddr, list[Connection]] = {}
        self._closed = False
        self._swept_at = 0.0

    def idle_count(self, addr: ServerAddr | None = None) -> int:
        if addr is not None:
            return len(self._idle.get(addr, ()))
        return sum(len(conns) for conns in self._idle.values())

    async def acquire(self, addr: ServerAddr, role: Role = "storage") -> Connection:
        """An idle connection to ``addr`` if a live one is pooled, else a new one."""
        if self._closed:
            raise ConnectError(f"connection pool is closed (wanted {addr})")
        now = trio.current_time()
        if now - self._swept_at > self.idle_timeout / 4:
            self._swept_at = now
            await self._expire_idle()
        idle = self._idle.get(addr)
        while idle:
            conn = idle.pop()
            # A server closes idle connections only after a while; checking
            # ones just used would cost a syscall for nothing.
            idle_for = now - conn.idle_since
            alive = idle_for < _CHECK_AFTER_IDLE or not conn.looks_closed()
            if conn.reusable and idle_for < self.idle_timeout and alive:
                self.stats.connections_reused += 1
                conn.role = role
                return conn
            log.debug("dropping an expired or closed idle connection to %s", addr)
            await conn.aclose()
        return await self.open(addr, role)

    async def open(self, addr: ServerAddr, role: Role = "storage") -> Connection:
        """A new connection, bypassing the idle ones."""
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await self._connect(addr)
        except trio.TooSlowError:
            raise ConnectTimeout(
                f"connecting to {role} {addr} timed out after {self.connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {role} {addr}: {_reason(exc)}") from exc
        self.stats.connections_opened += 1
        log.debug("connected to %s %s", role, addr)
        return Connection(stream, addr, role=role, stats=self.stats)

    async def release(self, conn: Connection) -> None:
        """Give a connection back: pooled if reusable and there is room, else closed."""
        if self._closed or not conn.reusable:
            if conn.state is ConnState.BUSY:
                log.debug("discarding %r: its exchange did not complete", conn)
            await conn.aclose()
            return
        idle = self._idle.setdefault(conn.addr, [])
        if len(idle) >= self.max_idle_per_server:
            await conn.aclose()
            return
        idle.append(conn)

    async def discard_idle(self, addr: ServerAddr) -> None:
        """Close the idle connections of a server that just failed: they likely died too."""
        for conn in self._idle.pop(addr, []):
            await conn.aclose()

    async def _expire_idle(self) -> None:
        # Take the expired connections out of the idle lists before closing any:
        # closing yields, and a concurrent acquire must find the lists final.
        now = trio.current_time()
        expired: list[Connection] = []
        for addr in list(self._idle):
            conns = self._idle[addr]
            expired += [c for c in conns if now - c.idle_since >= self.idle_timeout]
            conns[:] = [c for c in conns if now - c.idle_since < self.idle_timeout]
            if not conns:
                del self._idle[addr]
        for conn in expired:
            await conn.aclose()

    @asynccontextmanager
    async def connection(
        self, addr: ServerAddr, role: Role = "storage"
    ) -> AsyncIterator[Connection]:
        """Borrow a connection; any error but a server's status reply discards it."""
        conn = await self.acquire(addr, role)
        try:
            yield conn
        except ServerError:
            raise  # a complete error reply: the connection's own state decides
        except BaseException:
            conn.mark_broken("error while borrowed")
            raise
        finally:
            await self.release(conn)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.aclose()
