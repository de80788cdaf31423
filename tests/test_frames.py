"""FrameDecoder and header codec, table driven: whole, byte by byte, chunked, trailing data."""

from __future__ import annotations

import itertools
import random
import socket
import threading
from collections.abc import Callable, Iterator
from functools import partial

import golden
import pytest

from fdfsmount.proto.constants import HEADER_SIZE, Cmd
from fdfsmount.proto.errors import ConnectionClosed, LocalProtocolError, ProtocolError
from fdfsmount.proto.frames import NEED_DATA, Frame, FrameDecoder, NeedData
from fdfsmount.proto.message import Request
from fdfsmount.proto.sockframes import new_decoder, receive_reply
from fdfsmount.proto.wire import Header, decode_header, decode_header_at, encode_header


def frame(body: bytes = b"", cmd: int = Cmd.RESP, status: int = 0) -> Frame:
    return Frame(Header(len(body), cmd, status), body)


def wire(*frames: Frame) -> bytes:
    return b"".join(f.header.encode() + f.body for f in frames)


GOLDEN_FRAMES = [
    rec for rec in golden.all_records() if rec.response and rec.name != "fetch_one_path_binlog"
]

# (id, stream, frames it holds)
CASES: list[tuple[str, bytes, list[Frame]]] = [
    ("empty stream", b"", []),
    ("header-only ok", wire(frame()), [frame()]),
    ("header-only EINVAL", wire(frame(status=22)), [frame(status=22)]),
    ("short body", wire(frame(b"FastDF")), [frame(b"FastDF")]),
    ("request with status flags", wire(frame(b"x" * 60, Cmd.QUERY_FILE_INFO, 2)),
     [frame(b"x" * 60, Cmd.QUERY_FILE_INFO, 2)]),
    ("body full of header-like bytes", wire(frame(bytes(HEADER_SIZE) * 3)),
     [frame(bytes(HEADER_SIZE) * 3)]),
    ("three in a row", wire(frame(b"a"), frame(), frame(b"bc", status=2)),
     [frame(b"a"), frame(), frame(b"bc", status=2)]),
    *(
        (f"golden {r.id}", r.response, [Frame(decode_header(r.response[:10]), r.response[10:])])
        for r in GOLDEN_FRAMES
    ),
]  # fmt: skip
CASE_IDS = [case[0] for case in CASES]


def whole(data: bytes) -> Iterator[bytes]:
    yield data


