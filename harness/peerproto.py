"""The builtin servers' own server-to-server messages: see `fdfsmount.proto.peer`."""

from __future__ import annotations

from fdfsmount.proto.peer import (
    MAX_JSON_BODY,
    SYNC_BATCH,
    PeerAddr,
    PeerCmd,
    decode_json,
    decode_peer_list,
    encode_json,
    encode_sync_fetch,
    parse_sync_fetch,
)

__all__ = [
    "MAX_JSON_BODY",
    "SYNC_BATCH",
    "PeerAddr",
    "PeerCmd",
    "decode_json",
    "decode_peer_list",
    "encode_json",
    "encode_sync_fetch",
    "parse_sync_fetch",
]
