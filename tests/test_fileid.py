"""File IDs: parsing, validation, the fields inside the name, and name generation.

Good IDs come from the golden transcripts; the expected fields come from the
capture notes (sizes, mtimes, crc32 of the uploaded content).
"""

from __future__ import annotations

import base64
import ipaddress
import random
import struct
import zlib
from typing import Any

import golden
import pytest
from golden import IP_MODE
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import pattern

from fdfsmount.proto import storage as storage_codec
from fdfsmount.proto.errors import InvalidFileId, LocalProtocolError
from fdfsmount.proto.fileid import (
    APPENDER_FLAG,
    BASE64_LEN,
    MAX_REMOTE_NAME_LEN,
    MAX_SERVER_ID,
    NORMAL_REMOTE_NAME_LEN,
    TRUNK_FLAG,
    TRUNK_REMOTE_NAME_LEN,
    FileId,
    FileType,
    check_generated,
    decode_file_id,
    encode_source,
    generated_name_problem,
    is_appender_name,
    is_valid_remote_name,
    make_file_id,
    make_remote_name,
    parse_file_id,
    slave_remote_name,
    split_ext,
)

FILE_ID_CMDS = (11, 21, 23, 38)


def golden_file_ids() -> list[str]:
    ids = []
    for rec in golden.all_records():
        if rec.cmd in FILE_ID_CMDS and rec.response[9:10] == b"\0":
            body = rec.response_body
            ids.append(f"{body[:16].rstrip(bytes(1)).decode()}/{body[16:].decode()}")
    return ids


GOOD_IDS = golden_file_ids()


def test_golden_holds_file_ids_of_every_kind() -> None:
    assert len(GOOD_IDS) == 2 * 9  # 6 uploads, appender, slave, regenerated per mode


@pytest.mark.parametrize("text", GOOD_IDS)
def test_golden_ids_parse_and_round_trip(text: str) -> None:
    fid = parse_file_id(text)
    assert str(fid) == text
    group, remote = text.split("/", 1)
    assert (fid.group, fid.remote_name) == (group, remote)
    assert fid.store_path_index == 0
    assert fid.subdirs == (int(remote[4:6], 16), int(remote[7:9], 16))
    assert fid.name == remote[10:]
    assert make_file_id(group, remote) == fid
    assert is_valid_remote_name(remote)
    assert decode_file_id(text) == decode_file_id(fid)


NAME = "ooYBAGsC84mAaQSoAAAAEIZVgyU123.txt"
BAD_IDS: list[Any] = [
    "",
    "group1",
    "group1/",
    f"/group1/M00/00/46/{NAME}",
    f"group1/M00/00/46/{NAME}/",
    f"group1//M00/00/46/{NAME}",
    f"group1/M00/00/46/{NAME}\n",
    f" group1/M00/00/46/{NAME}",
    # group characters and length
    f"group-1/M00/00/46/{NAME}",
    f"group_1/M00/00/46/{NAME}",
    f"gr oup/M00/00/46/{NAME}",
    f"grüppe/M00/00/46/{NAME}",
    f"{'g' * 17}/M00/00/46/{NAME}",
    f"/M00/00/46/{NAME}",
    # store path and subdirectories: upper-case hex, two digits
    f"group1/m00/00/46/{NAME}",
    f"group1/M0a/00/46/{NAME}",
    f"group1/M00/0a/46/{NAME}",
    f"group1/M00/00/4f/{NAME}",
    f"group1/M000/00/46/{NAME}",
    f"group1/M00/0/46/{NAME}",
    f"group1/M00/00/G6/{NAME}",
    f"group1/X00/00/46/{NAME}",
    f"group1/00/46/{NAME}",
    # short or malformed names
    "group1/M00/00/46/ooYBAGsC84mAaQSo",
    "group1/M00/00/46/ooYBAGsC84mAaQSoAAAAEIZVgy",
    "group1/M00/00/46/",
    "group1/M00/00/46/ooYBAGsC84mAaQSoAAAAEIZV+yU123.txt",
    "group1/M00/00/46/ooYBAGsC84mAaQSoAAAAEIZVgy=123.txt",
    "group1/M00/00/46/ooYBAGsC84mAaQSoAAAAEIZVgyU123.t xt",
    "group1/M00/00/46/ooYBAGsC84mAaQSoAAAAEIZVgyU123.tx\0",
    f"group1/M00/00/46/{NAME}{'x' * (MAX_REMOTE_NAME_LEN - 10 - len(NAME) + 1)}",
    # path traversal
    "..",
    "../..",
    "group1/..",
    f"../group1/M00/00/46/{NAME}",
    "group1/M00/00/46/../../../../etc/passwd",
    f"group1/M00/../46/{NAME}",
    f"group1/M00/00/../{NAME}",
    f"group1/M00/00/46/{NAME}/../x",
    "group1/M00/00/46/ooYBAGsC84mAaQSoAAAAEIZVgyU/../../../x",
    "group1/M00/00/46/..",
    # not a str at all
    None,
    123,
    b"group1/M00/00/46/ooYBAGsC84mAaQSoAAAAEIZVgyU123.txt",
    ["group1", f"M00/00/46/{NAME}"],
]