def byte_by_byte(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def random_chunks(data: bytes, seed: int = 7) -> Iterator[bytes]:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        step = rng.choice((1, 2, 9, 10, 11, rng.randrange(1, 4096)))
        yield data[pos : pos + step]
        pos += step


def as_memoryviews(data: bytes) -> Iterator[memoryview]:
    for chunk in random_chunks(data, seed=3):
        yield memoryview(bytearray(chunk))


Chunk = bytes | memoryview
FEEDERS: dict[str, Callable[[bytes], Iterator[Chunk]]] = {
    "whole": whole,
    "byte by byte": byte_by_byte,
    "random chunks": random_chunks,
    "memoryviews": as_memoryviews,
}


def run(decoder: FrameDecoder, chunks: Iterator[bytes | memoryview]) -> list[Frame]:
    frames = []
    for chunk in chunks:
        decoder.feed(chunk)
        while True:
            got = decoder.next_frame()
            if got is NEED_DATA:
                break
            assert isinstance(got, Frame)
            frames.append(got)
    return frames


def feeders_for(stream: bytes) -> Iterator[tuple[str, Callable[[bytes], Iterator[Chunk]]]]:
    """Every feeder, by name; byte by byte becomes random chunks for the 200 KiB replies."""
    for feeder, feed in FEEDERS.items():
        if feeder == "byte by byte" and len(stream) > 100_000:
            yield feeder, partial(random_chunks, seed=11)
        else:
            yield feeder, feed


def trailers() -> list[tuple[str, bytes]]:
    """What a receive loop may find after the last reply: nothing, or part of another."""
    return [("none", b""), *zip(TRAILER_IDS, TRAILERS, strict=True)]


# One test per case, every feeder (and trailer) in a loop: the same checks as a
# parametrized cross product, without thousands of test items to collect and run.
@pytest.mark.parametrize(("name", "stream", "expected"), CASES, ids=CASE_IDS)
def test_frames_whatever_the_chunking(name: str, stream: bytes, expected: list[Frame]) -> None:
    for feeder, feed in feeders_for(stream):
        decoder = FrameDecoder()
        assert run(decoder, feed(stream)) == expected, feeder
        assert decoder.trailing == b"", feeder
        assert decoder.next_frame() is NEED_DATA, feeder


TRAILERS = [
    b"\0",  # one byte of the next header
    bytes(HEADER_SIZE - 1),  # all but one byte of it
    encode_header(5, Cmd.RESP) + b"abc",  # a whole header, part of its body
]


TRAILER_IDS = ["1 byte", "9 bytes", "header+partial body"]


@pytest.mark.parametrize("trailer", TRAILERS, ids=TRAILER_IDS)
@pytest.mark.parametrize(("name", "stream", "expected"), CASES[1:8], ids=CASE_IDS[1:8])
def test_trailing_data_is_kept(
    name: str, stream: bytes, expected: list[Frame], trailer: bytes
) -> None:
    for feeder in FEEDERS.values():
        decoder = FrameDecoder()
        assert run(decoder, feeder(stream + trailer)) == expected
        assert decoder.next_frame() is NEED_DATA
        if len(trailer) >= HEADER_SIZE:
            # The header was taken; only the body bytes stay buffered.
            assert decoder.next_header() == decode_header(trailer[:HEADER_SIZE])
            assert decoder.trailing == trailer[HEADER_SIZE:]
        else:
            assert decoder.trailing == trailer


def test_next_header_does_not_consume_the_body() -> None:
    decoder = FrameDecoder()
    decoder.feed(wire(frame(b"hello")))
    header = decoder.next_header()
    assert header == Header(5, Cmd.RESP, 0)
    assert decoder.next_header() == header  # same header until the frame is taken
    assert decoder.trailing == b"hello"
    assert decoder.next_frame() == frame(b"hello")
    assert decoder.next_header() is NEED_DATA


def serve_loop(decoder: FrameDecoder, chunks: Iterator[Chunk], limit: int) -> list[Frame]:
    """A server's reading: a message whole when it can, else header, then body."""
    frames = []
    for chunk in chunks:
        decoder.feed(chunk)
        while True:
            message = decoder.next_message(limit)
            if not isinstance(message, NeedData):
                frames.append(Frame(*message))
                continue
            header = decoder.next_header()
            if isinstance(header, NeedData):
                break
            body = decoder.read_body(header.length)
            if isinstance(body, NeedData):
                break
            frames.append(Frame(header, body))
    return frames


@pytest.mark.parametrize("limit", [0, 6, 16 << 20])
@pytest.mark.parametrize(("name", "stream", "expected"), CASES, ids=CASE_IDS)
def test_next_message_or_header_and_body_whatever_the_chunking(
    name: str, stream: bytes, expected: list[Frame], limit: int
) -> None:
    for feeder, feed in feeders_for(stream):
        decoder = FrameDecoder()
        assert serve_loop(decoder, feed(stream), limit) == expected, feeder
        assert decoder.trailing == b"", feeder


@pytest.mark.parametrize(
    ("why", "data", "limit", "cmds"),
    [
        ("part of the header", wire(frame(b"abc"))[:9], 100, None),
        ("part of the body", wire(frame(b"abc"))[:12], 100, None),
        ("body over the limit", wire(frame(b"abc")), 2, None),
        ("command not asked for", wire(frame(b"abc", Cmd.UPLOAD_FILE)), 100, {Cmd.DELETE_FILE}),
    ],
)
def test_next_message_takes_nothing_unless_it_takes_all(
    why: str, data: bytes, limit: int, cmds: set[int] | None
) -> None:
    decoder = FrameDecoder()
    decoder.feed(data)
    assert decoder.next_message(limit, cmds) is NEED_DATA
    assert decoder.trailing == data  # the slow path starts from the same bytes
    if len(data) >= HEADER_SIZE:
        assert decoder.next_header() == decode_header(data[:HEADER_SIZE])


def test_next_message_waits_while_a_body_is_under_way() -> None:
    decoder = FrameDecoder()
    decoder.feed(wire(frame(b"abc"), frame(b"de")))
    assert decoder.next_header() == Header(3, Cmd.RESP, 0)
    assert decoder.next_message(100) is NEED_DATA  # "abc" is the current body
    assert decoder.read_body(3) == b"abc"
    assert decoder.next_message(100, {Cmd.RESP}) == (Header(2, Cmd.RESP, 0), b"de")
    assert decoder.next_header() is NEED_DATA
    assert decoder.buffered == 0


def test_receive_message_receives_only_when_drained() -> None:
    stream = [wire(frame(b"abc"), frame(b"de")), wire(frame(b"fgh"))[:12], b""]
    calls = []

    def recv_into(view: memoryview) -> int:
        chunk = stream.pop(0)
        calls.append(len(chunk))
        view[: len(chunk)] = chunk
        return len(chunk)

    decoder = FrameDecoder()
    assert decoder.receive_message(recv_into, 100) == (Header(3, Cmd.RESP, 0), b"abc")
    assert decoder.receive_message(recv_into, 100) == (Header(2, Cmd.RESP, 0), b"de")
    assert calls == [25]  # the second came with the first: no receive for it
    assert decoder.receive_message(recv_into, 100) is NEED_DATA  # part of a body
    assert decoder.trailing == wire(frame(b"fgh"))[:12]
    assert decoder.receive_message(recv_into, 100) is NEED_DATA  # buffered: no receive
    assert calls == [25, 12]
    assert decoder.next_header() == Header(3, Cmd.RESP, 0)
    decoder.feed(b"h")
    assert decoder.read_body(3) == b"fgh"
    assert decoder.receive_message(recv_into, 100) is None  # EOF between messages
    assert calls == [25, 12, 0]


def test_receive_message_refuses_an_impossible_count() -> None:
    decoder = FrameDecoder(buffer_size=64)
    with pytest.raises(LocalProtocolError):
        decoder.receive_message(lambda view: len(view) + 1, 100)


@pytest.mark.parametrize("feeder", FEEDERS, ids=list(FEEDERS))
def test_oversized_body_rejected(feeder: str) -> None:
    decoder = FrameDecoder(max_body=100)
    fed = 0
    for chunk in FEEDERS[feeder](encode_header(101, Cmd.RESP) + b"x" * 20):
        decoder.feed(chunk)
        fed += len(chunk)
        if fed < HEADER_SIZE:
            assert decoder.next_frame() is NEED_DATA
        else:  # refused as soon as the header is there, before buffering the body
            with pytest.raises(ProtocolError):
                decoder.next_frame()
    # Still refused on every later call: the connection must be dropped.
    with pytest.raises(ProtocolError):
        decoder.next_frame()


def test_body_of_exactly_max_body_is_accepted() -> None:
    decoder = FrameDecoder(max_body=100)
    decoder.feed(wire(frame(b"y" * 100)))
    assert decoder.next_frame() == frame(b"y" * 100)


@pytest.mark.parametrize("length", [1 << 58, (1 << 64) - 1, 16 << 20 | 1])
def test_huge_header_goes_to_the_streaming_layer(length: int) -> None:
    """Downloads and the binlog stream are read after next_header(), not buffered."""
    decoder = FrameDecoder()
    decoder.feed(encode_header(length, Cmd.RESP) + b"first bytes")
    assert decoder.next_header() == Header(length, Cmd.RESP, 0)
    assert decoder.trailing == b"first bytes"
    with pytest.raises(ProtocolError):
        decoder.next_frame()


# ------------------------------------------------------------------- header


@pytest.mark.parametrize(
    ("raw", "header"),
    [
        (bytes(8) + b"d\0", Header(0, 100, 0)),
        (b"\0\0\0\0\0\0\0\x28d\x00", Header(40, 100, 0)),
        (b"\0\0\0\0\0\0\0\0d\x16", Header(0, 100, 22)),
        (b"\x04" + bytes(7) + b"d\0", Header(1 << 58, 100, 0)),
        (b"\xff" * 10, Header((1 << 64) - 1, 255, 255)),
    ],
)
def test_header_round_trip(raw: bytes, header: Header) -> None:
    assert decode_header(raw) == header
    assert decode_header(memoryview(raw)) == header
    assert decode_header(bytearray(raw)) == header
    assert decode_header_at(bytearray(b"xyz" + raw + b"trailing"), 3) == header
    assert header.encode() == raw


@pytest.mark.parametrize("size", [0, 1, 9, 11, 20])
def test_header_of_wrong_size(size: int) -> None:
    with pytest.raises(ProtocolError):
        decode_header(bytes(size))


@pytest.mark.parametrize(
    ("length", "cmd", "status"),
    [(-1, 100, 0), (1 << 64, 100, 0), (0, 256, 0), (0, -1, 0), (0, 100, 256), (0, 100, -1)],
)
def test_header_values_out_of_range(length: int, cmd: int, status: int) -> None:
    with pytest.raises(LocalProtocolError):
        encode_header(length, cmd, status)


def test_request_length_counts_the_streamed_payload() -> None:
    req = Request(Cmd.UPLOAD_FILE, b"head", payload_size=1000)
    assert req.length == 1004
    assert req.encode() == encode_header(1004, Cmd.UPLOAD_FILE) + b"head"
    with pytest.raises(LocalProtocolError):
        Request(Cmd.QUERY_FILE_INFO, b"", status=300).encode()


# ------------------------------------------------- streaming a body, zero copy


def receive(decoder: FrameDecoder, data: bytes) -> None:
    """What the I/O layer does: receive straight into the decoder's buffer."""
    view = decoder.recv_buffer(len(data))
    view[: len(data)] = data
    decoder.received(len(data))


@pytest.mark.parametrize("feeder", FEEDERS, ids=list(FEEDERS))
def test_pipelined_requests_with_streamed_payloads(feeder: str) -> None:
    """Header, a fixed part, a payload taken in pieces, then the next request."""
    payload = bytes(range(256)) * 40
    stream = wire(frame(b"HEAD" + payload, Cmd.UPLOAD_FILE), frame(b"", Cmd.ACTIVE_TEST))
    decoder = FrameDecoder(buffer_size=64)
    events: list[object] = []
    got = bytearray()
    state = "header"
    for chunk in FEEDERS[feeder](stream):
        receive(decoder, bytes(chunk))
        while True:
            if state == "header":
                header = decoder.next_header()
                if header is NEED_DATA:
                    break
                events.append(header)
                state = "head" if decoder.body_remaining else "header"
            elif state == "head":
                head = decoder.read_body(4)
                if head is NEED_DATA:
                    break
                events.append(head)
                state = "payload"
            else:
                piece = decoder.take_body(1000)
                if not piece:
                    break
                got += piece
                if decoder.body_remaining == 0:
                    state = "header"
    assert events == [
        Header(4 + len(payload), Cmd.UPLOAD_FILE, 0),
        b"HEAD",
        Header(0, Cmd.ACTIVE_TEST, 0),
    ]
    assert bytes(got) == payload
    assert decoder.buffered == 0 and decoder.want == HEADER_SIZE


def test_body_received_outside_the_buffer_keeps_the_decoder_in_step() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_header(100, Cmd.RESP) + b"x" * 30)
    assert decoder.next_header() == Header(100, Cmd.RESP, 0)
    assert decoder.want == 70  # what to receive straight into the caller's memory
    assert bytes(decoder.take_body()) == b"x" * 30
    with pytest.raises(LocalProtocolError):
        decoder.body_received(71)
    decoder.body_received(70)
    assert decoder.body_remaining == 0
    decoder.feed(wire(frame(b"next")))
    assert decoder.next_frame() == frame(b"next")


