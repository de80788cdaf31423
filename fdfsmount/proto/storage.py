"""Storage commands: request encoders, reply decoders, and their inverses.

Requests that carry file content (11, 21, 23, 24, 34) are encoded as a
`Request` whose ``payload_size`` counts the content; the caller streams it
after ``encode()``. The harness storage reads a fixed head first
(``*_FIXED`` bytes), learns the variable sizes from it, then the names, then
streams the payload.

Commands 21, 24, 34, 36 and 38 carry no group name; the storage knows its own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from .constants import (
    EXT_NAME_LEN,
    GROUP_NAME_LEN,
    HEADER_SIZE,
    IPV4_ADDRESS_SIZE,
    IPV6_ADDRESS_SIZE,
    META_MERGE,
    META_OVERWRITE,
    PREFIX_LEN,
    STORE_PATH_ANY,
    Cmd,
)
from .errors import InvalidFileId, LocalProtocolError, ProtocolError
from .fileid import (
    MAX_REMOTE_NAME_LEN,
    NORMAL_REMOTE_NAME_LEN,
    FileId,
    make_file_id,
)
from .message import Request
from .metadata import Metadata, decode_metadata, encode_metadata
from .wire import FieldReader, decode_text, encode_text, pack_fixed, pack_group, pack_int

UPLOAD_FIXED = 1 + 8 + EXT_NAME_LEN
_UPLOAD_HEAD = struct.Struct(f">Bq{EXT_NAME_LEN}s")  # store path index, size, ext
SLAVE_FIXED = 8 + 8 + PREFIX_LEN + EXT_NAME_LEN
APPEND_FIXED = 8 + 8
MODIFY_FIXED = 8 + 8 + 8
TRUNCATE_FIXED = 8 + 8
SET_METADATA_FIXED = 8 + 8 + 1 + GROUP_NAME_LEN
DOWNLOAD_FIXED = 8 + 8 + GROUP_NAME_LEN
#: Longest group + remote name body (12, 15, 22) `parse_group_remote_body` takes.
GROUP_REMOTE_BODY_MAX = GROUP_NAME_LEN + MAX_REMOTE_NAME_LEN
FILE_INFO_SIZES = (8 * 3 + IPV4_ADDRESS_SIZE, 8 * 3 + IPV6_ADDRESS_SIZE)
#: Appender operations (24, 34, 36, 38) refuse names shorter than a normal name.
MIN_APPENDER_NAME_LEN = NORMAL_REMOTE_NAME_LEN
#: A slave's master name must be longer than its "M00/HH/HH/" logic path.
MIN_MASTER_NAME_LEN = 11
_RESP = int(Cmd.RESP)
#: QUERY_FILE_INFO's whole reply (header, three numbers, IP field), by IP field size.
_FILE_INFO_MESSAGE = {
    size: struct.Struct(f">QBBqqq{size}s") for size in (IPV4_ADDRESS_SIZE, IPV6_ADDRESS_SIZE)
}
#: Offset and length that open a DOWNLOAD_FILE request.
_DOWNLOAD_RANGE = struct.Struct(">qq")
#: Ext and slave prefix characters a storage accepts (upstream fdfs_validate_filename).
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")

#: Commands a storage serves to clients; anything else is answered with EINVAL.
STORAGE_CLIENT_CMDS = frozenset(
    {
        Cmd.UPLOAD_FILE,
        Cmd.DELETE_FILE,
        Cmd.SET_METADATA,
        Cmd.DOWNLOAD_FILE,
        Cmd.GET_METADATA,
        Cmd.UPLOAD_SLAVE_FILE,
        Cmd.QUERY_FILE_INFO,
        Cmd.UPLOAD_APPENDER_FILE,
        Cmd.APPEND_FILE,
        Cmd.FETCH_ONE_PATH_BINLOG,
        Cmd.MODIFY_FILE,
        Cmd.TRUNCATE_FILE,
        Cmd.REGENERATE_APPENDER_FILENAME,
        Cmd.ACTIVE_TEST,
        Cmd.QUIT,
    }
)


class FileInfo(NamedTuple):
    """Reply of QUERY_FILE_INFO (a named tuple: the storage makes one per request)."""

    size: int
    create_time: int  # the server reports the file's mtime in this field
    crc32: int  # unsigned 32-bit; 0 when the server was asked not to compute it
    source_ip: str


def _remote(remote_name: str) -> bytes:
    raw = encode_text(remote_name, "remote file name")
    if not 0 < len(raw) <= MAX_REMOTE_NAME_LEN:
        raise LocalProtocolError(f"bad remote file name {remote_name!r}")
    return raw


def _appender_name(remote_name: str) -> bytes:
    """Names for 24, 34, 36, 38: the storage answers EINVAL to names under 44 bytes."""
    raw = _remote(remote_name)
    if len(raw) < MIN_APPENDER_NAME_LEN:
        raise LocalProtocolError(f"{remote_name!r} is too short for an appender file name")
    return raw


def _filename_part(text: str, size: int, what: str) -> bytes:
    """Ext or slave prefix: the storage answers EINVAL to other characters."""
    if not set(text) <= _NAME_CHARS:
        raise LocalProtocolError(f"{what} {text!r} has characters a storage refuses")
    return pack_fixed(text, size, what)


def _ext(ext: str) -> bytes:
    return _filename_part(ext, EXT_NAME_LEN, "file extension")


def _size(size: int, what: str = "size") -> bytes:
    if size < 0:
        raise LocalProtocolError(f"negative {what} {size}")
    return pack_int(size)


# ---------------------------------------------------------------- requests


def upload_request(
    size: int, ext: str = "", *, store_path_index: int = STORE_PATH_ANY, appender: bool = False
) -> Request:
    """UPLOAD_FILE (11) or UPLOAD_APPENDER_FILE (23); ``size`` content bytes follow."""
    if not 0 <= store_path_index <= 0xFF:
        raise LocalProtocolError(f"store path index {store_path_index} out of range")
    cmd = Cmd.UPLOAD_APPENDER_FILE if appender else Cmd.UPLOAD_FILE
    body = bytes((store_path_index,)) + _size(size) + _ext(ext)
    return Request(cmd, body, payload_size=size)


def upload_slave_request(master_remote_name: str, size: int, prefix: str, ext: str = "") -> Request:
    master = _remote(master_remote_name)
    if not prefix:
        raise LocalProtocolError("a slave file needs a non-empty prefix")
    body = (
        pack_int(len(master))
        + _size(size)
        + _filename_part(prefix, PREFIX_LEN, "slave prefix")
        + _ext(ext)
        + master
    )
    return Request(Cmd.UPLOAD_SLAVE_FILE, body, payload_size=size)


def delete_request(group: str, remote_name: str) -> Request:
    return Request(Cmd.DELETE_FILE, pack_group(group) + _remote(remote_name))


def download_request(group: str, remote_name: str, offset: int = 0, length: int = 0) -> Request:
    """DOWNLOAD_FILE; ``length`` 0 means to the end of the file."""
    span = _size(offset, "offset") + _size(length, "length")
    body = span + pack_group(group) + _remote(remote_name)
    return Request(Cmd.DOWNLOAD_FILE, body)


def get_metadata_request(group: str, remote_name: str) -> Request:
    return Request(Cmd.GET_METADATA, pack_group(group) + _remote(remote_name))


def set_metadata_request(
    group: str, remote_name: str, meta: Metadata, *, overwrite: bool = False
) -> Request:
    name = _remote(remote_name)
    text = encode_metadata(meta)
    flag = META_OVERWRITE if overwrite else META_MERGE
    lengths = pack_int(len(name)) + pack_int(len(text))
    body = lengths + bytes((flag,)) + pack_group(group) + name + text
    return Request(Cmd.SET_METADATA, body)


def query_file_info_request(group: str, remote_name: str, flags: int = 0) -> Request:
    """QUERY_FILE_INFO; ``flags`` (QUERY_FINFO_*) travel in the header status byte."""
    if not 0 <= flags <= 0xFF:
        raise LocalProtocolError(f"query file info flags {flags} do not fit a byte")
    return Request(Cmd.QUERY_FILE_INFO, pack_group(group) + _remote(remote_name), status=flags)


def append_request(remote_name: str, size: int) -> Request:
    name = _appender_name(remote_name)
    return Request(Cmd.APPEND_FILE, pack_int(len(name)) + _size(size) + name, payload_size=size)


def modify_request(remote_name: str, offset: int, size: int) -> Request:
    name = _appender_name(remote_name)
    body = pack_int(len(name)) + _size(offset, "offset") + _size(size) + name
    return Request(Cmd.MODIFY_FILE, body, payload_size=size)


def truncate_request(remote_name: str, size: int) -> Request:
    name = _appender_name(remote_name)
    return Request(Cmd.TRUNCATE_FILE, pack_int(len(name)) + _size(size) + name)


def regenerate_appender_request(remote_name: str) -> Request:
    return Request(Cmd.REGENERATE_APPENDER_FILENAME, _appender_name(remote_name))


def fetch_binlog_request(group: str, store_path_index: int) -> Request:
    if not 0 <= store_path_index <= 0xFF:
        raise LocalProtocolError(f"store path index {store_path_index} out of range")
    return Request(Cmd.FETCH_ONE_PATH_BINLOG, pack_group(group) + bytes((store_path_index,)))


# ----------------------------------------------------------------- replies


def decode_file_id_reply(body: bytes) -> FileId:
    """Reply of uploads (11, 21, 23) and REGENERATE_APPENDER_FILENAME (38)."""
    r = FieldReader(body, "upload reply")
    group = r.text(GROUP_NAME_LEN)
    remote = r.rest_text()
    try:
        return make_file_id(group, remote)
    except InvalidFileId as exc:
        raise ProtocolError(
            f"upload reply carries an invalid file ID {group!r}/{remote!r}"
        ) from exc


def decode_file_info_reply(body: bytes) -> FileInfo:
    if len(body) not in FILE_INFO_SIZES:
        raise ProtocolError(f"file info reply of {len(body)} bytes")
    r = FieldReader(body, "file info reply")
    size, mtime, crc = r.int64(), r.int64(), r.int64()
    ip = r.text(r.remaining)
    if size < 0:
        raise ProtocolError(f"file info reply with negative size {size}")
    # The server widens the 32-bit crc with sign extension.
    return FileInfo(size, mtime, crc & 0xFFFFFFFF, ip)


def decode_metadata_reply(body: bytes) -> Metadata:
    return decode_metadata(body)


def expect_empty(body: bytes, what: str) -> None:
    if body:
        raise ProtocolError(f"{what}: expected an empty reply body, got {len(body)} bytes")


# ------------------------------------------------- server side (harness)


def encode_file_id_reply(group: str, remote_name: str) -> bytes:
    return pack_group(group) + _remote(remote_name)


def encode_file_info_reply(info: FileInfo, ip_size: int = IPV4_ADDRESS_SIZE) -> bytes:
    return encode_file_info_message(info, ip_size)[HEADER_SIZE:]


def encode_file_info_message(info: FileInfo, ip_size: int = IPV4_ADDRESS_SIZE) -> bytes:
    """The whole reply to QUERY_FILE_INFO, header included, packed at once.

    The storage answers file info requests all the time; this is one pack
    where header, numbers and padded IP field would be four pieces joined.
    """
    ip = encode_text(info.source_ip, "ip address")
    if len(ip) > ip_size:
        raise LocalProtocolError(f"ip address {ip!r} longer than {ip_size} bytes")
    crc = info.crc32 & 0xFFFFFFFF
    signed = crc - (1 << 32) if crc & 0x80000000 else crc
    layout = _FILE_INFO_MESSAGE.get(ip_size) or struct.Struct(f">QBBqqq{ip_size}s")
    try:
        return layout.pack(24 + ip_size, _RESP, 0, info.size, info.create_time, signed, ip)
    except struct.error as exc:
        raise LocalProtocolError(f"file info {info} does not fit its fields") from exc


class UploadHead(NamedTuple):  # a named tuple: one per upload
    store_path_index: int  # STORE_PATH_ANY (255) = storage chooses
    size: int
    ext: str


def _check_body_length(what: str, body_length: int | None, expected: int) -> None:
    """The storage answers EINVAL when the sizes inside disagree with the header."""
    if body_length is not None and body_length != expected:
        raise ProtocolError(f"{what}: header length {body_length}, fields add up to {expected}")


def parse_upload_head(head: bytes, *, body_length: int | None = None) -> UploadHead:
    """The first `UPLOAD_FIXED` bytes of 11/23; ``body_length`` is the header's length."""
    if len(head) != UPLOAD_FIXED:  # one unpack: every upload starts here
        raise ProtocolError(f"upload request: {len(head)} bytes of head, not {UPLOAD_FIXED}")
    index, size, raw_ext = _UPLOAD_HEAD.unpack(head)
    ext = decode_text(raw_ext)
    if size < 0:
        raise ProtocolError(f"upload request with negative size {size}")
    _check_body_length("upload request", body_length, UPLOAD_FIXED + size)
    _check_name_part("upload request", "file extension", ext)
    return UploadHead(index, size, ext)


