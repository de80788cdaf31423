"""FrameDecoder and header codec, table driven: whole, byte by byte, chunked, trailing data."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import golden
import pytest

from fdfsmount.proto.constants import HEADER_SIZE, Cmd
from fdfsmount.proto.errors import LocalProtocolError, ProtocolError
from fdfsmount.proto.frames import NEED_DATA, Frame, FrameDecoder
from fdfsmount.proto.message import Request
from fdfsmount.proto.wire import Header, decode_header, encode_header


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


FEEDERS: dict[str, Callable[[bytes], Iterator[bytes | memoryview]]] = {
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


@pytest.mark.parametrize("feeder", FEEDERS, ids=list(FEEDERS))
@pytest.mark.parametrize(("name", "stream", "expected"), CASES, ids=CASE_IDS)
def test_frames_whatever_the_chunking(
    name: str, stream: bytes, expected: list[Frame], feeder: str
) -> None:
    stream_feed: Iterator[bytes | memoryview]
    if feeder == "byte by byte" and len(stream) > 100_000:
        stream_feed = random_chunks(stream, seed=11)  # keeps the 200 KiB replies quick
    else:
        stream_feed = FEEDERS[feeder](stream)
    decoder = FrameDecoder()
    assert run(decoder, stream_feed) == expected
    assert decoder.trailing == b""
    assert decoder.next_frame() is NEED_DATA


TRAILERS = [
    b"\0",  # one byte of the next header
    bytes(HEADER_SIZE - 1),  # all but one byte of it
    encode_header(5, Cmd.RESP) + b"abc",  # a whole header, part of its body
]


@pytest.mark.parametrize("trailer", TRAILERS, ids=["1 byte", "9 bytes", "header+partial body"])
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
