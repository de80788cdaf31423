"""Replay every golden FastDFS 6.16.1 exchange through the codec.

For each record of both transcript files:

* request side: parse the captured request with the server-side parsers, build
  the same request with the client encoders and compare bytes; the malformed
  raw-socket requests must be refused by the parsers instead;
* reply side: decode the captured reply with the client decoders and check the
  values against the README and the capture notes (or the error status);
* re-encode: the harness-side encoders turn the decoded values back into the
  exact captured bytes.

The expected values come from the notes and the README's layout tables, read
here with plain `struct` so the codec is not checked against itself.
"""

from __future__ import annotations

import errno
import random
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import golden
import pytest
from golden import IP_MODE, STORAGE_ID_MODE, GoldenRecord

from fdfsmount.proto import storage as st
from fdfsmount.proto import tracker as tr
from fdfsmount.proto.binlog import (
    BinlogRecord,
    BinlogStreamDecoder,
    encode_binlog_lines,
    encode_binlog_trailer,
)
from fdfsmount.proto.constants import BINLOG_STREAM_LENGTH, HEADER_SIZE, STORE_PATH_ANY, Cmd
from fdfsmount.proto.errors import (
    FileExists,
    FileNotFound,
    LocalProtocolError,
    ProtocolError,
    ServerError,
    server_error,
)
from fdfsmount.proto.fileid import FileId, FileType, decode_file_id, make_file_id, parse_file_id
from fdfsmount.proto.frames import Frame, FrameDecoder
from fdfsmount.proto.message import Request, ServerAddr
from fdfsmount.proto.metadata import encode_metadata
from fdfsmount.proto.records import STAT_COUNTER_NAMES, GroupStat, StorageStat
from fdfsmount.proto.wire import decode_header

# Loading happens at collection: a missing tests/data/golden fails the run.
RECORDS = golden.all_records()


def by_id(records: list[GoldenRecord]) -> dict[str, Any]:
    return {"argvalues": records, "ids": [r.id for r in records]}


# ------------------------------------------------------------------ facts

MODE_GROUP = {STORAGE_ID_MODE: "group1", IP_MODE: "groupip"}
TIME_NEAR = 1795355000  # README: the clock read November 2026

#: Error replies (header only) and their status; every other reply is status 0.
ERROR_STATUS: dict[str, int] = {
    "download_file_offset_at_eof": errno.EINVAL,
    "download_file_offset_past_eof": errno.EINVAL,
    "download_file_empty": errno.EINVAL,
    "download_file_wrong_group": errno.EINVAL,
    "query_file_info_wrong_group": errno.EINVAL,
    "query_file_info_missing_silent": errno.ENOENT,
    "query_file_info_missing": errno.ENOENT,
    "get_metadata_none": errno.ENOENT,
    "modify_file_offset_past_size": errno.EINVAL,
    "modify_normal_file": errno.EINVAL,
    "append_normal_file": errno.EINVAL,
    "truncate_normal_file": errno.EINVAL,
    "upload_slave_file_exists": errno.EEXIST,
    "upload_file_bad_length": errno.EINVAL,
    "delete_file_missing": errno.ENOENT,
    "download_file_missing": errno.ENOENT,
    "list_storage_unknown_id": errno.ENOENT,
    "list_one_group_unknown_group": errno.ENOENT,
    "list_one_group_bad_body_len": errno.EINVAL,
    "list_all_groups_bad_body_len": errno.EINVAL,
    "query_store_with_group_one_unknown_group": errno.ENOENT,
    "query_store_with_group_all_unknown_group": errno.ENOENT,
    "query_store_without_group_one_bad_body_len": errno.EINVAL,
    "query_fetch_one_unknown_group": errno.ENOENT,
    "query_fetch_one_bad_filename": errno.EINVAL,
    "tracker_active_test_bad_body_len": errno.EINVAL,
    "tracker_unknown_cmd": errno.EINVAL,
    "storage_active_test_bad_body_len": errno.EINVAL,
    "storage_unknown_cmd": errno.EINVAL,
    "fetch_one_path_binlog_bad_path_index": errno.EINVAL,
}
NO_REPLY = {"tracker_quit", "storage_quit"}
BINLOG = "fetch_one_path_binlog"

#: Raw-socket requests no client encoder can produce, and the server-side check
#: that must refuse each (the real servers answered EINVAL).
MALFORMED_REQUESTS: dict[str, Callable[[GoldenRecord], object]] = {
    "query_store_without_group_one_bad_body_len": lambda r: st.expect_empty(r.request_body, "101"),
    "list_one_group_bad_body_len": lambda r: tr.parse_group_body(r.request_body),
    "list_all_groups_bad_body_len": lambda r: st.expect_empty(r.request_body, "91"),
    "query_fetch_one_bad_filename": lambda r: tr.parse_fetch_body(r.request_body),
    "tracker_active_test_bad_body_len": lambda r: st.expect_empty(r.request_body, "111"),
    "tracker_unknown_cmd": lambda r: tr.parse_tracker_cmd(r.cmd),
    "storage_active_test_bad_body_len": lambda r: st.expect_empty(r.request_body, "111"),
    "storage_unknown_cmd": lambda r: st.parse_storage_cmd(r.cmd),
    "upload_file_bad_length": lambda r: st.parse_upload_head(
        r.request_body[: st.UPLOAD_FIXED], body_length=len(r.request_body)
    ),
}

