"""Server-to-server messages of the builtin (harness) servers: pure codec.

Not part of the FastDFS client protocol and never sent by the client; they
live beside it so that the builtin servers decode every message they get
with `fdfsmount.proto`. They reuse the FastDFS header framing and upstream's command numbers for the
same purposes, with bodies of our own: JSON objects for control messages,
fixed fields plus raw bytes for file content.

===  ===================  ===================================================
cmd  name                 body
===  ===================  ===================================================
81   STORAGE_JOIN         JSON: group, id, ip, port, store paths, subdirs, ...
83   STORAGE_BEAT         JSON: disk usage, counters, per-peer sync progress
16   SYNC_PULL            JSON: offset, generation, wait; reply JSON records
17   SYNC_FETCH           offset 8, length 8 (-1 = to the end), remote name;
                          reply: current file size 8, then the bytes
===  ===================  ===================================================

Replies to 81/83 are JSON with the storages of the joining storage's group
(``{"storages": [{"id", "ip", "port", "status"}, ...]}``), which is how a
storage learns its replication peers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .errors import ProtocolError
from .wire import FieldReader, pack_int


class PeerCmd(IntEnum):
    STORAGE_JOIN = 81
    STORAGE_BEAT = 83
    SYNC_PULL = 16
    SYNC_FETCH = 17


#: Bodies of control messages are small; anything larger is refused.
MAX_JSON_BODY = 1 << 20
#: Records per SYNC_PULL reply.
SYNC_BATCH = 256


def encode_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def decode_json(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(body.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"{what}: body is not JSON") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what}: body is not a JSON object")
    return obj


@dataclass(frozen=True, slots=True)
class PeerAddr:
    """A storage of the same group, as the tracker lists it."""

    storage_id: str
    ip: str
    port: int
    status: int

    @classmethod
    def from_json(cls, obj: Any) -> PeerAddr:
        try:
            return cls(str(obj["id"]), str(obj["ip"]), int(obj["port"]), int(obj["status"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"bad storage entry {obj!r}") from exc

    def to_json(self) -> dict[str, Any]:
        return {"id": self.storage_id, "ip": self.ip, "port": self.port, "status": self.status}


def decode_peer_list(obj: dict[str, Any]) -> list[PeerAddr]:
    entries = obj.get("storages")
    if not isinstance(entries, list):
        raise ProtocolError("reply has no storage list")
    return [PeerAddr.from_json(e) for e in entries]


def encode_sync_fetch(remote_name: str, offset: int = 0, length: int = -1) -> bytes:
    return pack_int(offset) + pack_int(length) + remote_name.encode()


def parse_sync_fetch(body: bytes) -> tuple[int, int, str]:
    r = FieldReader(body, "sync fetch request")
    offset, length = r.int64(), r.int64()
    name = r.rest_text()
    if offset < 0 or not name:
        raise ProtocolError("sync fetch request: bad offset or empty name")
    return offset, length, name