def _check_name_part(what: str, part: str, text: str) -> None:
    """The storage refuses exts and prefixes with other characters (EINVAL)."""
    if not set(text) <= _NAME_CHARS:
        raise ProtocolError(f"{what}: invalid {part} {text!r}")


@dataclass(frozen=True, slots=True)
class SlaveHead:
    master_name_len: int
    size: int
    prefix: str
    ext: str


def parse_slave_head(head: bytes, *, body_length: int | None = None) -> SlaveHead:
    """The first `SLAVE_FIXED` bytes of 21; ``body_length`` is the header's length."""
    what = "upload slave request"
    r = FieldReader(head, what)
    name_len, size, prefix, ext = r.int64(), r.int64(), r.text(PREFIX_LEN), r.text(EXT_NAME_LEN)
    r.end()
    if not MIN_MASTER_NAME_LEN <= name_len <= MAX_REMOTE_NAME_LEN or size < 0:
        raise ProtocolError(f"{what}: name length {name_len}, size {size}")
    _check_body_length(what, body_length, SLAVE_FIXED + name_len + size)
    if not prefix:
        raise ProtocolError(f"{what}: empty prefix")
    _check_name_part(what, "prefix", prefix)
    _check_name_part(what, "file extension", ext)
    return SlaveHead(name_len, size, prefix, ext)