# Request parameters as the notes describe them (mode independent).
UPLOAD_PARAMS = {  # name -> (store path index, size, ext)
    "upload_file_with_ext": (0, 16, "txt"),
    "upload_file_without_ext": (0, 21, ""),
    "upload_file_200k": (0, 204800, "bin"),
    "upload_file_empty": (0, 0, "txt"),
    "upload_file_store_path_any": (STORE_PATH_ANY, 4, "dat"),
    "upload_file_master": (0, 38, "jpg"),
    "upload_appender_file": (0, 10, "log"),
}
UPLOAD_CONTENT = {
    "upload_file_with_ext": b"Hello, FastDFS!\n",
    "upload_file_without_ext": b"no extension payload\n",
    "upload_file_200k": bytes((7 * i + i // 256) % 256 for i in range(204800)),
    "upload_file_empty": b"",
    "upload_file_store_path_any": b"ANY!",
    "upload_file_master": b"fake jpeg bytes for master/slave test\n",
    "upload_appender_file": b"0123456789",
}
DOWNLOAD_SPANS = {  # name -> (offset, length)
    "download_file_200k": (0, 0),
    "download_file_whole": (0, 0),
    "download_file_offset_length": (7, 6),
    "download_file_offset_at_eof": (16, 0),
    "download_file_offset_past_eof": (100, 4),
    "download_file_length_past_eof": (10, 100),
    "download_file_offset_only": (7, 0),
    "download_file_empty": (0, 0),
    "download_file_wrong_group": (0, 0),
    "download_appender_file": (0, 0),
    "download_file_missing": (0, 0),
}
FILE_INFO_FLAGS = {
    "query_file_info_missing_silent": 2,
    "query_file_info_slave_no_crc": 1,
    "query_file_info_appender_no_crc": 1,
}
SET_METADATA = {  # name -> (overwrite, records in the order sent)
    "set_metadata_overwrite": (
        True,
        [("ext_name", "jpg"), ("width", "160"), ("height", "80"), ("file_size", "115120")],
    ),
    "set_metadata_merge": (False, [("width", "1024"), ("color", "blue")]),
    "set_metadata_overwrite_single": (True, [("author", "golden")]),
}
APPENDER_WRITES = {  # name -> (offset or None for append, data)
    "append_file": (None, b"ABCDE"),
    "append_normal_file": (None, b"XY"),
    "modify_file": (2, b"xyz"),
    "modify_file_offset_eq_size": (15, b"xyz"),
    "modify_file_offset_past_size": (30, b"QQ"),
    "modify_normal_file": (0, b"XY"),
}
TRUNCATE_SIZES = {"truncate_file_shrink": 8, "truncate_file_grow": 12, "truncate_normal_file": 4}
SLAVE_UPLOADS = {  # name -> (prefix, ext, content)
    "upload_slave_file": ("_big", "jpg", UPLOAD_CONTENT["upload_file_master"]),
    "upload_slave_file_exists": ("_big", "jpg", b"DUPE"),
}
LISTED_STORAGE_ID = {
    (STORAGE_ID_MODE, "list_storage_with_id"): "100002",
    (IP_MODE, "list_storage_with_id"): "127.0.0.3",
    (STORAGE_ID_MODE, "list_storage_unknown_id"): "999999",
    (IP_MODE, "list_storage_unknown_id"): "999999",
}
BINLOG_STORE_PATH = {BINLOG: 0, "fetch_one_path_binlog_bad_path_index": 5}
METADATA_REPLIES = {
    "get_metadata": {"ext_name": "jpg", "file_size": "115120", "height": "80", "width": "160"},
    "get_metadata_after_merge": {
        "color": "blue",
        "ext_name": "jpg",
        "file_size": "115120",
        "height": "80",
        "width": "1024",
    },
    "get_metadata_after_overwrite": {"author": "golden"},
}
#: README: binlog lines and trailer count of each file.
BINLOG_FACTS = {STORAGE_ID_MODE: (164, 9512), IP_MODE: (13, 778)}


def expected_group(rec: GoldenRecord) -> str:
    if "nosuchgroup" in rec.notes:
        return "nosuchgroup"
    if rec.name == "query_store_with_group_all_unknown_group":
        return "group1"
    if rec.mode == STORAGE_ID_MODE and (
        rec.name.endswith("group2") or rec.name.startswith("fetch_one_path_binlog")
    ):
        return "group2"
    return MODE_GROUP[rec.mode]


def expected_status(rec: GoldenRecord) -> int:
    return ERROR_STATUS.get(rec.name, 0)


def find_record(mode: str, name: str) -> GoldenRecord:
    return golden.record(mode, name)


# ------------------------------------------------------------ golden sanity


def test_golden_files_cover_both_modes() -> None:
    assert {r.mode for r in RECORDS} == set(golden.MODES)
    assert len(golden.load(STORAGE_ID_MODE)) == 79
    assert len(golden.load(IP_MODE)) == 79


def test_tables_name_real_records() -> None:
    names = {r.name for r in RECORDS}
    tables: list[Any] = [
        ERROR_STATUS,
        MALFORMED_REQUESTS,
        UPLOAD_PARAMS,
        DOWNLOAD_SPANS,
        FILE_INFO_FLAGS,
        SET_METADATA,
        APPENDER_WRITES,
        TRUNCATE_SIZES,
        SLAVE_UPLOADS,
        METADATA_REPLIES,
        NO_REPLY,
    ]
    for table in tables:
        assert set(table) <= names
    assert {name for _, name in LISTED_STORAGE_ID} <= names


@pytest.mark.parametrize("rec", **by_id(RECORDS))
def test_request_header_length_matches_body(rec: GoldenRecord) -> None:
    header = decode_header(rec.request[:HEADER_SIZE])
    assert header.cmd == rec.cmd
    assert header.length == len(rec.request) - HEADER_SIZE


# ============================================================ (a) requests


def _remote_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def rebuild_request(rec: GoldenRecord) -> tuple[Request, bytes, dict[str, Any]]:
    """Parse the captured request server-side and re-encode it client-side.

    Returns the encoded request, the payload streamed after it, and the
    parameters the parser found (checked against the notes by the caller).
    """
    header = decode_header(rec.request[:HEADER_SIZE])
    body = rec.request_body
    params: dict[str, Any] = {}
    payload = b""
    if rec.server == "tracker":
        cmd = tr.parse_tracker_cmd(header.cmd)
    else:
        cmd = st.parse_storage_cmd(header.cmd)
    match cmd:
        case Cmd.QUERY_STORE_WITHOUT_GROUP_ONE | Cmd.QUERY_STORE_WITHOUT_GROUP_ALL:
            st.expect_empty(body, "query store request")
            req = tr.query_store_request(all_servers=cmd == Cmd.QUERY_STORE_WITHOUT_GROUP_ALL)
        case Cmd.QUERY_STORE_WITH_GROUP_ONE | Cmd.QUERY_STORE_WITH_GROUP_ALL:
            params["group"] = tr.parse_group_body(body)
            all_servers = cmd == Cmd.QUERY_STORE_WITH_GROUP_ALL
            req = tr.query_store_request(params["group"], all_servers=all_servers)
        case Cmd.QUERY_FETCH_ONE | Cmd.QUERY_UPDATE | Cmd.QUERY_FETCH_ALL:
            params["group"], params["remote_name"] = tr.parse_fetch_body(body)
            req = tr.query_fetch_request(cmd, params["group"], params["remote_name"])
        case Cmd.SERVER_LIST_ONE_GROUP:
            params["group"] = tr.parse_group_body(body)
            req = tr.list_one_group_request(params["group"])
        case Cmd.SERVER_LIST_ALL_GROUPS:
            st.expect_empty(body, "list groups request")
            req = tr.list_groups_request()
        case Cmd.SERVER_LIST_STORAGE:
            params["group"], params["storage_id"] = tr.parse_list_storage_body(body)
            req = tr.list_storages_request(params["group"], params["storage_id"])
        case Cmd.ACTIVE_TEST:
            st.expect_empty(body, "active test request")
            req = tr.active_test_request()
        case Cmd.QUIT:
            st.expect_empty(body, "quit request")
            req = tr.quit_request()
        case Cmd.UPLOAD_FILE | Cmd.UPLOAD_APPENDER_FILE:
            head = st.parse_upload_head(body[: st.UPLOAD_FIXED], body_length=len(body))
            params["upload"] = (head.store_path_index, head.size, head.ext)
            payload = body[st.UPLOAD_FIXED :]
            req = st.upload_request(
                head.size,
                head.ext,
                store_path_index=head.store_path_index,
                appender=cmd == Cmd.UPLOAD_APPENDER_FILE,
            )
        case Cmd.UPLOAD_SLAVE_FILE:
            slave = st.parse_slave_head(body[: st.SLAVE_FIXED], body_length=len(body))
            name_end = st.SLAVE_FIXED + slave.master_name_len
            params["remote_name"] = _remote_text(body[st.SLAVE_FIXED : name_end])
            payload = body[name_end:]
            params["slave"] = (slave.prefix, slave.ext, payload)
            req = st.upload_slave_request(
                params["remote_name"], slave.size, slave.prefix, slave.ext
            )
        case Cmd.DOWNLOAD_FILE:
            offset, length, params["group"], params["remote_name"] = st.parse_download_body(body)
            params["span"] = (offset, length)
            req = st.download_request(params["group"], params["remote_name"], offset, length)
        case Cmd.DELETE_FILE:
            params["group"], params["remote_name"] = st.parse_group_remote_body(body)
            req = st.delete_request(params["group"], params["remote_name"])
        case Cmd.GET_METADATA:
            params["group"], params["remote_name"] = st.parse_group_remote_body(body)
            req = st.get_metadata_request(params["group"], params["remote_name"])
        case Cmd.QUERY_FILE_INFO:
            params["group"], params["remote_name"] = st.parse_group_remote_body(body)
            params["flags"] = header.status
            req = st.query_file_info_request(
                params["group"], params["remote_name"], flags=header.status
            )
        case Cmd.SET_METADATA:
            meta = st.parse_set_metadata_body(body)
            params["group"], params["remote_name"] = meta.group, meta.remote_name
            params["set_metadata"] = (meta.overwrite, list(meta.meta.items()))
            req = st.set_metadata_request(
                meta.group, meta.remote_name, meta.meta, overwrite=meta.overwrite
            )
        case Cmd.APPEND_FILE:
            name_len, size = st.parse_append_head(body[: st.APPEND_FIXED], body_length=len(body))
            name_end = st.APPEND_FIXED + name_len
            params["remote_name"] = _remote_text(body[st.APPEND_FIXED : name_end])
            payload = body[name_end:]
            params["write"] = (None, payload)
            req = st.append_request(params["remote_name"], size)
        case Cmd.MODIFY_FILE:
            name_len, offset, size = st.parse_modify_head(
                body[: st.MODIFY_FIXED], body_length=len(body)
            )
            name_end = st.MODIFY_FIXED + name_len
            params["remote_name"] = _remote_text(body[st.MODIFY_FIXED : name_end])
            payload = body[name_end:]
            params["write"] = (offset, payload)
            req = st.modify_request(params["remote_name"], offset, size)
        case Cmd.TRUNCATE_FILE:
            params["remote_name"], params["truncate"] = st.parse_truncate_body(body)
            req = st.truncate_request(params["remote_name"], params["truncate"])
        case Cmd.REGENERATE_APPENDER_FILENAME:
            params["remote_name"] = st.parse_regenerate_body(body)
            req = st.regenerate_appender_request(params["remote_name"])
        case Cmd.FETCH_ONE_PATH_BINLOG:
            params["group"], params["store_path"] = st.parse_fetch_binlog_body(body)
            req = st.fetch_binlog_request(params["group"], params["store_path"])
        case _:
            raise AssertionError(f"no request rebuild for {rec.server} cmd {cmd}")
    return req, payload, params


WELL_FORMED = [r for r in RECORDS if r.name not in MALFORMED_REQUESTS]
MALFORMED = [r for r in RECORDS if r.name in MALFORMED_REQUESTS]


def test_every_record_has_a_request_check() -> None:
    assert len(WELL_FORMED) + len(MALFORMED) == len(RECORDS)
    assert {r.name for r in MALFORMED} == set(MALFORMED_REQUESTS)


@pytest.mark.parametrize("rec", **by_id(WELL_FORMED))
def test_request_reencodes_exactly(rec: GoldenRecord) -> None:
    req, payload, _ = rebuild_request(rec)
    assert req.payload_size == len(payload)
    assert req.cmd == rec.cmd
    assert req.encode() + payload == rec.request


@pytest.mark.parametrize("rec", **by_id(WELL_FORMED))
def test_request_parameters_match_notes(rec: GoldenRecord) -> None:
    _, _, params = rebuild_request(rec)
    if "group" in params:
        assert params["group"] == expected_group(rec)
    if rec.name in ("set_metadata_overwrite", "query_update"):  # notes: "the master file"
        master = noted_file_id(find_record(rec.mode, "upload_file_master"))
        assert params["remote_name"] == master.remote_name
    elif "remote_name" in params:
        assert params["remote_name"] in rec.notes
    checks: dict[str, dict[str, Any]] = {
        "upload": UPLOAD_PARAMS,
        "span": DOWNLOAD_SPANS,
        "set_metadata": SET_METADATA,
        "write": APPENDER_WRITES,
        "truncate": TRUNCATE_SIZES,
        "slave": SLAVE_UPLOADS,
        "store_path": BINLOG_STORE_PATH,
    }
    for key, table in checks.items():
        if key in params:
            assert params[key] == table[rec.name]
    if rec.cmd == Cmd.QUERY_FILE_INFO:
        assert params["flags"] == FILE_INFO_FLAGS.get(rec.name, 0)
    if rec.cmd == Cmd.SERVER_LIST_STORAGE:
        assert params["storage_id"] == LISTED_STORAGE_ID.get((rec.mode, rec.name))
    if rec.name in UPLOAD_CONTENT:
        assert rec.request_body[st.UPLOAD_FIXED :] == UPLOAD_CONTENT[rec.name]


@pytest.mark.parametrize("rec", **by_id(MALFORMED))
def test_malformed_request_is_refused(rec: GoldenRecord) -> None:
    with pytest.raises(ProtocolError):
        MALFORMED_REQUESTS[rec.name](rec)
    with pytest.raises(ProtocolError):
        rebuild_request(rec)


def test_malformed_requests_are_beyond_the_encoders() -> None:
    """What the encoders make for the same intent differs from the raw bytes."""
    sid = STORAGE_ID_MODE
    bad_len = find_record(sid, "query_store_without_group_one_bad_body_len")
    assert tr.query_store_request().encode() != bad_len.request
    assert (
        tr.list_groups_request().encode()
        != find_record(sid, "list_all_groups_bad_body_len").request
    )
    assert (
        tr.active_test_request().encode()
        != find_record(sid, "tracker_active_test_bad_body_len").request
    )
    # Uploading 10 bytes always announces them in the header length.
    short = find_record(sid, "upload_file_bad_length")
    req = st.upload_request(10, "txt", store_path_index=0)
    assert req.body == short.request_body[: st.UPLOAD_FIXED]
    assert req.length == st.UPLOAD_FIXED + 10
    assert decode_header(short.request[:HEADER_SIZE]).length == st.UPLOAD_FIXED + 5
    # The tracker refuses names under 22 bytes; so does the encoder.
    for mode in golden.MODES:
        body = find_record(mode, "query_fetch_one_bad_filename").request_body
        group, name = body[:16].rstrip(b"\0").decode(), body[16:].decode()
        with pytest.raises(LocalProtocolError):
            tr.query_fetch_request(Cmd.QUERY_FETCH_ONE, group, name)
    # Command 199 is not even in the codec's command table.
    for name in ("tracker_unknown_cmd", "storage_unknown_cmd"):
        with pytest.raises(ValueError):
            Cmd(find_record(sid, name).cmd)


# ============================================================== (b) replies


def read_frame(rec: GoldenRecord) -> Frame:
    decoder = FrameDecoder()
    decoder.feed(rec.response)
    frame = decoder.next_frame()
    assert isinstance(frame, Frame), f"{rec.id}: reply is not one whole frame"
    assert decoder.trailing == b""
    return frame


@pytest.mark.parametrize("rec", **by_id(RECORDS))
def test_reply_header_and_status(rec: GoldenRecord) -> None:
    if rec.name in NO_REPLY:
        assert rec.response == b""
        assert rec.closed_after
        return
    header = decode_header(rec.response[:HEADER_SIZE])
    assert header.cmd == Cmd.RESP
    assert header.status == expected_status(rec)
    noted = re.search(r"status (\d+)", rec.notes)
    if noted:
        assert int(noted.group(1)) == header.status
    if rec.name == BINLOG:
        assert header.length == BINLOG_STREAM_LENGTH
        return
    frame = read_frame(rec)
    assert frame.header == header
    if header.status:
        assert frame.body == b"", "error replies are header only"


ERRORS = [r for r in RECORDS if expected_status(r)]


@pytest.mark.parametrize("rec", **by_id(ERRORS))
def test_error_reply_maps_to_typed_error(rec: GoldenRecord) -> None:
    status = read_frame(rec).header.status
    exc = server_error(status, rec.name)
    assert isinstance(exc, ServerError)
    assert exc.errno == status
    if status == errno.ENOENT:
        assert isinstance(exc, FileNotFound)
    elif status == errno.EEXIST:
        assert isinstance(exc, FileExists)
    else:
        assert type(exc) is ServerError


# -- reference decoders straight from the README tables (independent of the codec)

_GROUP_REF = struct.Struct(">17s12q")
_STORAGE_REF = struct.Struct(">BB16s16s16s8s10q3i42qB")
assert _GROUP_REF.size == 113 and _STORAGE_REF.size == 487


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode()


def reference_groups(body: bytes) -> list[dict[str, Any]]:
    assert len(body) % 113 == 0
    out = []
    for name, *ints in _GROUP_REF.iter_unpack(body):
        keys = [f.name for f in fields(GroupStat)][1:]
        out.append({"group_name": _cstr(name), **dict(zip(keys, ints, strict=True))})
    return out


def reference_storages(body: bytes) -> list[dict[str, Any]]:
    assert len(body) % 487 == 0
    out = []
    for values in _STORAGE_REF.iter_unpack(body):
        status, rw_mode, sid, ip, src, version = values[:6]
        ints = values[6:16]
        conn = values[16:19]
        counters = values[19:61]
        trunk = values[61]
        out.append(
            {
                "status": status,
                "rw_mode": rw_mode,
                "storage_id": _cstr(sid),
                "ip_addr": _cstr(ip),
                "src_id": _cstr(src),
                "version": _cstr(version),
                **dict(
                    zip(
                        (
                            "join_time",
                            "up_time",
                            "total_mb",
                            "free_mb",
                            "reserved_mb",
                            "upload_priority",
                            "store_path_count",
                            "subdir_count_per_path",
                            "current_write_path",
                            "storage_port",
                        ),
                        ints,
                        strict=True,
                    )
                ),
                "connections_alloc": conn[0],
                "connections_current": conn[1],
                "connections_max": conn[2],
                "counters": dict(zip(STAT_COUNTER_NAMES, counters, strict=True)),
                "is_trunk_server": bool(trunk),
            }
        )
    return out


def as_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


# -- expectations from the notes

_SERVERS_RE = re.compile(
    r"response: group '(\w+)', (?:storage ([\d.]+):(\d+)|\d+ storage\(s\) \[([^\]]*)\])"
    r"(?:, store_path_index (\d+))?"
)
_FILE_ID_RE = re.compile(r"file id (\S+)")
_FILE_INFO_RE = re.compile(
    r"size (\d+), mtime (\d+), crc32 (-?\d+) \(8-byte field ([0-9a-f]{16})\), "
    r"source ip '([\d.]+)'"
)


def noted_servers(rec: GoldenRecord) -> tuple[str, tuple[ServerAddr, ...], int | None]:
    match = _SERVERS_RE.search(rec.notes)
    assert match, f"{rec.id}: notes name no servers"
    group, host, port, listed, index = match.groups()
    if host:
        servers = [ServerAddr(host, int(port))]
    else:
        servers = [ServerAddr(h, int(p)) for h, p in (s.split(":") for s in listed.split(", "))]
    return group, tuple(servers), None if index is None else int(index)


def noted_file_id(rec: GoldenRecord) -> FileId:
    match = _FILE_ID_RE.search(rec.notes)
    assert match, f"{rec.id}: notes name no file id"
    return parse_file_id(match.group(1))


def upload_content(mode: str, name: str) -> bytes:
    """What was uploaded in ``name``, read from the captured request."""
    return find_record(mode, name).request_body[st.UPLOAD_FIXED :]


def download_expectation(rec: GoldenRecord) -> bytes:
    if rec.name == "download_file_200k":
        return upload_content(rec.mode, "upload_file_200k")
    if rec.name == "download_appender_file":
        # '0123456789' + append 'ABCDE', modify 'xyz' at 2 and 15, truncate 8, grow 12.
        return b"01xyz567" + b"\0" * 4
    text = upload_content(rec.mode, "upload_file_with_ext")
    offset, length = DOWNLOAD_SPANS[rec.name]
    return text[offset : offset + length] if length else text[offset:]


SUCCESS = [r for r in RECORDS if not expected_status(r) and r.name not in NO_REPLY]


def check_store_reply(rec: GoldenRecord, body: bytes) -> None:
    target = tr.decode_store_reply(body)
    group, servers, index = noted_servers(rec)
    assert index is not None
    assert target == tr.StoreTarget(group, servers, index)
    assert target.group == MODE_GROUP[rec.mode]
    assert target.store_path_index == 0


def check_fetch_reply(rec: GoldenRecord, body: bytes) -> None:
    target = tr.decode_fetch_reply(body)
    group, servers, index = noted_servers(rec)
    assert index is None
    assert target == tr.FetchTarget(group, servers)
    if rec.mode == IP_MODE:
        assert target.servers == (ServerAddr("127.0.0.3", 23100),)
    else:
        assert {s.port for s in target.servers} <= {23000, 23001}


def check_file_id_reply(rec: GoldenRecord, body: bytes) -> None:
    fid = st.decode_file_id_reply(body)
    assert fid == noted_file_id(rec)
    assert fid.group == MODE_GROUP[rec.mode]
    assert fid.store_path_index == 0
    info = decode_file_id(fid)
    if rec.mode == IP_MODE:
        assert (info.source_id, info.source_ip) == (None, "127.0.0.3")
    else:
        assert info.source_ip is None
        assert info.source_id in (100001, 100002)
    # The README's prefixes: base64 of the 4 source bytes (the 6th char of
    # "fwAAAw" also takes 4 bits of the create time inside a name).
    prefix = {None: "fwAAA", 100001: "oYYB", 100002: "ooYB"}[info.source_id]
    assert fid.name.startswith(prefix)
    assert abs(info.create_time - TIME_NEAR) < 10_000
    if rec.cmd == Cmd.UPLOAD_FILE:
        content = rec.request_body[st.UPLOAD_FIXED :]
        assert info.file_type is FileType.NORMAL
        assert info.size == len(content)
        assert info.crc32 == zlib.crc32(content)
        ext = UPLOAD_PARAMS[rec.name][2]
        assert fid.name.endswith(f".{ext}" if ext else fid.name[-7:])
        assert len(fid.remote_name) == 44
    elif rec.cmd == Cmd.UPLOAD_APPENDER_FILE:
        assert info.file_type is FileType.APPENDER
        assert (info.size, info.crc32) == (None, None)
    elif rec.cmd == Cmd.UPLOAD_SLAVE_FILE:
        assert info.file_type is FileType.SLAVE
        assert fid.remote_name.endswith("_big.jpg")
    else:  # regenerated appender: a normal name describing the content then
        content = download_expectation(find_record(rec.mode, "download_appender_file"))
        assert info.file_type is FileType.NORMAL
        assert (info.size, info.crc32) == (len(content), zlib.crc32(content))


def check_file_info_reply(rec: GoldenRecord, body: bytes) -> None:
    info = st.decode_file_info_reply(body)
    match = _FILE_INFO_RE.search(rec.notes)
    assert match, f"{rec.id}: notes give no file info"
    size, mtime, crc, crc_field, ip = match.groups()
    assert body[16:24].hex() == crc_field
    assert info == st.FileInfo(int(size), int(mtime), int(crc) & 0xFFFFFFFF, ip)
    assert info.source_ip == {IP_MODE: "127.0.0.3", STORAGE_ID_MODE: "127.0.0.1"}[rec.mode]
    if rec.name == "query_file_info_normal":
        # Sign-extended on the wire, unsigned once decoded.
        assert crc_field == "ffffffff86558325"
        assert info.crc32 == 0x86558325
    if "no_crc" in rec.name:
        assert info.crc32 == 0
    _, _, params = rebuild_request(rec)
    name_info = decode_file_id(make_file_id(params["group"], params["remote_name"]))
    if name_info.file_type is FileType.NORMAL:
        assert (name_info.size, name_info.crc32) == (info.size, info.crc32)


def check_metadata_reply(rec: GoldenRecord, body: bytes) -> None:
    meta = st.decode_metadata_reply(body)
    assert meta == METADATA_REPLIES[rec.name]
    assert list(meta) == sorted(meta), "the server returns records sorted by name"


def check_group_reply(rec: GoldenRecord, body: bytes) -> None:
    if rec.cmd == Cmd.SERVER_LIST_ONE_GROUP:
        groups = [tr.decode_one_group_reply(body)]
    else:
        groups = tr.decode_groups_reply(body)
    assert [as_dict(g) for g in groups] == reference_groups(body)
    for g in groups:
        assert g.store_path_count == 1
        assert g.subdir_count_per_path == 256
        assert g.current_trunk_file_id == -1
        assert g.trunk_free_mb == 0
        assert 0 < g.free_mb <= g.total_mb
    if rec.mode == IP_MODE:
        assert [(g.group_name, g.storage_count, g.storage_port) for g in groups] == [
            ("groupip", 1, 23100)
        ]
    else:
        expected = [("group1", 2, -1), ("group2", 1, 23002)]
        if rec.cmd == Cmd.SERVER_LIST_ONE_GROUP:
            expected = expected[:1]
        assert [(g.group_name, g.storage_count, g.storage_port) for g in groups] == expected


STORAGE_LISTS = {
    (STORAGE_ID_MODE, "list_storage_group1"): [("100001", 23000), ("100002", 23001)],
    (STORAGE_ID_MODE, "list_storage_group2"): [("100003", 23002)],
    (STORAGE_ID_MODE, "list_storage_with_id"): [("100002", 23001)],
    (IP_MODE, "list_storage"): [("127.0.0.3", 23100)],
    (IP_MODE, "list_storage_with_id"): [("127.0.0.3", 23100)],
}


def check_storage_reply(rec: GoldenRecord, body: bytes) -> None:
    storages = tr.decode_storages_reply(body)
    assert [as_dict(s) for s in storages] == reference_storages(body)
    assert [(s.storage_id, s.storage_port) for s in storages] == STORAGE_LISTS[(rec.mode, rec.name)]
    for s in storages:
        assert s.status == 7  # ACTIVE
        assert s.rw_mode == 6  # read + write
        assert s.version == "6.16.1"
        assert s.ip_addr == {IP_MODE: "127.0.0.3", STORAGE_ID_MODE: "127.0.0.1"}[rec.mode]
        assert s.store_path_count == 1
        assert s.subdir_count_per_path == 256
        assert s.upload_priority == 10
        assert not s.is_trunk_server
        assert abs(s.join_time - TIME_NEAR) < 10_000
        assert s.join_time <= s.up_time
        assert len(s.counters) == 42
        assert s.counters["success_upload_count"] <= s.counters["total_upload_count"]


def check_download_reply(rec: GoldenRecord, body: bytes) -> None:
    assert body == download_expectation(rec)


def check_empty_reply(rec: GoldenRecord, body: bytes) -> None:
    st.expect_empty(body, rec.name)


def decode_binlog(body: bytes, chunks: list[int] | None = None) -> tuple[list[BinlogRecord], int]:
    decoder = BinlogStreamDecoder()
    records: list[BinlogRecord] = []
    if chunks is None:
        records += decoder.feed(body)
    else:
        pos = 0
        for size in chunks:
            records += decoder.feed(body[pos : pos + size])
            pos += size
        assert pos >= len(body)
    return records, decoder.close()


def check_binlog_reply(rec: GoldenRecord, body: bytes) -> None:
    records, count = decode_binlog(body)
    assert (len(records), count) == BINLOG_FACTS[rec.mode]
    assert count == len(body) - 8
    assert {r.op for r in records} == {"C"}
    for r in records:
        make_file_id(expected_group(rec), r.remote_name)
        assert abs(r.timestamp - TIME_NEAR) < 10_000
    if rec.mode == IP_MODE:
        names = {r.remote_name for r in records}
        uploaded = {
            noted_file_id(find_record(IP_MODE, name)).remote_name
            for name in (*UPLOAD_PARAMS, "upload_slave_file", "regenerate_appender_filename")
        }
        deleted = noted_file_id(find_record(IP_MODE, "upload_file_without_ext")).remote_name
        renamed = noted_file_id(find_record(IP_MODE, "upload_appender_file")).remote_name
        assert names >= uploaded - {deleted, renamed}
        assert deleted not in names and renamed not in names
        assert any(name.endswith("-m") for name in names)


REPLY_CHECKS = {
    Cmd.QUERY_STORE_WITHOUT_GROUP_ONE: check_store_reply,
    Cmd.QUERY_STORE_WITH_GROUP_ONE: check_store_reply,
    Cmd.QUERY_STORE_WITHOUT_GROUP_ALL: check_store_reply,
    Cmd.QUERY_STORE_WITH_GROUP_ALL: check_store_reply,
    Cmd.QUERY_FETCH_ONE: check_fetch_reply,
    Cmd.QUERY_UPDATE: check_fetch_reply,
    Cmd.QUERY_FETCH_ALL: check_fetch_reply,
    Cmd.SERVER_LIST_ONE_GROUP: check_group_reply,
    Cmd.SERVER_LIST_ALL_GROUPS: check_group_reply,
    Cmd.SERVER_LIST_STORAGE: check_storage_reply,
    Cmd.UPLOAD_FILE: check_file_id_reply,
    Cmd.UPLOAD_APPENDER_FILE: check_file_id_reply,
    Cmd.UPLOAD_SLAVE_FILE: check_file_id_reply,
    Cmd.REGENERATE_APPENDER_FILENAME: check_file_id_reply,
    Cmd.QUERY_FILE_INFO: check_file_info_reply,
    Cmd.GET_METADATA: check_metadata_reply,
    Cmd.DOWNLOAD_FILE: check_download_reply,
    Cmd.FETCH_ONE_PATH_BINLOG: check_binlog_reply,
    Cmd.DELETE_FILE: check_empty_reply,
    Cmd.SET_METADATA: check_empty_reply,
    Cmd.APPEND_FILE: check_empty_reply,
    Cmd.MODIFY_FILE: check_empty_reply,
    Cmd.TRUNCATE_FILE: check_empty_reply,
    Cmd.ACTIVE_TEST: check_empty_reply,
}


@pytest.mark.parametrize("rec", **by_id(SUCCESS))
def test_success_reply_decodes(rec: GoldenRecord) -> None:
    check = REPLY_CHECKS[Cmd(rec.cmd)]
    body = rec.response_body if rec.name == BINLOG else read_frame(rec).body
    check(rec, body)


@pytest.mark.parametrize("mode", golden.MODES)
def test_binlog_chunking_does_not_matter(mode: str) -> None:
    body = find_record(mode, BINLOG).response_body
    whole = decode_binlog(body)
    assert decode_binlog(body, [1] * len(body)) == whole
    for seed in range(20):
        rng = random.Random(seed)
        chunks: list[int] = []
        while sum(chunks) < len(body):
            chunks.append(rng.choice((1, 2, 7, 8, 9, rng.randrange(1, 600))))
        assert decode_binlog(body, chunks) == whole


@pytest.mark.parametrize("mode", golden.MODES)
def test_binlog_header_goes_to_the_streaming_layer(mode: str) -> None:
    """next_header() hands the 2^58 sentinel over; next_frame() would refuse it."""
    response = find_record(mode, BINLOG).response
    decoder = FrameDecoder()
    decoder.feed(response[:HEADER_SIZE])
    header = decoder.next_header()
    assert header == decode_header(response[:HEADER_SIZE])
    with pytest.raises(ProtocolError):
        decoder.next_frame()


@pytest.mark.parametrize("mode", golden.MODES)
def test_binlog_cut_short_is_an_error(mode: str) -> None:
    body = find_record(mode, BINLOG).response_body
    for cut in (1, 7, 8, 9, 100):
        decoder = BinlogStreamDecoder()
        decoder.feed(body[:-cut])
        with pytest.raises(ProtocolError):
            decoder.close()


# ============================================================ (c) re-encode

REENCODED_CMDS = {
    Cmd.QUERY_STORE_WITHOUT_GROUP_ONE,
    Cmd.QUERY_STORE_WITH_GROUP_ONE,
    Cmd.QUERY_STORE_WITHOUT_GROUP_ALL,
    Cmd.QUERY_STORE_WITH_GROUP_ALL,
    Cmd.QUERY_FETCH_ONE,
    Cmd.QUERY_UPDATE,
    Cmd.QUERY_FETCH_ALL,
    Cmd.SERVER_LIST_ONE_GROUP,
    Cmd.SERVER_LIST_ALL_GROUPS,
    Cmd.SERVER_LIST_STORAGE,
    Cmd.UPLOAD_FILE,
    Cmd.UPLOAD_APPENDER_FILE,
    Cmd.UPLOAD_SLAVE_FILE,
    Cmd.REGENERATE_APPENDER_FILENAME,
    Cmd.QUERY_FILE_INFO,
    Cmd.GET_METADATA,
    Cmd.FETCH_ONE_PATH_BINLOG,
}
REENCODED = [r for r in SUCCESS if r.cmd in REENCODED_CMDS]


def reencode(rec: GoldenRecord, body: bytes) -> bytes:
    match Cmd(rec.cmd):
        case (
            Cmd.QUERY_STORE_WITHOUT_GROUP_ONE
            | Cmd.QUERY_STORE_WITH_GROUP_ONE
            | Cmd.QUERY_STORE_WITHOUT_GROUP_ALL
            | Cmd.QUERY_STORE_WITH_GROUP_ALL
        ):
            return tr.encode_store_reply(tr.decode_store_reply(body))
        case Cmd.QUERY_FETCH_ONE | Cmd.QUERY_UPDATE | Cmd.QUERY_FETCH_ALL:
            return tr.encode_fetch_reply(tr.decode_fetch_reply(body))
        case Cmd.SERVER_LIST_ONE_GROUP:
            return tr.encode_groups_reply([tr.decode_one_group_reply(body)])
        case Cmd.SERVER_LIST_ALL_GROUPS:
            return tr.encode_groups_reply(tr.decode_groups_reply(body))
        case Cmd.SERVER_LIST_STORAGE:
            return tr.encode_storages_reply(tr.decode_storages_reply(body))
        case (
            Cmd.UPLOAD_FILE
            | Cmd.UPLOAD_APPENDER_FILE
            | Cmd.UPLOAD_SLAVE_FILE
            | Cmd.REGENERATE_APPENDER_FILENAME
        ):
            fid = st.decode_file_id_reply(body)
            return st.encode_file_id_reply(fid.group, fid.remote_name)
        case Cmd.QUERY_FILE_INFO:
            return st.encode_file_info_reply(st.decode_file_info_reply(body))
        case Cmd.GET_METADATA:
            return encode_metadata(st.decode_metadata_reply(body))
        case Cmd.FETCH_ONE_PATH_BINLOG:
            records, count = decode_binlog(body)
            return encode_binlog_lines(records) + encode_binlog_trailer(count)
        case other:
            raise AssertionError(f"no re-encoder for cmd {other}")


@pytest.mark.parametrize("rec", **by_id(REENCODED))
def test_reply_reencodes_exactly(rec: GoldenRecord) -> None:
    body = rec.response_body
    assert reencode(rec, body) == body


@pytest.mark.parametrize("rec", **by_id([r for r in REENCODED if r.cmd in (90, 91, 92)]))
def test_stat_records_round_trip_every_field(rec: GoldenRecord) -> None:
    body = rec.response_body
    if rec.cmd == Cmd.SERVER_LIST_STORAGE:
        decoded: list[Any] = tr.decode_storages_reply(body)
        again: list[Any] = [StorageStat.decode(s.encode()) for s in decoded]
    else:
        decoded = tr.decode_groups_reply(body)
        again = [GroupStat.decode(g.encode()) for g in decoded]
    # as_dict also covers StorageStat.counters, which __eq__ ignores.
    assert [as_dict(x) for x in again] == [as_dict(x) for x in decoded]


# ==================================================== limits the servers enforce
# From the golden EINVAL cases and the 6.16.1 source they come from: each limit
# is checked on both sides, the client encoder and the harness-side parser.

GOOD_NAME = "M00/00/46/ooYBAGsC84mAaQSoAAAAEIZVgyU123.txt"  # 44 bytes


@pytest.mark.parametrize(("length", "ok"), [(21, False), (22, True), (127, True), (128, False)])
def test_query_fetch_name_length(length: int, ok: bool) -> None:
    name = "n" * length
    body = b"group1".ljust(16, b"\0") + name.encode()
    if ok:
        assert tr.query_fetch_request(Cmd.QUERY_FETCH_ONE, "group1", name).body == body
        assert tr.parse_fetch_body(body) == ("group1", name)
    else:
        with pytest.raises(LocalProtocolError):
            tr.query_fetch_request(Cmd.QUERY_FETCH_ONE, "group1", name)
        with pytest.raises(ProtocolError):
            tr.parse_fetch_body(body)


@pytest.mark.parametrize(("length", "ok"), [(1, True), (15, True), (16, False)])
def test_listed_storage_id_length(length: int, ok: bool) -> None:
    sid = "9" * length
    body = b"group1".ljust(16, b"\0") + sid.encode()
    if ok:
        assert tr.list_storages_request("group1", sid).body == body
        assert tr.parse_list_storage_body(body) == ("group1", sid)
    else:
        with pytest.raises(LocalProtocolError):
            tr.list_storages_request("group1", sid)
        with pytest.raises(ProtocolError):
            tr.parse_list_storage_body(body)


@pytest.mark.parametrize(("length", "ok"), [(43, False), (44, True), (127, True), (128, False)])
def test_appender_name_length(length: int, ok: bool) -> None:
    name = GOOD_NAME.ljust(length, "x")[:length]
    raw = name.encode()
    heads: list[tuple[Callable[[], Request], Callable[..., object], bytes]] = [
        (lambda: st.append_request(name, 3), st.parse_append_head, struct.pack(">qq", len(raw), 3)),
        (
            lambda: st.modify_request(name, 0, 3),
            st.parse_modify_head,
            struct.pack(">qqq", len(raw), 0, 3),
        ),
    ]
    for make, parse, head in heads:
        fixed = len(head)
        if ok:
            req = make()
            assert req.body == head + raw
            parse(head, body_length=fixed + len(raw) + 3)
        else:
            with pytest.raises(LocalProtocolError):
                make()
            with pytest.raises(ProtocolError):
                parse(head)
    truncate = struct.pack(">qq", len(raw), 5) + raw
    if ok:
        assert st.truncate_request(name, 5).body == truncate
        assert st.parse_truncate_body(truncate) == (name, 5)
        assert st.regenerate_appender_request(name).body == raw
        assert st.parse_regenerate_body(raw) == name
    else:
        for make_req in (
            lambda: st.truncate_request(name, 5),
            lambda: st.regenerate_appender_request(name),
        ):
            with pytest.raises(LocalProtocolError):
                make_req()
        for parse_body in (
            lambda: st.parse_truncate_body(truncate),
            lambda: st.parse_regenerate_body(raw),
        ):
            with pytest.raises(ProtocolError):
                parse_body()


@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_inner_sizes_must_add_up_to_the_header_length(delta: int) -> None:
    upload = st.upload_request(10, "txt", store_path_index=0)
    st.parse_upload_head(upload.body, body_length=upload.length)
    with pytest.raises(ProtocolError):
        st.parse_upload_head(upload.body, body_length=upload.length + delta)
    slave = st.upload_slave_request(GOOD_NAME, 10, "_big", "jpg")
    head = slave.body[: st.SLAVE_FIXED]
    st.parse_slave_head(head, body_length=slave.length)
    with pytest.raises(ProtocolError):
        st.parse_slave_head(head, body_length=slave.length + delta)
    append = st.append_request(GOOD_NAME, 10)
    st.parse_append_head(append.body[:16], body_length=append.length)
    with pytest.raises(ProtocolError):
        st.parse_append_head(append.body[:16], body_length=append.length + delta)
    modify = st.modify_request(GOOD_NAME, 5, 10)
    st.parse_modify_head(modify.body[:24], body_length=modify.length)
    with pytest.raises(ProtocolError):
        st.parse_modify_head(modify.body[:24], body_length=modify.length + delta)


@pytest.mark.parametrize(
    ("group", "ok"),
    [("group1", True), ("G" * 16, True), ("", False), ("g" * 17, False), ("group-1", False),
     ("group_1", False), ("grüppe", False), ("\ud800", False)],
)  # fmt: skip
def test_group_names_follow_upstream(group: str, ok: bool) -> None:
    """fdfs_validate_group_name: 1-16 ASCII letters and digits."""
    if ok:
        assert tr.list_one_group_request(group).body == group.encode().ljust(16, b"\0")
    else:
        with pytest.raises(LocalProtocolError):
            tr.list_one_group_request(group)
    raw_group = group.encode("utf-8", "surrogatepass")
    if len(raw_group) > 16:
        return  # cannot even be sent in a reply
    reply = raw_group.ljust(16, b"\0")
    store_reply = reply + b"127.0.0.1".ljust(15, b"\0") + struct.pack(">q", 23000) + b"\0"
    fid_reply = reply + GOOD_NAME.encode()
    if ok:
        assert tr.decode_store_reply(store_reply).group == group
        assert st.decode_file_id_reply(fid_reply) == FileId(group, GOOD_NAME)
    else:
        with pytest.raises(ProtocolError):
            tr.decode_store_reply(store_reply)
        with pytest.raises(ProtocolError):
            st.decode_file_id_reply(fid_reply)


@pytest.mark.parametrize(
    ("ext", "ok"),
    [("jpg", True), ("", True), ("tar.gz", True), ("a-_.1", True),
     ("a b", False), ("toolong", False), ("é", False), ("a/b", False), ("\0", False)],
)  # fmt: skip
def test_ext_characters(ext: str, ok: bool) -> None:
    """fdfs_validate_filename: letters, digits, '-', '_' and '.'."""
    calls: list[Callable[[], Request]] = [
        lambda: st.upload_request(1, ext),
        lambda: st.upload_slave_request(GOOD_NAME, 1, "_big", ext),
    ]
    for call in calls:
        if ok:
            call()
        else:
            with pytest.raises(LocalProtocolError):
                call()


@pytest.mark.parametrize(
    ("prefix", "ok"),
    [("_big", True), ("-m.x", True), ("p" * 16, True),
     ("", False), ("a/b", False), ("a b", False), ("p" * 17, False)],
)  # fmt: skip
def test_slave_prefix_characters(prefix: str, ok: bool) -> None:
    if ok:
        st.upload_slave_request(GOOD_NAME, 1, prefix, "jpg")
    else:
        with pytest.raises(LocalProtocolError):
            st.upload_slave_request(GOOD_NAME, 1, prefix, "jpg")


@pytest.mark.parametrize(
    "meta",
    [{"\ud800": "x"}, {"x": "\udfff"}, {"": "x"}, {"n" * 65: "x"}, {"x": "v" * 257},
     {"a\x01b": "x"}, {"x": "a\x02b"}],
)  # fmt: skip
def test_metadata_the_server_cannot_store(meta: dict[str, str]) -> None:
    with pytest.raises(LocalProtocolError):
        encode_metadata(meta)
    with pytest.raises(LocalProtocolError):
        st.set_metadata_request("group1", GOOD_NAME, meta)


def test_query_file_info_flags_fit_the_status_byte() -> None:
    assert st.query_file_info_request("group1", GOOD_NAME, 255).status == 255
    with pytest.raises(LocalProtocolError):
        st.query_file_info_request("group1", GOOD_NAME, 256)
