"""FastDFS wire protocol: a pure codec plus a thin trio client.

The codec modules (`wire`, `tracker`, `storage`, `records`, `metadata`,
`binlog`, `fileid`, `frames`) do no I/O and import nothing from trio.
"""

from .constants import Cmd, StorageStatus
from .errors import (
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    FdfsError,
    FileExists,
    FileNotFound,
    InvalidFileId,
    LocalProtocolError,
    NoStorage,
    ProtocolError,
    ServerError,
    Timeout,
)
from .fileid import FileId, FileIdInfo, FileType, decode_file_id, parse_file_id
from .message import Request, ServerAddr
from .records import GroupStat, StorageStat

__all__ = [
    "Cmd",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "FdfsError",
    "FileExists",
    "FileId",
    "FileIdInfo",
    "FileNotFound",
    "FileType",
    "GroupStat",
    "InvalidFileId",
    "LocalProtocolError",
    "NoStorage",
    "ProtocolError",
    "Request",
    "ServerAddr",
    "ServerError",
    "StorageStat",
    "StorageStatus",
    "Timeout",
    "decode_file_id",
    "parse_file_id",
]