def _check_appender_name_len(what: str, name_len: int) -> None:
    if not MIN_APPENDER_NAME_LEN <= name_len <= MAX_REMOTE_NAME_LEN:
        raise ProtocolError(f"{what}: appender name length {name_len}")


def parse_append_head(head: bytes, *, body_length: int | None = None) -> tuple[int, int]:
    """(name length, data size) of APPEND_FILE; ``body_length`` is the header's length."""
    r = FieldReader(head, "append request")
    name_len, size = r.int64(), r.int64()
    r.end()
    _check_appender_name_len("append request", name_len)
    if size < 0:
        raise ProtocolError(f"append request: size {size}")
    _check_body_length("append request", body_length, APPEND_FIXED + name_len + size)
    return name_len, size


def parse_modify_head(head: bytes, *, body_length: int | None = None) -> tuple[int, int, int]:
    """(name length, offset, data size) of MODIFY_FILE; ``body_length`` as above."""
    r = FieldReader(head, "modify request")
    name_len, offset, size = r.int64(), r.int64(), r.int64()
    r.end()
    _check_appender_name_len("modify request", name_len)
    if size < 0 or offset < 0:
        raise ProtocolError(f"modify request: offset {offset}, size {size}")
    _check_body_length("modify request", body_length, MODIFY_FIXED + name_len + size)
    return name_len, offset, size


