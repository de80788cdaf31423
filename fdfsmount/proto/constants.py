"""Command codes, field sizes and flags of the FastDFS wire protocol (6.x)."""

from __future__ import annotations

from enum import IntEnum


class Cmd(IntEnum):
    """Command byte of a request header (replies always carry RESP)."""

    RESP = 100
    QUIT = 82
    ACTIVE_TEST = 111
    # tracker, client-facing
    SERVER_LIST_ONE_GROUP = 90
    SERVER_LIST_ALL_GROUPS = 91
    SERVER_LIST_STORAGE = 92
    QUERY_STORE_WITHOUT_GROUP_ONE = 101
    QUERY_FETCH_ONE = 102
    QUERY_UPDATE = 103
    QUERY_STORE_WITH_GROUP_ONE = 104
    QUERY_FETCH_ALL = 105
    QUERY_STORE_WITHOUT_GROUP_ALL = 106
    QUERY_STORE_WITH_GROUP_ALL = 107
    # storage, client-facing
    UPLOAD_FILE = 11
    DELETE_FILE = 12
    SET_METADATA = 13
    DOWNLOAD_FILE = 14
    GET_METADATA = 15
    UPLOAD_SLAVE_FILE = 21
    QUERY_FILE_INFO = 22
    UPLOAD_APPENDER_FILE = 23
    APPEND_FILE = 24
    FETCH_ONE_PATH_BINLOG = 26
    MODIFY_FILE = 34
    TRUNCATE_FILE = 36
    REGENERATE_APPENDER_FILENAME = 38


HEADER_SIZE = 10
GROUP_NAME_LEN = 16
EXT_NAME_LEN = 6
PREFIX_LEN = 16
STORAGE_ID_LEN = 16
VERSION_LEN = 8
IPV4_ADDRESS_SIZE = 16
IPV6_ADDRESS_SIZE = 46
MAX_META_NAME_LEN = 64
MAX_META_VALUE_LEN = 256

#: Store path index byte meaning "let the storage choose".
STORE_PATH_ANY = 0xFF

#: Length field of the FETCH_ONE_PATH_BINLOG reply header: not a real length.
BINLOG_STREAM_LENGTH = 1 << 58

# QUERY_FILE_INFO flags, sent in the request header's status byte.
QUERY_FINFO_NO_CRC32 = 1
QUERY_FINFO_KEEP_SILENCE = 2

# SET_METADATA flags.
META_OVERWRITE = ord("O")
META_MERGE = ord("M")

META_RECORD_SEP = b"\x01"
META_FIELD_SEP = b"\x02"


class StorageStatus(IntEnum):
    """Status byte of a storage record (tracker's view of a storage server)."""

    INIT = 0
    WAIT_SYNC = 1
    SYNCING = 2
    IP_CHANGED = 3
    DELETED = 4
    OFFLINE = 5
    ONLINE = 6
    ACTIVE = 7
    RECOVERY = 9
    NONE = 99


class RwMode(IntEnum):
    """Read/write mode of a storage server (since 6.13)."""

    NONE = 0
    READ = 4  # R_OK
    WRITE = 2  # W_OK
    READ_WRITE = 6