@pytest.mark.parametrize("text", BAD_IDS, ids=repr)
def test_bad_ids_are_refused(text: Any) -> None:
    with pytest.raises(InvalidFileId):
        parse_file_id(text)
    with pytest.raises(InvalidFileId):
        decode_file_id(text)


def test_longest_accepted_name() -> None:
    remote = f"M00/00/46/{NAME}".ljust(MAX_REMOTE_NAME_LEN, "x")
    assert parse_file_id(f"group1/{remote}").remote_name == remote
    assert decode_file_id(f"group1/{remote}").file_type is FileType.SLAVE


@pytest.mark.parametrize(
    "remote",
    ["M00/00/46/ooYB", "M00/00/46/" + "A" * 23, "garbage", "", f"M00/00/46/{NAME}/.."],
)
def test_unvalidated_file_id_objects_are_checked(remote: str) -> None:
    """A FileId built directly (no validation) still only yields InvalidFileId."""
    with pytest.raises(InvalidFileId):
        decode_file_id(FileId("group1", remote))


def test_invalid_file_id_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_file_id("nope")


# ------------------------------------------------------------ decoded fields

HELLO = b"Hello, FastDFS!\n"
NO_EXT = b"no extension payload\n"
APPENDER_AFTER_EDITS = b"01xyz567" + b"\0" * 4

# (file id, type, storage id, ip, create time, size, crc32); times are the
# mtimes QUERY_FILE_INFO reported for the same files.
DECODED = [
    (
        "group1/M00/00/46/ooYBAGsC84mAaQSoAAAAEIZVgyU123.txt",
        FileType.NORMAL, 100002, None, 1795355529, 16, zlib.crc32(HELLO),
    ),
    (
        "group1/M00/00/46/oYYBAGsC84qASNMpAAAAFT6cIgk0171326",
        FileType.NORMAL, 100001, None, None, 21, zlib.crc32(NO_EXT),
    ),
    (
        "group1/M00/00/46/oYYBAGsC84uAJgo8AAAAAAAAAAA339.txt",
        FileType.NORMAL, 100001, None, None, 0, 0,
    ),
    (
        "group1/M00/00/46/ooYBAGsC84qAUZ-KAAMgAL_w-v0642.bin",
        FileType.NORMAL, 100002, None, None, 204800, None,
    ),
    (
        "group1/M00/00/46/oYYBAGsC87CETlZmAAAAAKaEx8Y099.log",
        FileType.APPENDER, 100001, None, 1795355568, None, None,
    ),
    (
        "group1/M00/00/46/ooYBAGsC85yAe5BMAAAAJnyf03c317_big.jpg",
        FileType.SLAVE, 100002, None, 1795355548, None, None,
    ),
    (
        "group1/M00/00/46/oYYBAGsC87aAPZ0aAAAADDlvU94099.log",
        FileType.NORMAL, 100001, None, None, 12, zlib.crc32(APPENDER_AFTER_EDITS),
    ),
    (
        "groupip/M00/00/00/fwAAA2sC8ziALBcyAAAAEIZVgyU838.txt",
        FileType.NORMAL, None, "127.0.0.3", 1795355448, 16, zlib.crc32(HELLO),
    ),
    (
        "groupip/M00/00/00/fwAAA2sC8zmAV2ouAAAAFT6cIgk0578448",
        FileType.NORMAL, None, "127.0.0.3", None, 21, zlib.crc32(NO_EXT),
    ),
    (
        "groupip/M00/00/00/fwAAA2sC81WEXkVaAAAAAKaEx8Y931.log",
        FileType.APPENDER, None, "127.0.0.3", 1795355477, None, None,
    ),
    (
        "groupip/M00/00/00/fwAAA2sC80uADkqCAAAAJnyf03c705_big.jpg",
        FileType.SLAVE, None, "127.0.0.3", 1795355467, None, None,
    ),
    (
        "groupip/M00/00/00/fwAAA2sC81uAFCe5AAAADDlvU94931.log",
        FileType.NORMAL, None, "127.0.0.3", None, 12, zlib.crc32(APPENDER_AFTER_EDITS),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "ftype", "sid", "ip", "ctime", "size", "crc"), DECODED)
