"""FastDFS file IDs: parsing, validation and decoding of the embedded fields.

A file ID is ``<group>/M<xx>/<HH>/<HH>/<name>``. The first 27 characters of
``<name>`` are base64 (``-`` and ``_`` as the last two symbols, no padding) of
20 bytes: source storage (4), create time (4), a size field (8) and crc32 (4).
For a normal file the size field holds the file size, so size and crc32 are
known without asking a server; appender and slave files must be asked
(QUERY_FILE_INFO).

# Strategy
`parse_file_id` checks the shape only (what every client accepts);
`check_generated` checks that a storage server could have generated the name,
following how upstream storages build it:

- the 27 base64 characters encode exactly 160 bits, so the last one carries
  two zero bits (only every fourth symbol can end a name);
- the source (server id or IPv4 address) and the create time are never 0;
- the size field of a file under 4 GiB is masked: bit 63 set, 23 random bits,
  bits 55..62 clear except the appender (58) or trunk (59) flag, never both;
  an appender's low 32 bits are 0. A file of 4 GiB or more carries its size
  unmasked (bit 63 clear, no flags), as every file did before FastDFS 2.07;
- a trunk name has 16 more base64 characters (its trunk id, offset and size);
- then a 7-character suffix: 7 random digits, or ``6 - len(ext)`` digits,
  ``.`` and the extension (1..6 of ``[A-Za-z0-9_.-]``). Upstream draws a digit
  as ``'0' + (int)(10.0 * rand() / RAND_MAX)``, which gives ``:`` once in 2^31;
- a longer suffix is a slave name: the master's digits, a prefix of up to 16
  characters and an optional ``.ext``.
"""

from __future__ import annotations

import binascii
import enum
import functools
import ipaddress
import random
import re
import socket
import struct
from dataclasses import dataclass
from typing import NamedTuple

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
    r"(?P<name>[A-Za-z0-9_-]{27}[A-Za-z0-9_.:-]*))"
)
_REMOTE_RE = re.compile(_FILE_ID_RE.pattern.split("/", 1)[1])
# Upstream's fdfs_validate_filename: what a storage accepts as ext and prefix.
_SLAVE_PREFIX_RE = re.compile(rf"[A-Za-z0-9_.-]{{1,{PREFIX_LEN}}}")
_EXT_RE = re.compile(rf"[A-Za-z0-9_.-]{{0,{EXT_NAME_LEN}}}")
_FIELDS = struct.Struct(">4sIQI")
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
#: Symbols that can end 27 base64 characters of 20 bytes: the low 2 bits are 0.
_B64_LAST = frozenset(_B64_ALPHABET[::4])
TRUNK_INFO_LEN = 16  # base64 of the trunk id, offset and size (3 x 4 bytes)
SUFFIX_LEN = EXT_NAME_LEN + 1
_B64_RE = re.compile(r"[A-Za-z0-9_-]*")
_NORMAL_SUFFIX_RE = re.compile(
    rf"[0-9:]{{{SUFFIX_LEN}}}|[0-9:]{{0,{EXT_NAME_LEN - 1}}}\.[A-Za-z0-9_.-]{{1,{EXT_NAME_LEN}}}"
)
_SLAVE_SUFFIX_RE = re.compile(
    rf"[0-9:]{{0,{SUFFIX_LEN}}}[A-Za-z0-9_.-]{{1,{PREFIX_LEN + SUFFIX_LEN}}}"
)
_SLAVE_SUFFIX_MAX = SUFFIX_LEN + PREFIX_LEN + SUFFIX_LEN
_MASK_HIGH_ALLOWED = 0x80000000 | 0x007FFFFF | (APPENDER_FLAG >> 32) | (TRUNK_FLAG >> 32)


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


class FileIdInfo(NamedTuple):
    """What a file ID itself says about the file (a named tuple: made for every ID decoded)."""

    file_type: FileType
    source_id: int | None  # storage server id (storage-id mode)
    source_ip: str | None  # IPv4 address (ip mode)
    create_time: int
    size: int | None  # None where only a server knows (appender, slave)
    crc32: int | None

    @property
    def source(self) -> str:
        return str(self.source_id) if self.source_id is not None else self.source_ip or ""


def _matched(text: str) -> re.Match[str]:
    """The shape check of `parse_file_id`: the regex match, or `InvalidFileId`."""
    match = _FILE_ID_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidFileId(f"not a FastDFS file ID: {text!r}")
    if match.end() - match.start("remote") > MAX_REMOTE_NAME_LEN:
        raise InvalidFileId(f"remote name too long in {text!r}")
    return match


def parse_file_id(text: str) -> FileId:
    """Split and validate ``group/Mxx/HH/HH/name``; raise `InvalidFileId`."""
    group, remote = _matched(text).group("group", "remote")
    return FileId(group, remote)


def make_file_id(group: str, remote_name: str) -> FileId:
    return parse_file_id(f"{group}/{remote_name}")


def is_valid_remote_name(remote_name: str) -> bool:
    return bool(_REMOTE_RE.fullmatch(remote_name)) and len(remote_name) <= MAX_REMOTE_NAME_LEN


def _b64decode(chars: str) -> bytes:
    # What base64.urlsafe_b64decode does, without its layers of Python calls.
    try:
        return binascii.a2b_base64(chars.encode("ascii").translate(_FROM_URLSAFE) + b"=")
    except ValueError as exc:  # binascii.Error is a ValueError, so is a non-ASCII str's
        raise InvalidFileId(f"bad base64 in file name {chars!r}") from exc