def test_body_received_refuses_while_bytes_are_buffered() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_header(10, Cmd.RESP) + b"abc")
    decoder.next_header()
    with pytest.raises(LocalProtocolError):
        decoder.body_received(3)


def test_read_body_past_the_message_is_a_local_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(wire(frame(b"abc"), frame(b"def")))
    decoder.next_header()
    with pytest.raises(LocalProtocolError):
        decoder.read_body(4)  # would eat into the next message
    assert decoder.read_body(3) == b"abc"
    assert decoder.next_frame() == frame(b"def")


def test_read_body_larger_than_the_buffer_grows_it() -> None:
    decoder = FrameDecoder(buffer_size=16)
    body = bytes(range(200))
    for i in range(0, len(body) + HEADER_SIZE, 7):
        receive(decoder, (encode_header(200, Cmd.RESP) + body)[i : i + 7])
    assert decoder.next_header() == Header(200, Cmd.RESP, 0)
    assert decoder.read_body(200) == body


def test_views_survive_compaction_of_the_buffer() -> None:
    """recv_buffer moves kept bytes to the front; a taken view was used before that."""
    decoder = FrameDecoder(buffer_size=32)
    receive(decoder, encode_header(40, Cmd.RESP) + b"a" * 22)
    decoder.next_header()
    assert bytes(decoder.take_body(20)) == b"a" * 20
    receive(decoder, b"b" * 18)  # needs the room taken by consumed bytes
    assert bytes(decoder.take_body()) == b"aa" + b"b" * 18
    assert decoder.body_remaining == 0


