"""The connection pool: reuse, idle limits and expiry, discarding, connect errors."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from fdfsmount.proto import ConnectError, ConnectTimeout, ServerAddr, Timeout
from fdfsmount.proto.connection import Connection, ConnState
from fdfsmount.proto.message import Request
from fdfsmount.proto.pool import ConnectionPool

A = ServerAddr("127.0.0.1", 23000)
B = ServerAddr("127.0.0.1", 23001)
DEADLINE = 10


class Peers:
    """A connect hook handing out memory streams; keeps the server ends."""

    def __init__(self) -> None:
        self.server_ends: list[trio.abc.Stream] = []
        self.refuse = False
        self.hang = False

    async def connect(self, addr: ServerAddr) -> trio.abc.Stream:
        if self.refuse:
            raise OSError(errno.ECONNREFUSED, "Connection refused")
        if self.hang:
            await trio.sleep_forever()
        client_end, server_end = trio.testing.memory_stream_pair()
        self.server_ends.append(server_end)
        return client_end


async def complete_exchange(conn: Connection, peer: trio.abc.Stream) -> None:
    await conn.send_request(Request(111))
    await peer.receive_some(10)
    await peer.send_all(b"\0" * 8 + b"\x64\0")
    await conn.receive_header()
    assert conn.reusable


async def test_reuse_is_lifo_and_bounded_per_server() -> None:
    peers = Peers()
    pool = ConnectionPool(max_idle_per_server=2, connect=peers.connect)
    with trio.fail_after(DEADLINE):
        conns = [await pool.acquire(A) for _ in range(3)]
        for conn, peer in zip(conns, peers.server_ends, strict=True):
            await complete_exchange(conn, peer)
            await pool.release(conn)
        assert pool.idle_count(A) == 2  # the third was closed
        assert conns[2].state is ConnState.CLOSED
        assert await pool.acquire(A) is conns[1]
        assert await pool.acquire(B) is not conns[0]  # other server, new connection
        assert pool.stats.connections_opened == 4 and pool.stats.connections_reused == 1
        await pool.aclose()
        assert conns[0].state is ConnState.CLOSED


async def test_idle_connections_expire(autojump_clock: trio.testing.MockClock) -> None:
    peers = Peers()
    pool = ConnectionPool(idle_timeout=60, connect=peers.connect)
    with trio.fail_after(DEADLINE * 100):
        conn = await pool.acquire(A)
        await complete_exchange(conn, peers.server_ends[0])
        await pool.release(conn)
        await trio.sleep(30)
        assert await pool.acquire(A) is conn
        await pool.release(conn)
        await trio.sleep(61)
        fresh = await pool.acquire(A)
        assert fresh is not conn and conn.state is ConnState.CLOSED


async def test_unfinished_and_broken_connections_are_closed() -> None:
    peers = Peers()
    pool = ConnectionPool(connect=peers.connect)
    with trio.fail_after(DEADLINE):
        busy = await pool.acquire(A)
        await busy.send_request(Request(111))  # no reply read
        await pool.release(busy)
        assert busy.state is ConnState.CLOSED and pool.idle_count() == 0
        async with pool.connection(A) as conn:
            await complete_exchange(conn, peers.server_ends[1])
        assert pool.idle_count(A) == 1
        with pytest.raises(RuntimeError):
            async with pool.connection(A) as conn:
                raise RuntimeError("caller bug while the connection was out")
        assert conn.state is ConnState.CLOSED and pool.idle_count(A) == 0


async def test_connect_errors() -> None:
    peers = Peers()
    pool = ConnectionPool(connect_timeout=0.05, connect=peers.connect)
    with trio.fail_after(DEADLINE):
        peers.refuse = True
        with pytest.raises(ConnectError, match="Connection refused"):
            await pool.acquire(A)
        peers.refuse, peers.hang = False, True
        with pytest.raises(ConnectTimeout) as info:
            await pool.acquire(A)
        assert isinstance(info.value, Timeout) and isinstance(info.value, ConnectError)
        await pool.aclose()
        with pytest.raises(ConnectError, match="closed"):
            await pool.acquire(A)


async def test_idle_sweep_never_hands_out_a_connection_twice(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A sweep that closes expired connections yields; a concurrent acquire meanwhile
    must not get a connection the sweep then puts back into the idle list."""
    peers = Peers()
    pool = ConnectionPool(idle_timeout=10, connect=peers.connect)
    with trio.fail_after(DEADLINE + 12):  # virtual time: the jumps count
        conns = [await pool.acquire(A) for _ in range(3)]
        await complete_exchange(conns[0], peers.server_ends[0])
        await pool.release(conns[0])
        mock_clock.jump(9)
        for conn, peer in zip(conns[1:], peers.server_ends[1:], strict=True):
            await complete_exchange(conn, peer)
            await pool.release(conn)
        mock_clock.jump(3)  # the first has expired, the others not; a sweep is due
        taken: list[Connection] = []

        async def take() -> None:
            taken.append(await pool.acquire(A))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take)
            nursery.start_soon(take)
        assert taken[0] is not taken[1]
        assert conns[0].state is ConnState.CLOSED
        await pool.aclose()