def _b64encode(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).decode().rstrip("=")


def decode_file_id(file_id: FileId | str) -> FileIdInfo:
    """Decode the fields embedded in a file ID the way the upstream client does."""
    # A FileId can be built directly, bypassing validation: check it again.
    text = f"{file_id.group}/{file_id.remote_name}" if isinstance(file_id, FileId) else file_id
    match = _matched(text)
    raw = _b64decode(match.group("name")[:BASE64_LEN])
    src, create_time, size_field, crc = _FIELDS.unpack(raw)
    # Upstream reads these 4 bytes in host (little-endian) order: a value that
    # fits a server id (1..2^24-1) is one, anything else is an IPv4 address.
    src_int = int.from_bytes(src, "little")
    source_id: int | None = None
    source_ip: str | None = None
    if 0 < src_int <= MAX_SERVER_ID:
        source_id = src_int
    else:
        source_ip = socket.inet_ntoa(src)
    name_len = match.end() - match.start("remote")
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


def is_appender_name(remote_name: str) -> bool:
    """Whether a storage treats ``remote_name`` as an appender file: upstream's check,
    the appender bit of the size field its base64 part decodes to (any other
    name, however malformed, is not one)."""
    if len(remote_name) < NORMAL_REMOTE_NAME_LEN:
        return False
    try:
        raw = _b64decode(remote_name[10 : 10 + BASE64_LEN])
    except InvalidFileId:
        return False
    return len(raw) >= 16 and bool(int.from_bytes(raw[8:16], "big") & APPENDER_FLAG)


def generated_name_problem(remote_name: str) -> str | None:
    """Why no storage server could have generated `remote_name`; None if one could.

    `remote_name` must already have the shape `parse_file_id` checks.
    """
    name = remote_name[10:]
    head, rest = name[:BASE64_LEN], name[BASE64_LEN:]
    if head[-1] not in _B64_LAST:
        return "its base64 part does not encode 20 bytes"
    src, create_time, size_field, _crc = _FIELDS.unpack(_b64decode(head))
    if src == bytes(4):
        return "it names no source storage"
    if create_time == 0:
        return "it has no create time"
    high = size_field >> 32
    is_trunk = bool(size_field & TRUNK_FLAG)
    if size_field >> 63:
        if high & ~_MASK_HIGH_ALLOWED & 0xFFFFFFFF:
            return "its size field has bits no server sets"
        if is_trunk and size_field & APPENDER_FLAG:
            return "it is marked both appender and trunk"
        if size_field & APPENDER_FLAG and size_field & 0xFFFFFFFF:
            return "it is an appender name with a size"
    elif size_field >= APPENDER_FLAG:
        # Unmasked: 4 GiB or more today; any size from storages older than 2.07.
        return "its size field has flags without the random mask"
    if is_trunk:
        info, rest = rest[:TRUNK_INFO_LEN], rest[TRUNK_INFO_LEN:]
        if len(info) < TRUNK_INFO_LEN or not _B64_RE.fullmatch(info):
            return "it is a trunk name without its trunk position"
    if len(rest) == SUFFIX_LEN:
        if not _NORMAL_SUFFIX_RE.fullmatch(rest):
            return f"its suffix {rest!r} is not random digits and an extension"
    elif len(rest) < SUFFIX_LEN:
        return "it is too short"
    elif len(rest) > _SLAVE_SUFFIX_MAX or not _SLAVE_SUFFIX_RE.fullmatch(rest):
        return f"its suffix {rest!r} is not a slave's prefix and extension"
    return None


def check_generated(file_id: FileId | str) -> FileId:
    """`file_id` parsed; `InvalidFileId` unless a storage server could have generated it."""
    fid = parse_file_id(str(file_id))
    problem = generated_name_problem(fid.remote_name)
    if problem is not None:
        raise InvalidFileId(f"{fid} cannot be a FastDFS file ID: {problem}")
    return fid


@functools.lru_cache(maxsize=64)
def encode_source(source: int | str) -> bytes:
    """The 4 source bytes for a storage id (int) or an IPv4 address (str),
    remembered: a storage names every new file with its own."""
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
    A storage names every upload with this: its source is encoded once
    (`encode_source` remembers), the random parts are one C call each.
    """
    rng = rng or random.Random()
    if not _EXT_RE.fullmatch(ext):
        raise LocalProtocolError(f"bad file extension {ext!r}")
    if not 0 <= size < 1 << 58:
        # Bits 58 and up are the appender and trunk flags and the random mark.
        raise LocalProtocolError(f"file size {size} out of range")
    if not 0 <= store_path_index <= 0xFF:
        raise LocalProtocolError(f"store path index {store_path_index} out of range")
    if subdirs is not None and not (0 <= subdirs[0] <= 0xFF and 0 <= subdirs[1] <= 0xFF):
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
        subdirs = (rng.getrandbits(8), rng.getrandbits(8))
    digits = EXT_NAME_LEN - len(ext) if ext else EXT_NAME_LEN + 1
    # Random digits from one 64-bit draw: the modulo's bias (under 10**7 / 2**64)
    # is far below anything observable, and getrandbits is one C call where
    # randrange is several Python ones.
    suffix = (f"{rng.getrandbits(64) % 10**digits:0{digits}d}" if digits else "") + (
        f".{ext}" if ext else ""
    )
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
    "check_generated",
    "decode_file_id",
    "generated_name_problem",
    "is_appender_name",
    "make_file_id",
    "make_remote_name",
    "parse_file_id",
    "slave_remote_name",
    "split_ext",
]