# ------------------------------------------------- the client's receive loop


class FakeSocket:
    """Delivers ``chunks`` as a socket would: one recv returns at most what one chunk holds."""

    def __init__(self, chunks: Iterator[bytes | memoryview]) -> None:
        self.pending = [bytes(c) for c in chunks]
        self.calls = 0

    def recv_into(self, view: memoryview) -> int:
        self.calls += 1
        if not self.pending:
            return 0
        chunk = self.pending[0]
        n = min(len(view), len(chunk))
        view[:n] = chunk[:n]
        if n == len(chunk):
            self.pending.pop(0)
        else:
            self.pending[0] = chunk[n:]
        return n

    @property
    def rest(self) -> bytes:
        return b"".join(self.pending)


def client_receive(decoder: FrameDecoder, sock: FakeSocket) -> tuple[Frame, int] | None:
    """One reply as `Connection` reads it: the header into the decoder's buffer,
    the body into a buffer of its final size -- copied from what the header read
    picked up, the rest received straight into it. Returns the frame and the
    body bytes that went through the decoder's buffer; None at EOF."""
    while True:
        header = decoder.next_header()
        if not isinstance(header, NeedData):
            break
        n = sock.recv_into(decoder.recv_buffer())
        if not n:
            return None
        decoder.received(n)
    body = bytearray(header.length)
    view = memoryview(body)
    got = copied = 0
    while decoder.body_remaining:
        if decoder.buffered:
            part = decoder.take_body(len(body) - got)
            view[got : got + len(part)] = part
            copied += len(part)
            got += len(part)
        else:
            n = sock.recv_into(view[got : got + decoder.body_remaining])
            assert n, "EOF inside a body"
            decoder.body_received(n)
            got += n
    return Frame(header, bytes(body)), copied