def parse_truncate_body(body: bytes) -> tuple[str, int]:
    """(remote name, new size) of TRUNCATE_FILE."""
    r = FieldReader(body, "truncate request")
    name_len, size = r.int64(), r.int64()
    _check_appender_name_len("truncate request", name_len)
    if name_len != r.remaining or size < 0:
        raise ProtocolError(f"truncate request: name length {name_len}, size {size}")
    return r.text(name_len), size


def parse_regenerate_body(body: bytes) -> str:
    """The appender name that is the whole body of REGENERATE_APPENDER_FILENAME."""
    _check_appender_name_len("regenerate appender request", len(body))
    return decode_text(body)


def parse_group_remote_body(body: bytes) -> tuple[str, str]:
    """Body of 12, 15, 22: group + remote name."""
    if not GROUP_NAME_LEN < len(body) <= GROUP_REMOTE_BODY_MAX:
        raise ProtocolError(f"request body of {len(body)} bytes")
    return split_group_remote(body)


def split_group_remote(names: bytes) -> tuple[str, str]:
    """Group and remote name of a group + remote name field, whatever its length."""
    return decode_text(names[:GROUP_NAME_LEN]), decode_text(names[GROUP_NAME_LEN:])


def parse_download_range(body: bytes) -> tuple[int, int, bytes]:
    """(offset, length, names) of DOWNLOAD_FILE: ``names`` is the group and remote
    name still encoded, laid out as the whole body of 12, 15 and 22.

    A server that remembers what such a body names serves a download of a file
    and the info, metadata or delete requests that name it alike from one entry.
    """
    if len(body) <= DOWNLOAD_FIXED:
        raise ProtocolError(f"download request body of {len(body)} bytes")
    offset, length = _DOWNLOAD_RANGE.unpack_from(body)
    if offset < 0 or length < 0:
        raise ProtocolError(f"download request: offset {offset}, length {length}")
    return offset, length, body[DOWNLOAD_FIXED - GROUP_NAME_LEN :]


