"""One request and its reply on a pooled connection: deadlines, retries, failure memory.

# Strategy
`Exchanger` is the plumbing every client operation shares: it borrows a
connection from the pool, sends the request, reads the reply header (and,
when asked, the whole body) under a `Watchdog`, and notes the outcome in the
shared `ServerHealth` and `ClientStats`. Callers that stream a body themselves
(`download`, binlog listing) take the connection from `open_reply`, read it
under `watch`, and hand it back with `release`.

Deadlines are applied here, at the edge: connecting is bounded by
``connect_timeout`` (in the pool), and every exchange by ``network_timeout``
*without progress* -- the deadline moves forward with each chunk moved, as
the C client's per-socket-operation timeout does, so a large transfer may
take as long as it needs while a silent server is given up on.
`trio.TooSlowError` becomes `Timeout`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import trio

from . import tracker as tr
from .connection import MAX_REPLY_SIZE, Connection, Payload, Role
from .constants import Cmd
from .errors import ConnectError, FdfsError, ProtocolError, Timeout
from .health import ServerHealth
from .message import Request, ServerAddr
from .pool import ConnectionPool
from .stats import ClientStats
from .wire import Header

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Failures after which another server is worth trying (and the server is noted as failed).
TRANSPORT_ERRORS = (ConnectError, Timeout, ProtocolError)
#: Requests that may be sent again when a pooled connection turns out dead:
#: every tracker query (none changes anything) and the storage's reads.
_IDEMPOTENT = (tr.TRACKER_CLIENT_CMDS - {Cmd.QUIT}) | {
    Cmd.DOWNLOAD_FILE,
    Cmd.GET_METADATA,
    Cmd.QUERY_FILE_INFO,
}

_OP_NAMES = {int(cmd): cmd.name.lower() for cmd in Cmd}


def op_name(cmd: int) -> str:
    """The operation name of a command, as used in messages and stats."""
    return _OP_NAMES.get(cmd) or f"cmd_{cmd}"


class Exchanger:
    """Runs requests on pooled connections; shared by the client and its readers."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        network_timeout: float,
        health: ServerHealth,
        stats: ClientStats,
    ) -> None:
        self.pool = pool
        self.network_timeout = network_timeout
        self.health = health
        self.stats = stats

    def watch(self, conn: Connection, what: str) -> Watchdog:
        """Give up on ``conn`` after ``network_timeout`` without progress."""
        return Watchdog(conn, what, self.network_timeout)

    async def release(self, conn: Connection) -> None:
        await self.pool.release(conn)

    def count_failure(self, op: str, addr: ServerAddr, exc: BaseException) -> None:
        self.stats.count_error(op)
        if isinstance(exc, TRANSPORT_ERRORS):
            self.health.failed(addr)

    def count_success(self, addr: ServerAddr, started: float, op: str = "other") -> None:
        self.stats.observe_latency(str(addr), trio.current_time() - started, op)
        self.health.succeeded(addr)

    async def open_reply(
        self,
        addr: ServerAddr,
        role: Role,
        request: Request,
        what: str,
        payload: Payload | None = None,
        *,
        body_limit: int | None = None,
    ) -> tuple[Connection, Header, bytes]:
        """Send ``request`` on a pooled connection and read the reply header.

        The status is checked (`ServerError`). With ``body_limit`` the whole
        body is read too (within the same deadline); without, the body is left
        for the caller. Either way the caller owns the connection and must
        release it. A pooled connection found dead before any reply byte is
        replaced once for idempotent requests.
        """
        op = op_name(request.cmd)
        self.stats.count_request(op)
        pool = self.pool
        fresh = False
        try:
            while True:
                conn = await (pool.open(addr, role) if fresh else pool.acquire(addr, role))
                log.debug("%s", what)
                try:
                    body = b""
                    with Watchdog(conn, what, self.network_timeout):
                        await conn.send_request(request, payload, what=what)
                        header = await conn.receive_header()
                        conn.expect_status(header, what)
                        if body_limit is not None:
                            body = await conn.receive_body(body_limit)
                    return conn, header, body
                except ProtocolError as exc:
                    stale = conn.uses > 0 and not conn.reply_started
                    await pool.release(conn)
                    if stale and not fresh and payload is None and request.cmd in _IDEMPOTENT:
                        log.debug("%s: pooled connection was dead (%s); retrying", what, exc)
                        await pool.discard_idle(addr)
                        fresh = True
                        continue
                    raise
                except BaseException:
                    await pool.release(conn)
                    raise
        except FdfsError as exc:
            self.count_failure(op, addr, exc)
            raise

    async def exchange(
        self,
        addr: ServerAddr,
        role: Role,
        request: Request,
        decode: Callable[[bytes], T],
        *,
        what: str,
        payload: Payload | None = None,
        max_size: int = MAX_REPLY_SIZE,
    ) -> T:
        """One request and its whole reply, decoded; a bad reply breaks the connection."""
        started = trio.current_time()
        conn, _header, body = await self.open_reply(
            addr, role, request, what, payload, body_limit=max_size
        )
        try:
            result = decode(body)
        except ProtocolError as exc:
            conn.mark_broken(f"undecodable reply: {exc}")
            self.count_failure(op_name(request.cmd), addr, exc)
            raise ProtocolError(f"{what}: {exc}") from exc
        finally:
            await self.pool.release(conn)
        self.count_success(addr, started, op_name(request.cmd))
        return result


class Watchdog:
    """A cancel scope whose deadline each chunk moved on ``conn`` pushes forward.

    Like `trio.fail_after`, but the timeout counts from the last progress, and
    expiry raises our `Timeout` (naming ``what``) and breaks the connection.
    """

    __slots__ = ("_conn", "_scope", "_timeout", "_what")

    def __init__(self, conn: Connection, what: str, timeout: float) -> None:
        self._conn = conn
        self._what = what
        self._timeout = timeout
        self._scope = trio.CancelScope(deadline=trio.current_time() + timeout)

    def __enter__(self) -> None:
        self._scope.__enter__()
        self._conn.watch(self._scope, self._timeout)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._conn.watch(None)
        swallowed = self._scope.__exit__(exc_type, exc, tb)
        if self._scope.cancelled_caught:
            self._conn.mark_broken("timed out")
            raise Timeout(f"{self._what}: no answer within {self._timeout:g}s")
        return swallowed
