"""A scripted FastDFS peer over trio memory streams that replays golden replies.

`ScriptedNetwork.connect` is a `Client(connect=...)` hook: each connection
gets a fresh `trio.testing.memory_stream_pair` whose far end is served by the
`ScriptedServer` registered for that address, in a trio system task.

A server answers each request with, in this order of preference:
an action queued for the request's command (`queue`), the golden reply whose
captured request bytes equal the received ones exactly (`add_golden`), or --
for anything unexpected -- by closing the connection and recording the request
in ``unexpected``, so a test can check that our encoder sent the very bytes
the upstream C client sent.
"""

from __future__ import annotations

import errno
import json
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import trio
import trio.testing

from fdfsmount.proto import ServerAddr
from fdfsmount.proto.constants import Cmd
from fdfsmount.proto.frames import FrameDecoder, NeedData
from fdfsmount.proto.wire import encode_header

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden" / "transcripts"


@dataclass(frozen=True)
class Golden:
    name: str
    server: str
    cmd: int
    request: bytes
    response: bytes
    closed_after: bool
    notes: str

    @property
    def body(self) -> bytes:
        return self.response[10:]


@cache
def load_golden(mode: str = "storage-id-mode") -> dict[str, Golden]:
    records = {}
    for line in (GOLDEN_DIR / f"{mode}.jsonl").read_text().splitlines():
        raw = json.loads(line)
        records[raw["name"]] = Golden(
            raw["name"],
            raw["server"],
            raw["cmd"],
            bytes.fromhex(raw["request_hex"]),
            bytes.fromhex(raw["response_hex"]),
            raw["closed_after"],
            raw["notes"],
        )
    return records


def reply(status: int = 0, body: bytes = b"") -> bytes:
    """A reply message: header (command 100) plus body."""
    return encode_header(len(body), Cmd.RESP, status) + body


# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Reply:
    data: bytes
    close: bool = False  # close the connection after sending


@dataclass(frozen=True)
class Cut:
    """Send these bytes (a reply cut short), then close."""

    data: bytes


@dataclass(frozen=True)
class Hang:
    """Read the request, then never answer (optionally after sending ``data``)."""

    data: bytes = b""


@dataclass(frozen=True)
class Close:
    """Close the connection without a reply."""


@dataclass(frozen=True)
class Refuse:
    """Answer right after the request header, without reading its body, then close
    (as a storage refuses an upload it cannot take)."""

    data: bytes


Action = Reply | Cut | Hang | Close | Refuse


def golden_reply(record: Golden) -> Reply:
    return Reply(record.response, close=record.closed_after)


@dataclass(frozen=True)
class Received:
    cmd: int
    status: int
    body: bytes
    raw: bytes


@dataclass
class ScriptedServer:
    addr: ServerAddr
    refuse: bool = False  # connection refused
    hang_on_connect: bool = False  # connect never completes
    connections: int = 0  # connections accepted so far
    open_connections: int = 0
    requests: list[Received] = field(default_factory=list)
    unexpected: list[Received] = field(default_factory=list)
    _by_cmd: dict[int, deque[Action]] = field(default_factory=lambda: defaultdict(deque))
    _by_request: dict[bytes, deque[Golden]] = field(default_factory=lambda: defaultdict(deque))

    def add_golden(self, *records: Golden) -> ScriptedServer:
        """Answer requests equal to these records' requests with their replies.

        Records with the same request are used in order; the last one stays.
        """
        for record in records:
            self._by_request[record.request].append(record)
        return self

    def queue(self, cmd: int, *actions: Action) -> ScriptedServer:
        """Answer the next requests with command ``cmd`` by these actions, in order."""
        self._by_cmd[cmd].extend(actions)
        return self

    def commands(self) -> list[int]:
        return [r.cmd for r in self.requests]

    def _answer(self, received: Received) -> Action:
        queued = self._by_cmd.get(received.cmd)
        if queued:
            return queued.popleft()
        records = self._by_request.get(received.raw)
        if records:
            record = records.popleft() if len(records) > 1 else records[0]
            return golden_reply(record)
        self.unexpected.append(received)
        return Close()

    async def serve(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        self.open_connections += 1
        decoder = FrameDecoder(max_body=1 << 30)
        try:
            while True:
                header = decoder.next_header()
                if isinstance(header, NeedData):
                    if not await _receive(stream, decoder):
                        return
                    continue
                cmd, status, head = header.cmd, header.status, header.encode()
                queued = self._by_cmd.get(cmd)
                if queued and isinstance(refusal := queued[0], Refuse):
                    queued.popleft()
                    self.requests.append(Received(cmd, status, b"", head))
                    await stream.send_all(refusal.data)
                    return
                while isinstance(body := decoder.read_body(header.length), NeedData):
                    if not await _receive(stream, decoder):
                        return
                received = Received(cmd, status, body, head + body)
                self.requests.append(received)
                action = self._answer(received)
                if isinstance(action, Hang):
                    if action.data:
                        await stream.send_all(action.data)
                    await trio.sleep_forever()
                if isinstance(action, Reply | Cut):
                    await stream.send_all(action.data)
                if not isinstance(action, Reply) or action.close:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self.open_connections -= 1
            await trio.aclose_forcefully(stream)


async def _receive(stream: trio.abc.Stream, decoder: FrameDecoder) -> bool:
    """Feed what arrives next to ``decoder``; False once the client closed."""
    chunk = await stream.receive_some()
    decoder.feed(chunk)
    return bool(chunk)


class ScriptedNetwork:
    """Addresses -> scripted servers; `connect` is the client's connect hook."""

    def __init__(self) -> None:
        self.servers: dict[ServerAddr, ScriptedServer] = {}

    def add(self, host: str, port: int, golden: Iterable[Golden] = ()) -> ScriptedServer:
        server = ScriptedServer(ServerAddr(host, port))
        server.add_golden(*golden)
        self.servers[server.addr] = server
        return server

    def unexpected(self) -> list[tuple[ServerAddr, Received]]:
        return [(s.addr, r) for s in self.servers.values() for r in s.unexpected]

    async def connect(self, addr: ServerAddr) -> trio.abc.Stream:
        server = self.servers.get(addr)
        if server is None or server.refuse:
            raise OSError(errno.ECONNREFUSED, "Connection refused")
        if server.hang_on_connect:
            await trio.sleep_forever()
        client_end, server_end = trio.testing.memory_stream_pair()
        trio.lowlevel.spawn_system_task(server.serve, server_end)
        return client_end