def test_decoded_fields(
    text: str,
    ftype: FileType,
    sid: int | None,
    ip: str | None,
    ctime: int | None,
    size: int | None,
    crc: int | None,
) -> None:
    assert text in GOOD_IDS
    info = decode_file_id(text)
    assert info.file_type is ftype
    assert (info.source_id, info.source_ip) == (sid, ip)
    assert info.source == (str(sid) if sid is not None else ip)
    if ctime is not None:
        assert info.create_time == ctime
    assert abs(info.create_time - 1795355000) < 10_000  # README: November 2026
    assert info.size == size
    if crc is not None or ftype is not FileType.NORMAL:
        assert info.crc32 == crc
    if ftype is not FileType.NORMAL:
        assert info.size is None and info.crc32 is None


def test_200k_file_crc_matches_its_content() -> None:
    content = golden.record(IP_MODE, "upload_file_200k").request_body[storage_codec.UPLOAD_FIXED :]
    for text in (
        "group1/M00/00/46/ooYBAGsC84qAUZ-KAAMgAL_w-v0642.bin",
        "groupip/M00/00/00/fwAAA2sC8zmANm_bAAMgAL_w-v0169.bin",
    ):
        info = decode_file_id(text)
        assert (info.size, info.crc32) == (len(content), zlib.crc32(content))


def test_source_prefixes() -> None:
    """README: 100002 -> a2 86 01 00 ('ooYB'); 127.0.0.3 -> 7f 00 00 03 ('fwAAAw')."""
    assert encode_source(100002) == bytes.fromhex("a2860100")
    assert base64.urlsafe_b64encode(encode_source(100002)).startswith(b"ooYB")
    assert encode_source("127.0.0.3") == bytes.fromhex("7f000003")
    assert base64.urlsafe_b64encode(encode_source("127.0.0.3")).startswith(b"fwAAAw")


def _name_with(size_field: int, suffix: str, source: bytes = b"\x7f\0\0\x03") -> str:
    raw = struct.pack(">4sIQI", source, 1795355000, size_field, 0x12345678)
    b64 = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"g1/M00/00/00/{b64}{suffix}"


def test_trunk_and_big_files() -> None:
    trunk_suffix = "x" * (TRUNK_REMOTE_NAME_LEN - 10 - BASE64_LEN)
    trunk = decode_file_id(_name_with(TRUNK_FLAG | 1234, trunk_suffix))
    assert (trunk.file_type, trunk.size, trunk.crc32) == (FileType.TRUNK, 1234, 0x12345678)
    # Longer than a trunk name, or longer than a normal name without the flag: slave.
    assert (
        decode_file_id(_name_with(TRUNK_FLAG | 1, trunk_suffix + "y")).file_type is FileType.SLAVE
    )
    assert decode_file_id(_name_with(1, trunk_suffix)).file_type is FileType.SLAVE
    # 4 GiB and more: the size field holds the whole size, no random high bits.
    big = decode_file_id(_name_with(5 << 32 | 7, "1234567"))
    assert (big.file_type, big.size) == (FileType.NORMAL, 5 << 32 | 7)
    # Bit 63 set: only the low 32 bits are the size.
    marked = decode_file_id(_name_with(1 << 63 | 0x7F_FFFF << 32 | 99, "1234567"))
    assert marked.size == 99
    # The appender flag wins over everything else.
    appender = decode_file_id(_name_with(1 << 63 | APPENDER_FLAG | TRUNK_FLAG, "1234567"))
    assert appender.file_type is FileType.APPENDER


