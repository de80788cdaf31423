"""Fuzz the builtin servers: malformed and truncated requests never hurt them.

Each example sends one request (random or structured body, a declared
length that may disagree with it, possibly cut short) and hangs up; the
server must still answer ACTIVE_TEST on a fresh connection, stay alive, and
log no unexpected exception.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from builtin_nodes import Addr, BuiltinNodes, StorageSpec, exchange
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdfsmount.proto import storage as S
from fdfsmount.proto.tracker import active_test_request
from fdfsmount.proto.wire import decode_header, encode_header, pack_int

pytestmark = [pytest.mark.processes, pytest.mark.slow]

GROUP = "group1"
STORAGE_CMDS = [11, 12, 13, 14, 15, 16, 17, 21, 22, 23, 24, 26, 34, 36, 38, 82, 111, 0, 199, 255]
TRACKER_CMDS = [81, 82, 83, 90, 91, 92, 101, 102, 103, 104, 105, 106, 107, 111, 0, 199, 255]
INTERESTING_INTS = [0, 1, -1, 5, 16, 44, 45, 127, 128, 255, 1 << 31, (1 << 63) - 1, -(1 << 63)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BuiltinNodes, list[str]]]:
    specs = [StorageSpec(GROUP, "127.0.0.31", "100001"), StorageSpec(GROUP, "127.0.0.32", "100002")]
    root = tmp_path_factory.mktemp("fuzz")
    with BuiltinNodes(root, specs, tracker_host="127.0.0.30") as nodes:
        names = []
        for appender in (False, True):
            request = S.upload_request(4, "txt", appender=appender).encode() + b"fuzz"
            response, _ = exchange(nodes.storages[0].addr, request)
            names.append(response[26:].decode())
        yield nodes, names
        for proc in [nodes.tracker_proc, *(n.proc for n in nodes.storages)]:
            assert proc is not None and proc.running, f"{proc} died"
        for log in root.rglob("stderr.log"):
            text = log.read_text()
            assert "Traceback" not in text, f"{log}:\n{text[-3000:]}"


def field_parts(names: list[str]) -> st.SearchStrategy[bytes]:
    name_values = [n.encode() for n in names] + [b"M00/00/00/short", b"M09/ZZ/00/x", b"../../etc"]
    return st.one_of(
        st.sampled_from([pack_int(v) for v in INTERESTING_INTS]),
        st.integers(-(1 << 63), (1 << 63) - 1).map(pack_int),
        st.sampled_from([GROUP.encode().ljust(16, b"\0"), b"nosuchgroup".ljust(16, b"\0")]),
        st.sampled_from(name_values),
        st.binary(max_size=40),
        st.sampled_from([b"\xff", b"\x00", b"O", b"M", b"{}", b'{"offset": -5}']),
    )


@st.composite
def requests(draw: st.DrawFn, cmds: list[int], names: list[str]) -> bytes:
    cmd = draw(st.sampled_from(cmds))
    if draw(st.booleans()):
        body = draw(st.binary(max_size=400))
    else:
        body = b"".join(draw(st.lists(field_parts(names), max_size=8)))
    length = draw(
        st.one_of(
            st.just(len(body)),
            st.integers(0, len(body) + 64),
            st.sampled_from([1 << 20, 1 << 40, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]),
        )
    )
    status = draw(st.sampled_from([0, 0, 1, 2, 255]))
    data = encode_header(length, cmd, status) + body
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return data if cut is None else data[:cut]


def send_and_hang_up(addr: Addr, data: bytes) -> None:
    """Send, half-close, and read whatever comes until the server closes too.

    A server that keeps a half-closed connection open fails the example (timeout).
    """
    with socket.create_connection(addr, timeout=5) as sock, contextlib.suppress(ConnectionError):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


def assert_serving(addr: Addr) -> None:
    response, closed = exchange(addr, active_test_request().encode(), timeout=5)
    assert decode_header(response[:10]).status == 0 and not closed


def _fuzz(nodes: BuiltinNodes, addr: Addr, cmds: list[int], names: list[str]) -> None:
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(data=requests(cmds, names))
    def run(data: bytes) -> None:
        send_and_hang_up(addr, data)
        assert_serving(addr)

    run()


def test_fuzz_storage(cluster: tuple[BuiltinNodes, list[str]]) -> None:
    nodes, names = cluster
    _fuzz(nodes, nodes.storages[0].addr, STORAGE_CMDS, names)


def test_fuzz_tracker(cluster: tuple[BuiltinNodes, list[str]]) -> None:
    nodes, names = cluster
    _fuzz(nodes, nodes.tracker, TRACKER_CMDS, names)
    # The tracker still knows both storages after being fed junk.
    assert nodes.all_active()


def test_idle_half_open_clients_do_not_block_others(
    cluster: tuple[BuiltinNodes, list[str]], tmp_path: Path
) -> None:
    nodes, _ = cluster
    addr = nodes.storages[0].addr
    stalled = []
    try:
        for _ in range(20):
            sock = socket.create_connection(addr, timeout=2)
            sock.sendall(encode_header(1000, 11, 0) + b"\x00" * 7)  # a request that never ends
            stalled.append(sock)
        assert_serving(addr)
    finally:
        for sock in stalled:
            sock.close()
