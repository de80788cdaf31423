"""One client connection receiving replies, table driven, over memory streams and TCP.

Each reply is sent whole or a byte at a time, and read whole (`receive_body`),
into one buffer of its final size (`receive_into`), as new bytes
(`receive_chunk`) or streamed to a sink; bytes beyond a reply, a server that
closes early, a cancelled read and a reply that is not one all leave the
connection unusable, and the pool closes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from fdfsmount.proto import ConnectionClosed, ProtocolError, ServerAddr, ServerError
from fdfsmount.proto.connection import Connection, ConnState
from fdfsmount.proto.constants import BINLOG_STREAM_LENGTH, Cmd
from fdfsmount.proto.message import Request
from fdfsmount.proto.pool import ConnectionPool
from fdfsmount.proto.wire import encode_header

ADDR = ServerAddr("127.0.0.1", 23000)
DEADLINE = 10


def reply(body: bytes = b"", status: int = 0, cmd: int = Cmd.RESP) -> bytes:
    return encode_header(len(body), cmd, status) + body


Pair = tuple[Connection, trio.abc.Stream]


def state(conn: Connection) -> ConnState:
    return conn.state  # a call: mypy keeps no narrowing across awaits for it


@asynccontextmanager
async def memory_pair() -> AsyncIterator[Pair]:
    client_end, server_end = trio.testing.memory_stream_pair()
    conn = Connection(client_end, ADDR)
    try:
        yield conn, server_end
    finally:
        await conn.aclose()
        await trio.aclose_forcefully(server_end)


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[Pair]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        port = listeners[0].socket.getsockname()[1]
        client_end = await trio.open_tcp_stream("127.0.0.1", port)
        server_end = await listeners[0].accept()
    finally:
        for listener in listeners:
            await listener.aclose()
    conn = Connection(client_end, ServerAddr("127.0.0.1", port))
    try:
        yield conn, server_end
    finally:
        await conn.aclose()
        await trio.aclose_forcefully(server_end)


TRANSPORTS = {"memory": memory_pair, "tcp": tcp_pair}


async def send(server: trio.abc.Stream, data: bytes, *, bytewise: bool) -> None:
    if not bytewise:
        await server.send_all(data)
        return
    for i in range(len(data)):
        await server.send_all(data[i : i + 1])
        await trio.testing.wait_all_tasks_blocked()


async def start(conn: Connection, server: trio.abc.Stream) -> None:
    await conn.send_request(Request(Cmd.QUERY_FILE_INFO, b"q"))
    assert await server.receive_some(11) == encode_header(1, Cmd.QUERY_FILE_INFO) + b"q"


async def read_body(conn: Connection) -> bytes:
    return await conn.receive_body()


async def read_into(conn: Connection) -> bytes:
    buf = bytearray(conn.body_remaining)
    await conn.receive_exactly_into(memoryview(buf))
    return bytes(buf)


async def read_chunks(conn: Connection) -> bytes:
    got = bytearray()
    while chunk := await conn.receive_chunk(1000):
        got += chunk
    return bytes(got)


async def read_stream(conn: Connection) -> bytes:
    got = bytearray()
    await conn.stream_body(got.extend, chunk_size=4096)
    return bytes(got)


READERS: dict[str, Callable[[Connection], Awaitable[bytes]]] = {
    "receive_body": read_body,
    "receive_into": read_into,
    "receive_chunk": read_chunks,
    "stream_body": read_stream,
}
BODIES = {
    "header only": b"",
    "small": b"FastDFS" * 5,
    "larger than the receive buffer": bytes(range(256)) * 1000,
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    ("body", "bytewise"),
    [(body, False) for body in BODIES.values()]
    + [(body, True) for body in BODIES.values() if len(body) < 1000],
    ids=[f"{name}, whole" for name in BODIES]
    + [f"{name}, byte by byte" for name, body in BODIES.items() if len(body) < 1000],
)
async def test_reply_received_and_connection_reusable(
    transport: str, reader: str, body: bytes, bytewise: bool
) -> None:
    with trio.fail_after(DEADLINE):
        async with TRANSPORTS[transport]() as (conn, server):
            for round_ in range(3):  # the same connection, again and again
                await start(conn, server)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(send, server, reply(body), bytewise=bytewise))
                    header = await conn.receive_header()
                    assert header.length == len(body)
                    assert await READERS[reader](conn) == body
                assert conn.state is ConnState.IDLE and conn.uses == round_ + 1
                assert not conn.looks_closed()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("body", [b"", b"abc"], ids=["header only", "small"])
async def test_bytes_beyond_the_reply_break_the_connection(
    transport: str, reader: str, body: bytes
) -> None:
    with trio.fail_after(DEADLINE):
        async with TRANSPORTS[transport]() as (conn, server):
            await start(conn, server)
            await server.send_all(reply(body) + b"junk!")  # one segment on loopback
            with pytest.raises(ProtocolError, match=f"{conn.addr} sent 5 bytes beyond its reply"):
                await conn.receive_header()
                await READERS[reader](conn)
            assert conn.state is ConnState.BROKEN


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bytes_after_a_large_reply_are_left_for_the_pool_to_see(transport: str) -> None:
    """Body reads never ask for more than the reply owes, so the junk stays unread;
    an idle TCP connection with unread bytes is found by `looks_closed`."""
    body = bytes(200_000)
    with trio.fail_after(DEADLINE):
        async with TRANSPORTS[transport]() as (conn, server):
            await start(conn, server)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.send_all, reply(body) + b"junk")
                await conn.receive_header()
                assert await read_into(conn) == body
            assert conn.state is ConnState.IDLE
            if transport == "tcp":
                assert conn.looks_closed()
            else:
                assert await conn.stream.receive_some(100) == b"junk"


CUTS = {
    "no reply": b"",
    "half a header": reply(b"abcdef")[:5],
    "half a body": reply(b"abcdef")[:13],
    "half a large body": reply(bytes(100_000))[:70_000],
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("cut", CUTS.values(), ids=list(CUTS))
async def test_server_closing_mid_reply(transport: str, reader: str, cut: bytes) -> None:
    with trio.fail_after(DEADLINE):
        async with TRANSPORTS[transport]() as (conn, server):
            await start(conn, server)
            await server.send_all(cut)
            await server.aclose()
            expected = "without replying" if not cut else "closed the connection"
            with pytest.raises(ConnectionClosed, match=expected) as caught:
                await conn.receive_header()
                await READERS[reader](conn)
            assert str(conn.addr) in str(caught.value)
            assert conn.state is ConnState.BROKEN and not conn.reusable


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("reader", READERS)
async def test_cancelled_mid_body_is_never_pooled(transport: str, reader: str) -> None:
    pool = ConnectionPool()
    with trio.fail_after(DEADLINE):
        async with TRANSPORTS[transport]() as (conn, server):
            await start(conn, server)
            await server.send_all(reply(bytes(100_000))[:30_000])
            await conn.receive_header()
            with trio.move_on_after(0.2) as scope:
                await READERS[reader](conn)
            assert scope.cancelled_caught
            assert conn.reply_started and conn.body_remaining > 0
            assert state(conn) is ConnState.BUSY and not conn.reusable
            await pool.release(conn)
            assert state(conn) is ConnState.CLOSED and pool.idle_count() == 0
    await pool.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reply_with_another_command_breaks_the_connection(transport: str) -> None:
    with trio.fail_after(DEADLINE):
        async with TRANSPORTS[transport]() as (conn, server):
            await start(conn, server)
            await server.send_all(reply(b"x", cmd=Cmd.ACTIVE_TEST))
            with pytest.raises(ProtocolError, match=f"storage {conn.addr} replied with command"):
                await conn.receive_header()
            assert conn.state is ConnState.BROKEN


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reply_ending_with_the_server_closing(transport: str) -> None:
    """FETCH_ONE_PATH_BINLOG: a header announcing no real length, then data until close."""
    data = b"1700000000 C M00/00/00/abc.txt\n" * 5000
    with trio.fail_after(DEADLINE):
        async with TRANSPORTS[transport]() as (conn, server):
            await start(conn, server)

            async def serve() -> None:
                await server.send_all(encode_header(BINLOG_STREAM_LENGTH, Cmd.RESP, 0) + data)
                await server.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                await conn.receive_header()
                got = bytearray()
                buf = bytearray(8192)
                while n := await conn.receive_until_close_into(memoryview(buf)):
                    got += buf[:n]
            assert got == data
            assert conn.state is ConnState.BROKEN


async def test_status_sent_before_a_refused_payload_is_reported() -> None:
    """A storage that answers an upload's header and closes: its status, not 'closed'."""
    with trio.fail_after(DEADLINE):
        async with tcp_pair() as (conn, server):
            payload = bytes(16 << 20)

            async def refuse() -> None:
                await server.receive_some(10)
                await server.send_all(reply(status=28))
                await server.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(refuse)
                with pytest.raises(ServerError, match="upload to test") as caught:
                    await conn.send_request(
                        Request(Cmd.UPLOAD_FILE, b"", payload_size=len(payload)),
                        payload,
                        what="upload to test",
                    )
            assert caught.value.errno == 28
            assert not conn.reusable
