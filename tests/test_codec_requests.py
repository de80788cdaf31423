"""Server-side request parsing rules of the codec that the golden captures do not show.

Each rule is upstream's storage behaviour (fdfs_validate_filename for exts
and prefixes, the master name longer than its logic path, names read as C
strings, stored metadata sorted with long names and values cut).
"""

from __future__ import annotations

import pytest

from fdfsmount.proto import storage as S
from fdfsmount.proto.constants import MAX_META_NAME_LEN, MAX_META_VALUE_LEN
from fdfsmount.proto.errors import ProtocolError
from fdfsmount.proto.metadata import decode_metadata, encode_stored_metadata
from fdfsmount.proto.wire import pack_fixed, pack_group, pack_int

NAME = "M00/00/00/" + "A" * 27 + "123456.txt"


def upload_head(ext: bytes, size: int = 3) -> bytes:
    return bytes((0,)) + pack_int(size) + ext.ljust(6, b"\0")


def slave_head(name_len: int, prefix: bytes, ext: bytes = b"jpg", size: int = 3) -> bytes:
    return pack_int(name_len) + pack_int(size) + prefix.ljust(16, b"\0") + ext.ljust(6, b"\0")


@pytest.mark.parametrize("ext", [b"txt", b"", b"a-b_c.", b"tar.gz"])
def test_upload_ext_accepted(ext: bytes) -> None:
    head = S.parse_upload_head(upload_head(ext), body_length=S.UPLOAD_FIXED + 3)
    assert head.ext == ext.decode()


@pytest.mark.parametrize("ext", [b"a/b", b"a b", b"\xc3\xa9", b"x*"])
def test_upload_ext_refused(ext: bytes) -> None:
    with pytest.raises(ProtocolError):
        S.parse_upload_head(upload_head(ext), body_length=S.UPLOAD_FIXED + 3)


@pytest.mark.parametrize(
    ("name_len", "prefix", "ext"),
    [
        (10, b"_s", b"jpg"),  # the master name is no longer than "M00/00/00/"
        (128, b"_s", b"jpg"),
        (44, b"", b"jpg"),  # empty prefix
        (44, b"a/", b"jpg"),
        (44, b"_s", b"j g"),
    ],
)
def test_slave_head_refused(name_len: int, prefix: bytes, ext: bytes) -> None:
    head = slave_head(name_len, prefix, ext)
    with pytest.raises(ProtocolError):
        S.parse_slave_head(head, body_length=S.SLAVE_FIXED + name_len + 3)


def test_slave_head_accepted_and_body_length_checked() -> None:
    head = slave_head(44, b"_150x150", b"png")
    parsed = S.parse_slave_head(head, body_length=S.SLAVE_FIXED + 44 + 3)
    assert (parsed.master_name_len, parsed.size, parsed.prefix, parsed.ext) == (
        44,
        3,
        "_150x150",
        "png",
    )
    with pytest.raises(ProtocolError):
        S.parse_slave_head(head, body_length=S.SLAVE_FIXED + 44 + 4)


def test_names_are_c_strings() -> None:
    body = pack_group("group1") + NAME.encode() + b"\0junk"
    assert S.parse_group_remote_body(body) == ("group1", NAME)
    download = pack_int(0) + pack_int(0) + body
    assert S.parse_download_body(download) == (0, 0, "group1", NAME)
    # The names of a download, still encoded, are a body of 12, 15 and 22 as they stand.
    ranged = pack_int(7) + pack_int(9) + body
    assert S.parse_download_range(ranged) == (7, 9, body)
    assert S.parse_group_remote_body(S.parse_download_range(ranged)[2]) == ("group1", NAME)


def test_download_name_length_is_not_bounded_by_the_codec() -> None:
    """Upstream looks a long name up (and fails there), it does not refuse the request."""
    long_name = "M00/00/00/" + "x" * 300
    body = pack_int(0) + pack_int(0) + pack_group("group1") + long_name.encode()
    assert S.parse_download_body(body)[3] == long_name


def test_set_metadata_round_trip() -> None:
    request = S.set_metadata_request("group1", NAME, {"w": "1", "a": "2"}, overwrite=True)
    parsed = S.parse_set_metadata_body(request.body)
    assert (parsed.group, parsed.remote_name, parsed.overwrite) == ("group1", NAME, True)
    assert parsed.meta == {"w": "1", "a": "2"}


def test_stored_metadata_is_sorted_and_cut() -> None:
    long_name, long_value = "n" * (MAX_META_NAME_LEN + 5), "v" * (MAX_META_VALUE_LEN + 5)
    raw = encode_stored_metadata({"b": "2", long_name: long_value, "a": ""})
    assert raw.startswith(b"a\x02\x01b\x022\x01")
    stored = decode_metadata(raw)
    assert stored["n" * MAX_META_NAME_LEN] == "v" * MAX_META_VALUE_LEN
    assert list(stored) == ["a", "b", "n" * MAX_META_NAME_LEN]


def test_stored_metadata_sorts_by_bytes() -> None:
    raw = encode_stored_metadata({"é": "1", "z": "2", "Z": "3"})
    assert [r.split(b"\x02")[0] for r in raw.split(b"\x01")] == [b"Z", b"z", "é".encode()]


def test_fixed_field_padding_matches_the_encoder() -> None:
    assert pack_fixed("txt", 6) == upload_head(b"txt")[9:]