CLIENT_BUFFER = 64


@pytest.mark.parametrize(("name", "stream", "expected"), CASES, ids=CASE_IDS)
def test_client_receive_loop(name: str, stream: bytes, expected: list[Frame]) -> None:
    for (feeder, feed), (trailer_id, trailer) in itertools.product(feeders_for(stream), trailers()):
        how = f"{feeder}, trailer {trailer_id}"
        decoder = FrameDecoder(buffer_size=CLIENT_BUFFER)
        sock = FakeSocket(feed(stream + trailer))
        for want in expected:
            got = client_receive(decoder, sock)
            assert got is not None, how
            frame_got, copied = got
            assert frame_got == want, how
            # Zero copy: only what the header read picked up went through the buffer.
            assert copied <= CLIENT_BUFFER - HEADER_SIZE, how
            assert decoder.body_remaining == 0, how
        # Nothing read past the last reply is lost or invented: it is either still
        # buffered (picked up by a header read) or unread.
        assert decoder.trailing + sock.rest == trailer, how
        # The buffer never grew, and a drained one offers all its room again.
        if decoder.buffered == 0:
            assert len(decoder.recv_buffer()) == CLIENT_BUFFER, how


def test_small_exchanges_take_one_receive_each() -> None:
    """Replies that fit the buffer arrive with one recv, however many came before."""
    decoder = FrameDecoder(buffer_size=CLIENT_BUFFER)
    reply = wire(frame(b"r" * 40))
    for _ in range(50):
        sock = FakeSocket(iter([reply]))
        got = client_receive(decoder, sock)
        assert got is not None and got[0] == frame(b"r" * 40)
        assert sock.calls == 1
        assert decoder.buffered == 0


# ------------------------------------------------- one reply on a blocking socket

REPLY_CASES = [case for case in CASES if all(f.header.cmd == Cmd.RESP for f in case[2])]