def test_source_bytes_decide_id_or_ip() -> None:
    as_id = decode_file_id(_name_with(1 << 63, "1234567", source=(1).to_bytes(4, "little")))
    assert (as_id.source_id, as_id.source_ip) == (1, None)
    top = decode_file_id(_name_with(1 << 63, "1234567", source=MAX_SERVER_ID.to_bytes(4, "little")))
    assert top.source_id == MAX_SERVER_ID
    past = decode_file_id(
        _name_with(1 << 63, "1234567", source=(MAX_SERVER_ID + 1).to_bytes(4, "little"))
    )
    assert (past.source_id, past.source_ip) == (None, "0.0.0.1")
    zero = decode_file_id(_name_with(1 << 63, "1234567", source=bytes(4)))
    assert (zero.source_id, zero.source_ip) == (None, "0.0.0.0")


# ------------------------------------------------------------ name generation

ipv4_sources = st.builds(
    lambda a, b, c, d: f"{a}.{b}.{c}.{d}",
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(1, 255),  # last octet 0 would read back as a server id
)
exts = pattern(r"[A-Za-z0-9]{0,6}")


@settings(max_examples=300, deadline=None)
@given(
    source=st.integers(1, MAX_SERVER_ID) | ipv4_sources,
    create_time=st.integers(0, 2**32 - 1),
    size=st.integers(0, 2**32 - 1) | st.integers(0, 2**58 - 1),
    crc32=st.integers(0, 2**32 - 1),
    ext=exts,
    appender=st.booleans(),
    store_path_index=st.integers(0, 255),
    subdirs=st.tuples(st.integers(0, 255), st.integers(0, 255)),
    seed=st.integers(0, 2**32),
)
def test_make_remote_name_round_trips(
    source: int | str,
    create_time: int,
    size: int,
    crc32: int,
    ext: str,
    appender: bool,
    store_path_index: int,
    subdirs: tuple[int, int],
    seed: int,
) -> None:
    remote = make_remote_name(
        source=source, create_time=create_time, size=size, crc32=crc32, ext=ext,
        appender=appender, store_path_index=store_path_index, subdirs=subdirs,
        rng=random.Random(seed),
    )  # fmt: skip
    assert len(remote) == NORMAL_REMOTE_NAME_LEN
    fid = parse_file_id(f"group1/{remote}")
    assert fid.store_path_index == store_path_index
    assert fid.subdirs == subdirs
    assert remote.endswith(f".{ext}") if ext else remote[-7:].isdigit()
    info = decode_file_id(fid)
    if isinstance(source, int):
        assert (info.source_id, info.source_ip) == (source, None)
    else:
        assert (info.source_id, info.source_ip) == (None, str(ipaddress.IPv4Address(source)))
    assert info.create_time == create_time
    if appender:
        assert (info.file_type, info.size, info.crc32) == (FileType.APPENDER, None, None)
    else:
        assert (info.file_type, info.size, info.crc32) == (FileType.NORMAL, size, crc32)


def test_make_remote_name_mirrors_the_golden_size_field() -> None:
    """Bit 63 set, bits 32-54 random, appender: bit 58 and a zero low word."""
    for text, appender in (
        ("group1/M00/00/46/ooYBAGsC84mAaQSoAAAAEIZVgyU123.txt", False),
        ("group1/M00/00/46/oYYBAGsC87CETlZmAAAAAKaEx8Y099.log", True),
    ):
        raw = base64.urlsafe_b64decode(parse_file_id(text).name[:BASE64_LEN] + "=")
        golden_field = int.from_bytes(raw[8:16], "big")
        ours = base64.urlsafe_b64decode(
            make_remote_name(source=1, create_time=0, size=16, crc32=0, appender=appender)[
                10 : 10 + BASE64_LEN
            ]
            + "="
        )
        ours_field = int.from_bytes(ours[8:16], "big")
        flags = (1 << 63) | APPENDER_FLAG | TRUNK_FLAG | (0xFF << 55)
        assert golden_field & flags == ours_field & flags
        assert (golden_field & 0xFFFFFFFF == 0) == appender == (ours_field & 0xFFFFFFFF == 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"source": 0},
        {"source": MAX_SERVER_ID + 1},
        {"source": -5},
        {"source": "not an ip"},
        {"source": "::1"},
        {"source": "10.0.0.0"},  # little-endian 10 would decode as server id 10
        {"size": -1},
        {"size": 1 << 58},
        {"ext": "toolong"},
        {"ext": "a/b"},
        {"ext": "é"},
        {"store_path_index": 256},
        {"store_path_index": -1},
        {"subdirs": (256, 0)},
        {"subdirs": (0, -1)},
    ],
    ids=repr,
)
def test_make_remote_name_refuses_impossible_values(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"source": 100001, "create_time": 1, "size": 1, "crc32": 1}
    args.update(kwargs)
    with pytest.raises(LocalProtocolError):
        make_remote_name(**args)


