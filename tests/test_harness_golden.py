"""Replay every golden 6.16.1 request against the builtin servers.

Each request captured from a real tracker or storage is sent, in file order,
to a builtin cluster laid out like the captured one, and the reply must have
the captured status, layout and connection behaviour (closed or kept open).
File IDs differ between runs: the IDs in captured replies to uploads and
renames are mapped to ours and substituted in later requests (they have the
same length, so header lengths still hold). Fields that vary (IDs,
timestamps, free space, counters, addresses) are compared by shape; file
content, metadata text, sizes and checksums byte for byte.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path

import golden
import pytest
from builtin_nodes import BuiltinNodes, StorageNode, StorageSpec, exchange

from fdfsmount.proto.constants import BINLOG_STREAM_LENGTH
from fdfsmount.proto.fileid import FileId, decode_file_id
from fdfsmount.proto.wire import decode_header

pytestmark = [pytest.mark.processes, pytest.mark.slow]

_NAME_RE = re.compile(rb"M[0-9A-F]{2}/[0-9A-F]{2}/[0-9A-F]{2}/[A-Za-z0-9_-]{27}[A-Za-z0-9_.-]*")
_BINLOG_LINE = re.compile(rb"\d+ [Cc] M[0-9A-F]{2}/[0-9A-F]{2}/[0-9A-F]{2}/\S+\n")
#: Commands whose reply bodies must match the capture byte for byte.
_EXACT_BODY = {14, 15}


def _layout(mode: str) -> tuple[list[StorageSpec], Path | None]:
    if mode == golden.STORAGE_ID_MODE:
        return [
            StorageSpec("group1", "127.0.0.1", "100001"),
            StorageSpec("group1", "127.0.0.1", "100002"),
            StorageSpec("group2", "127.0.0.1", "100003"),
        ], None
    return [StorageSpec("groupip", "127.0.0.3")], None


@pytest.fixture(scope="module", params=golden.MODES)
def replay(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, BuiltinNodes]]:
    mode: str = request.param
    specs, _ = _layout(mode)
    root = tmp_path_factory.mktemp(mode)
    if mode == golden.STORAGE_ID_MODE:
        # The capture's tracker sent every group-less upload query to group1
        # (load balance); a group2 without free space makes ours do the same.
        (root / "storage2").mkdir()
        (root / "storage2" / "DISK_FULL").write_text("full\n")
    with BuiltinNodes(root, specs, tracker_args=("--store-lookup", "load_balance")) as nodes:
        nodes.wait_synced()
        yield mode, nodes


def _storage_for(nodes: BuiltinNodes, rec: golden.GoldenRecord, request: bytes) -> StorageNode:
    if rec.cmd in (11, 23) and rec.response[9] == 0:
        return _node_of_name(nodes, rec.response[26:])
    if rec.cmd == 26:
        group = rec.request_body[:16].rstrip(b"\0").decode()
        return next(n for n in nodes.storages if n.spec.group == group)
    match = _NAME_RE.search(request)
    if match is not None:
        return _node_of_name(nodes, match.group(0))
    return nodes.storages[0]


def _node_of_name(nodes: BuiltinNodes, remote: bytes) -> StorageNode:
    if len(nodes.storages) == 1:
        return nodes.storages[0]
    info = decode_file_id(FileId("g", remote.decode()))
    return nodes.by_id(str(info.source_id))


def _check_binlog_stream(ours: bytes) -> None:
    header = decode_header(ours[:10])
    assert header.length == BINLOG_STREAM_LENGTH
    lines, trailer = ours[10:-8], ours[-8:]
    assert struct.unpack(">Q", trailer)[0] == len(lines)
    assert _BINLOG_LINE.sub(b"", lines) == b""


def test_golden_replay(replay: tuple[str, BuiltinNodes]) -> None:
    mode, nodes = replay
    names: dict[bytes, bytes] = {}
    failures: list[str] = []
    for rec in golden.load(mode):
        request = rec.request
        for captured in sorted(names, key=len, reverse=True):
            request = request.replace(captured, names[captured])
        node = None if rec.server == "tracker" else _storage_for(nodes, rec, request)
        addr = nodes.tracker if node is None else node.addr
        ours, closed = exchange(addr, request)
        problems = _compare(rec, ours, closed)
        if problems:
            failures.append(f"{rec.name}: {'; '.join(problems)}")
            continue
        if rec.cmd in (11, 21, 23, 38) and rec.response[9] == 0:
            names[rec.response[26:]] = ours[26:]
    assert not failures, "\n".join(failures)


def _compare(rec: golden.GoldenRecord, ours: bytes, closed: bool) -> list[str]:
    problems = []
    want = rec.response
    if closed != rec.closed_after:
        problems.append(f"closed_after {closed}, captured {rec.closed_after}")
    if not want:
        if ours:
            problems.append(f"expected no reply, got {ours[:20].hex()}")
        return problems
    if len(ours) < 10:
        return [*problems, f"short reply {ours.hex()}"]
    if ours[9] != want[9]:
        problems.append(f"status {ours[9]}, captured {want[9]}")
        return problems
    if rec.cmd == 26 and want[9] == 0:
        try:
            _check_binlog_stream(ours)
        except AssertionError as exc:
            problems.append(f"binlog stream malformed: {exc}")
        return problems
    if len(ours) != len(want):
        problems.append(f"reply of {len(ours)} bytes, captured {len(want)}")
        return problems
    if rec.cmd in _EXACT_BODY and ours[10:] != want[10:]:
        problems.append("reply body differs")
    # file info: size and crc32 are content facts; mtime and source IP vary
    info_differs = ours[10:18] != want[10:18] or ours[26:34] != want[26:34]
    if rec.cmd == 22 and want[9] == 0 and info_differs:
        problems.append(f"file info {ours[10:].hex()} vs {want[10:].hex()}")
    id_ok = ours[10:26] == want[10:26] and _NAME_RE.fullmatch(ours[26:])
    if rec.cmd in (11, 21, 23, 38) and want[9] == 0 and not id_ok:
        problems.append(f"file id {ours[10:]!r}")
    return problems