@pytest.mark.parametrize(
    ("name", "stream", "expected"), REPLY_CASES, ids=[c[0] for c in REPLY_CASES]
)
def test_receive_reply(name: str, stream: bytes, expected: list[Frame]) -> None:
    for (feeder, feed), (trailer_id, trailer) in itertools.product(feeders_for(stream), trailers()):
        how = f"{feeder}, trailer {trailer_id}"
        decoder = new_decoder(max_body=1 << 20)
        sock = FakeSocket(feed(stream + trailer))
        for want in expected:
            assert receive_reply(sock, decoder, peer="storage 127.0.0.1:23000") == want, how
        assert decoder.trailing + sock.rest == trailer, how
        if not trailer:
            assert receive_reply(sock, decoder, peer="s", allow_eof=True) is None, how


def test_receive_reply_small_reply_is_one_recv() -> None:
    sock = FakeSocket(iter([wire(frame(b"x" * 4096))]))
    assert receive_reply(sock, new_decoder(4096), peer="s") == frame(b"x" * 4096)
    assert sock.calls == 1


@pytest.mark.parametrize("feeder", FEEDERS, ids=list(FEEDERS))
@pytest.mark.parametrize(
    ("stream", "error", "message"),
    [
        (b"", ConnectionClosed, "storage s closed the connection in the middle of a reply"),
        (wire(frame(b"abc"))[:5], ConnectionClosed, "in the middle of a reply"),
        (wire(frame(b"x" * 90))[:60], ConnectionClosed, "with 40 reply bytes outstanding"),
        (wire(frame(b"abc", Cmd.ACTIVE_TEST)), ProtocolError, "replied with command 111"),
        (wire(frame(b"y" * 101)), ProtocolError, "sent a 101-byte reply body .limit 100"),
    ],
    ids=["nothing", "half a header", "half a body", "not a reply", "too large"],
)
def test_receive_reply_errors(
    stream: bytes, error: type[Exception], message: str, feeder: str
) -> None:
    sock = FakeSocket(FEEDERS[feeder](stream))
    with pytest.raises(error, match=message):
        receive_reply(sock, new_decoder(100), peer="storage s")


def test_receive_reply_over_a_socket_pair() -> None:
    """Header, then a body larger than the decoder's buffer, then trailing bytes."""
    body = bytes(range(256)) * 1024
    left, right = socket.socketpair()
    with left, right:
        sender = threading.Thread(target=right.sendall, args=(wire(frame(body)) + b"more",))
        sender.start()
        decoder = new_decoder(max_body=len(body))
        assert receive_reply(left, decoder, peer="s") == frame(body)
        sender.join()
        assert decoder.trailing + left.recv(10) == b"more"


def test_a_reused_buffer_starts_empty_and_stays_in_use() -> None:
    """A server thread hands each new connection's decoder the buffer its last one
    used: bytes left in it from before are not part of the new stream, and the
    decoder receives into it rather than into a new one."""
    buffer = bytearray(64)
    stale = FrameDecoder(buffer_size=64, buffer=buffer)
    stale.feed(wire(frame(b"old request")) + b"\xff" * 5)  # and a half-received header
    decoder = FrameDecoder(buffer_size=64, buffer=buffer)
    assert decoder.buffered == 0 and decoder.next_header() is NEED_DATA
    stream = wire(frame(b"new"), frame(b"", Cmd.ACTIVE_TEST))
    chunks = iter([stream[:7], stream[7:]])

    def recv_into(view: memoryview) -> int:
        assert view.obj is buffer  # received straight into the reused buffer
        chunk = next(chunks)
        view[: len(chunk)] = chunk
        return len(chunk)

    assert decoder.receive(recv_into) == 7
    assert decoder.next_frame() is NEED_DATA
    assert decoder.receive(recv_into) == len(stream) - 7
    assert decoder.next_frame() == frame(b"new")
    assert decoder.next_frame() == frame(b"", Cmd.ACTIVE_TEST)


def test_a_buffer_smaller_than_asked_for_is_not_used() -> None:
    small = bytearray(16)
    decoder = FrameDecoder(buffer_size=64, buffer=small)
    assert decoder.recv_buffer().obj is not small and len(decoder.recv_buffer()) == 64