# ------------------------------------------------------------ slave names


@pytest.mark.parametrize("mode", golden.MODES)
def test_slave_remote_name_matches_golden(mode: str) -> None:
    def file_id_of(name: str) -> FileId:
        body = golden.record(mode, name).response_body
        return make_file_id(body[:16].rstrip(b"\0").decode(), body[16:].decode())

    master = file_id_of("upload_file_master")
    slave = file_id_of("upload_slave_file")
    assert slave_remote_name(master.remote_name, "_big", "jpg") == slave.remote_name
    assert decode_file_id(slave).file_type is FileType.SLAVE
    # The slave keeps the master's source and create time.
    m, s = decode_file_id(master), decode_file_id(slave)
    assert (m.source_id, m.source_ip, m.create_time) == (s.source_id, s.source_ip, s.create_time)


def reference_slave_name(master: str, prefix: str, ext: str) -> str:
    """Upstream's fdfs_gen_slave_filename, transcribed."""
    tail_start = len(master) - 7
    dot = master.find(".", tail_start)
    true_ext = f".{ext}" if ext else ""
    if dot < 0:
        return master + prefix + true_ext
    return master[:dot] + prefix + true_ext


masters = st.builds(
    lambda b64, tail: f"M00/00/00/{b64}{tail}",
    pattern(r"[A-Za-z0-9_-]{27}"),
    pattern(r"[A-Za-z0-9_.-]{7,12}"),
)


@settings(max_examples=300, deadline=None)
@given(
    master=masters,
    prefix=pattern(r"[A-Za-z0-9_.-]{1,16}"),
    ext=pattern(r"[A-Za-z0-9_.-]{0,6}"),
)
def test_slave_remote_name_follows_upstream(master: str, prefix: str, ext: str) -> None:
    assert slave_remote_name(master, prefix, ext) == reference_slave_name(master, prefix, ext)


@pytest.mark.parametrize(
    ("master", "prefix", "ext"),
    [
        (f"M00/00/46/{NAME}", "", "jpg"),
        (f"M00/00/46/{NAME}", "a/b", "jpg"),
        (f"M00/00/46/{NAME}", "p" * 17, "jpg"),
        (f"M00/00/46/{NAME}", "_big", "jpeg123"),
        (f"M00/00/46/{NAME}", "_big", "j g"),
        ("M00/00/46/short", "_big", "jpg"),
    ],
)
def test_slave_remote_name_refuses_bad_parts(master: str, prefix: str, ext: str) -> None:
    with pytest.raises(LocalProtocolError):
        slave_remote_name(master, prefix, ext)


@pytest.mark.parametrize(
    ("local", "ext"),
    [
        ("s.jpg", "jpg"),
        ("archive.tar.gz", "gz"),
        ("blob", ""),
        ("dir.d/blob", ""),
        ("name.toolong", ""),
        (".hidden", "hidden"),
        ("trailing.", ""),
    ],
)
def test_split_ext(local: str, ext: str) -> None:
    assert split_ext(local) == ext


# ------------------------------------------------------- server-generated names


def _name(size_field: int, *, source: bytes = b"\x01\x00\x00\x00", ctime: int = 1_700_000_000,
          trunk_info: str = "", suffix: str = "1234567") -> str:  # fmt: skip
    raw = struct.pack(">4sIQI", source, ctime, size_field, 0x12345678)
    head = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"group1/M00/00/46/{head}{trunk_info}{suffix}"


MASK = 0x80000000 << 32


@pytest.mark.parametrize("text", GOOD_IDS)
def test_golden_ids_could_be_generated(text: str) -> None:
    assert check_generated(text) == parse_file_id(text)
    assert generated_name_problem(parse_file_id(text).remote_name) is None


@given(
    source=st.one_of(st.integers(1, MAX_SERVER_ID), st.just("127.0.0.9")),
    size=st.one_of(st.integers(0, (1 << 32) - 1), st.integers(1 << 32, (1 << 50))),
    appender=st.booleans(),
    ext=st.sampled_from(["", "a", "txt", "tar.gz", "x-y_z", "123456"]),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=300, deadline=None)
