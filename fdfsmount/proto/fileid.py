"""FastDFS file IDs: parsing, validation and decoding of the embedded fields.

A file ID is ``<group>/M<xx>/<HH>/<HH>/<name>``. The first 27 characters of
``<name>`` are base64 (``-`` and ``_`` as the last two symbols, no padding) of
20 bytes: source storage (4), create time (4), a size field (8) and crc32 (4).
For a normal file the size field holds the file size, so size and crc32 are
known without asking a server; appender and slave files must be asked
(QUERY_FILE_INFO).
"""

from __future__ import annotations

import base64
import enum
import ipaddress
import random
import re
import struct
from dataclasses import dataclass

from .constants import EXT_NAME_LEN, GROUP_NAME_LEN, PREFIX_LEN
from .errors import InvalidFileId, LocalProtocolError

BASE64_LEN = 27
#: "M00/00/00/" + 27 base64 chars + 7-char suffix.
NORMAL_REMOTE_NAME_LEN = 10 + BASE64_LEN + EXT_NAME_LEN + 1
TRUNK_REMOTE_NAME_LEN = 10 + BASE64_LEN + 16 + 1 + EXT_NAME_LEN
#: Servers keep remote names in 128-byte C buffers with a NUL: at most 127 chars.
MAX_REMOTE_NAME_LEN = 127
MAX_SERVER_ID = (1 << 24) - 1

APPENDER_FLAG = 1 << 58
TRUNK_FLAG = 1 << 59
_RANDOM_SIZE_FLAG = 1 << 63

_FILE_ID_RE = re.compile(
    r"(?P<group>[A-Za-z0-9]{1,16})/"
    r"(?P<remote>M(?P<path>[0-9A-F]{2})/(?P<high>[0-9A-F]{2})/(?P<low>[0-9A-F]{2})/"
    r"(?P<name>[A-Za-z0-9_-]{27}[A-Za-z0-9_.-]*))"
)
_REMOTE_RE = re.compile(_FILE_ID_RE.pattern.split("/", 1)[1])
# Upstream's fdfs_validate_filename: what a storage accepts as ext and prefix.
_SLAVE_PREFIX_RE = re.compile(rf"[A-Za-z0-9_.-]{{1,{PREFIX_LEN}}}")
_EXT_RE = re.compile(rf"[A-Za-z0-9_.-]{{0,{EXT_NAME_LEN}}}")
_FIELDS = struct.Struct(">4sIQI")


class FileType(enum.Enum):
    NORMAL = "normal"
    APPENDER = "appender"
    SLAVE = "slave"
    TRUNK = "trunk"


@dataclass(frozen=True, slots=True)
class FileId:
    """A validated file ID split into its parts."""

    group: str
    remote_name: str  # "M00/00/00/..." as sent on the wire

    @property
    def store_path_index(self) -> int:
        return int(self.remote_name[1:3], 16)

    @property
    def subdirs(self) -> tuple[int, int]:
        return int(self.remote_name[4:6], 16), int(self.remote_name[7:9], 16)

    @property
    def name(self) -> str:
        return self.remote_name[10:]

    def __str__(self) -> str:
        return f"{self.group}/{self.remote_name}"


@dataclass(frozen=True, slots=True)
class FileIdInfo:
    """What a file ID itself says about the file."""

    file_type: FileType
    source_id: int | None  # storage server id (storage-id mode)
    source_ip: str | None  # IPv4 address (ip mode)
    create_time: int
    size: int | None  # None where only a server knows (appender, slave)
    crc32: int | None

    @property
    def source(self) -> str:
        return str(self.source_id) if self.source_id is not None else self.source_ip or ""


def parse_file_id(text: str) -> FileId:
    """Split and validate ``group/Mxx/HH/HH/name``; raise `InvalidFileId`."""
    if not isinstance(text, str) or not _FILE_ID_RE.fullmatch(text):
        raise InvalidFileId(f"not a FastDFS file ID: {text!r}")
    group, remote = text.split("/", 1)
    if len(remote) > MAX_REMOTE_NAME_LEN:
        raise InvalidFileId(f"remote name too long in {text!r}")
    return FileId(group, remote)


def make_file_id(group: str, remote_name: str) -> FileId:
    return parse_file_id(f"{group}/{remote_name}")


def is_valid_remote_name(remote_name: str) -> bool:
    return bool(_REMOTE_RE.fullmatch(remote_name)) and len(remote_name) <= MAX_REMOTE_NAME_LEN