def parse_download_body(body: bytes) -> tuple[int, int, str, str]:
    """(offset, length, group, remote name) of DOWNLOAD_FILE.

    Like upstream, no bound on the name here: a name no file can have is
    refused when it is looked up.
    """
    offset, length, names = parse_download_range(body)
    return (offset, length, *split_group_remote(names))


@dataclass(frozen=True, slots=True)
class SetMetadataBody:
    group: str
    remote_name: str
    overwrite: bool
    meta: Metadata


def parse_set_metadata_body(body: bytes) -> SetMetadataBody:
    """Body of SET_METADATA (13); names and values come as the client sent them."""
    r = FieldReader(body, "set metadata request")
    name_len, meta_len, flag, group = r.int64(), r.int64(), r.byte(), r.text(GROUP_NAME_LEN)
    if (
        not 0 < name_len <= MAX_REMOTE_NAME_LEN
        or meta_len < 0
        or name_len + meta_len != r.remaining
        or flag not in (META_OVERWRITE, META_MERGE)
    ):
        raise ProtocolError("set metadata request: inconsistent lengths or flag")
    remote = r.text(name_len)
    return SetMetadataBody(group, remote, flag == META_OVERWRITE, decode_metadata(r.rest()))


def parse_storage_cmd(cmd: int) -> Cmd:
    """The command of a request to a storage; `ProtocolError` if it serves no such command."""
    if cmd not in STORAGE_CLIENT_CMDS:
        raise ProtocolError(f"storage command {cmd} unknown")
    return Cmd(cmd)


def parse_fetch_binlog_body(body: bytes) -> tuple[str, int]:
    if len(body) != GROUP_NAME_LEN + 1:
        raise ProtocolError(f"fetch binlog body of {len(body)} bytes")
    r = FieldReader(body, "fetch binlog request")
    return r.text(GROUP_NAME_LEN), r.byte()