def test_every_generated_name_is_accepted(
    source: int | str, size: int, appender: bool, ext: str, seed: int
) -> None:
    remote = make_remote_name(
        source=source, create_time=1_700_000_000, size=size, crc32=7, ext=ext,
        appender=appender, rng=random.Random(seed),
    )  # fmt: skip
    assert generated_name_problem(remote) is None
    slave = slave_remote_name(remote, "_150x150", "jpg")
    assert generated_name_problem(slave) is None


GENERATED_OK = [
    _name(MASK | 0x7FFFFF << 32 | 16),  # all 23 random bits
    _name(MASK | 16, suffix="123.txt"),
    _name(MASK | 16, suffix=".tar.gz"),  # a 6-character extension leaves no digits
    _name(MASK | 16, suffix="12:.log"),  # rand() == RAND_MAX gives ':'
    _name(MASK | 16, source=bytes((127, 0, 0, 3))),  # an IPv4 source
    _name(5 << 32),  # 20 GiB, carried unmasked
    _name(16),  # unmasked, as storages before 2.07 (2011) wrote every size
    _name(MASK | APPENDER_FLAG, suffix="099.log"),
    _name(MASK | TRUNK_FLAG | 300, trunk_info="AAAAAQAAAAAAAAEs", suffix="123.jpg"),
    _name(MASK | 16, suffix="123_big.jpg"),  # slave: prefix, its own ext
    _name(MASK | 16, suffix="1234567_s"),  # slave of a master without an extension
    _name(MASK | TRUNK_FLAG | 9, trunk_info="AAAAAQAAAAAAAAEs", suffix="123_s.jpg"),
]


@pytest.mark.parametrize("text", GENERATED_OK)
def test_names_a_server_can_generate(text: str) -> None:
    assert check_generated(text)


NOT_GENERATED = [
    # The made-up name of a user report: letters where digits go.
    "group1/M00/00/00/nopeAAAAAAAAAAAAAAAAAAAAAAAAAA.png",
    # A base64 part that does not end on a 20-byte boundary (last symbol 'B').
    _name(MASK | 16)[:-8] + "B" + "1234567",
    _name(MASK | 16, source=bytes(4)),  # no source
    _name(MASK | 16, ctime=0),  # no create time
    _name(MASK | 1 << 62 | 16),  # a bit no server sets
    _name(MASK | 1 << 55 | 16),
    _name(MASK | APPENDER_FLAG | TRUNK_FLAG, trunk_info="AAAAAQAAAAAAAAEs"),
    _name(MASK | APPENDER_FLAG | 5),  # an appender name with a size
    _name(APPENDER_FLAG | 1 << 32),  # flags on an unmasked size
    _name(MASK | TRUNK_FLAG | 9, suffix="123.jpg"),  # trunk without its position
    _name(MASK | TRUNK_FLAG | 9, trunk_info="AAAA", suffix="123.jpg"),
    _name(MASK | 16, suffix="12345.txt"[:7].replace("3", "x")),  # letters among digits
    _name(MASK | 16, suffix="1234.jp"[:6]),  # too short
    _name(MASK | 16, suffix="123456."),  # a dot and no extension
    _name(MASK | 16, suffix="1234567" + "p" * 30),  # longer than any slave
]


@pytest.mark.parametrize("text", NOT_GENERATED)
def test_names_no_server_generates(text: str) -> None:
    fid = parse_file_id(text)  # the shape is fine...
    assert generated_name_problem(fid.remote_name) is not None
    with pytest.raises(InvalidFileId, match="cannot be a FastDFS file ID"):
        check_generated(fid)


@pytest.mark.parametrize("ext", ["", "txt", "abcdef"])
def test_is_appender_name_reads_the_appender_bit(ext: str) -> None:
    for appender in (False, True):
        remote = make_remote_name(
            source="127.0.0.10", create_time=1_795_000_000, size=5, crc32=9, ext=ext,
            appender=appender,
        )  # fmt: skip
        assert is_appender_name(remote) is appender
        assert decode_file_id(f"group1/{remote}").file_type == (
            FileType.APPENDER if appender else FileType.NORMAL
        )
    # What no storage names an appender: too short, or not base64 at all.
    assert not is_appender_name("M00/00/00/short.txt")
    assert not is_appender_name("M00/00/00/" + "!" * (NORMAL_REMOTE_NAME_LEN - 10))