def _b64decode(chars: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(chars + "=")
    except ValueError as exc:  # binascii.Error is a ValueError
        raise InvalidFileId(f"bad base64 in file name {chars!r}") from exc


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_file_id(file_id: FileId | str) -> FileIdInfo:
    """Decode the fields embedded in a file ID the way the upstream client does."""
    if isinstance(file_id, FileId):
        # A FileId can be built directly, bypassing validation: check it again.
        file_id = str(file_id)
    fid = parse_file_id(file_id)
    raw = _b64decode(fid.name[:BASE64_LEN])
    src, create_time, size_field, crc = _FIELDS.unpack(raw)
    # Upstream reads these 4 bytes in host (little-endian) order: a value that
    # fits a server id (1..2^24-1) is one, anything else is an IPv4 address.
    src_int = int.from_bytes(src, "little")
    source_id: int | None = None
    source_ip: str | None = None
    if 0 < src_int <= MAX_SERVER_ID:
        source_id = src_int
    else:
        source_ip = str(ipaddress.IPv4Address(src))
    name_len = len(fid.remote_name)
    if size_field & APPENDER_FLAG:
        return FileIdInfo(FileType.APPENDER, source_id, source_ip, create_time, None, None)
    is_trunk = bool(size_field & TRUNK_FLAG)
    if name_len > TRUNK_REMOTE_NAME_LEN or (name_len > NORMAL_REMOTE_NAME_LEN and not is_trunk):
        return FileIdInfo(FileType.SLAVE, source_id, source_ip, create_time, None, None)
    # Bit 63 marks a size padded with random high bits; trunk files also keep
    # the size in the low 32 bits. Files of 4 GiB and more carry it whole.
    size = size_field & 0xFFFFFFFF if size_field >> 63 or is_trunk else size_field
    ftype = FileType.TRUNK if is_trunk else FileType.NORMAL
    return FileIdInfo(ftype, source_id, source_ip, create_time, size, crc)


def encode_source(source: int | str) -> bytes:
    """The 4 source bytes for a storage id (int) or an IPv4 address (str)."""
    if isinstance(source, int):
        if not 0 < source <= MAX_SERVER_ID:
            raise LocalProtocolError(f"storage id {source} out of range 1..{MAX_SERVER_ID}")
        return source.to_bytes(4, "little")
    try:
        packed = ipaddress.IPv4Address(source).packed
    except ValueError as exc:
        raise LocalProtocolError(f"bad IPv4 source address {source!r}") from exc
    if 0 < int.from_bytes(packed, "little") <= MAX_SERVER_ID:
        # Decoders would read these bytes back as a server id.
        raise LocalProtocolError(f"IPv4 address {source} is indistinguishable from a server id")
    return packed


def make_remote_name(
    *,
    source: int | str,
    create_time: int,
    size: int,
    crc32: int,
    ext: str = "",
    appender: bool = False,
    store_path_index: int = 0,
    subdirs: tuple[int, int] | None = None,
    rng: random.Random | None = None,
) -> str:
    """Generate a remote file name in the real storage server's format.

    Raises `LocalProtocolError` (a `ValueError`) for values no name can carry.
    """
    rng = rng or random.Random()
    if not _EXT_RE.fullmatch(ext):
        raise LocalProtocolError(f"bad file extension {ext!r}")
    if not 0 <= size < 1 << 58:
        # Bits 58 and up are the appender and trunk flags and the random mark.
        raise LocalProtocolError(f"file size {size} out of range")
    if not 0 <= store_path_index <= 0xFF:
        raise LocalProtocolError(f"store path index {store_path_index} out of range")
    if subdirs is not None and not all(0 <= d <= 0xFF for d in subdirs):
        raise LocalProtocolError(f"subdirectories {subdirs} out of range")
    high = (rng.getrandbits(23) | 0x80000000) << 32
    if appender:
        size_field = high | APPENDER_FLAG
    elif size >> 32:
        size_field = size
    else:
        size_field = high | size
    raw = _FIELDS.pack(
        encode_source(source), create_time & 0xFFFFFFFF, size_field, crc32 & 0xFFFFFFFF
    )
    encoded = _b64encode(raw)
    if subdirs is None:
        subdirs = (rng.randrange(256), rng.randrange(256))
    digits = EXT_NAME_LEN - len(ext) if ext else EXT_NAME_LEN + 1
    suffix = "".join(str(rng.randrange(10)) for _ in range(digits)) + (f".{ext}" if ext else "")
    return f"M{store_path_index:02X}/{subdirs[0]:02X}/{subdirs[1]:02X}/{encoded}{suffix}"


def slave_remote_name(master_remote_name: str, prefix: str, ext: str) -> str:
    """The remote name of a slave: master name without ext + prefix + ``.ext``.

    Follows upstream's ``fdfs_gen_slave_filename``: the master's ext starts at
    the first ``.`` among its last 7 characters.
    """
    if not _SLAVE_PREFIX_RE.fullmatch(prefix):
        raise LocalProtocolError(f"bad slave prefix {prefix!r}")
    if not _EXT_RE.fullmatch(ext):
        raise LocalProtocolError(f"bad file extension {ext!r}")
    if len(master_remote_name) < 1 + BASE64_LEN + EXT_NAME_LEN:
        raise LocalProtocolError(f"master name {master_remote_name!r} too short")
    base = master_remote_name
    dot = base.find(".", len(base) - (EXT_NAME_LEN + 1))
    if dot >= 0:
        base = base[:dot]
    return f"{base}{prefix}" + (f".{ext}" if ext else "")


def split_ext(name: str) -> str:
    """The extension (no dot) FastDFS would store for a local file name."""
    dot = name.rfind(".")
    if dot < 0 or "/" in name[dot:]:
        return ""
    ext = name[dot + 1 :]
    return ext if _EXT_RE.fullmatch(ext) and ext else ""


__all__ = [
    "GROUP_NAME_LEN",
    "FileId",
    "FileIdInfo",
    "FileType",
    "decode_file_id",
    "make_file_id",
    "make_remote_name",
    "parse_file_id",
    "slave_remote_name",
    "split_ext",
]
