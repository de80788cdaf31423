"""Tracker commands: request encoders, reply decoders, and their inverses.

Clients use ``*_request`` and ``decode_*``; the harness tracker uses
``parse_*`` (request bodies) and ``encode_*`` (reply bodies). Both sides share
these layouts, so they cannot drift apart.

In replies to the query commands (101-107) each IP field is one byte shorter
than the tracker's IP address size: 15 bytes for IPv4, 45 when the tracker's
``response_ip_addr_size`` asks for IPv6-sized fields.
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

from .constants import GROUP_NAME_LEN, IPV4_ADDRESS_SIZE, IPV6_ADDRESS_SIZE, STORAGE_ID_LEN, Cmd
from .errors import LocalProtocolError, ProtocolError
from .fileid import MAX_REMOTE_NAME_LEN
from .message import Request, ServerAddr
from .records import GroupStat, StorageStat, decode_group_list, decode_storage_list
from .wire import (
    FieldReader,
    decode_text,
    encode_text,
    pack_group,
    validate_group_name,
)

_PORT_LEN = 8
#: A server in a fetch or store reply (IP field, port), by IP field size.
_SERVER_RECORD = {
    size: struct.Struct(f">{size - 1}sq") for size in (IPV4_ADDRESS_SIZE, IPV6_ADDRESS_SIZE)
}
#: QUERY_FETCH bodies shorter than group + this many name chars are refused (EINVAL).
MIN_REMOTE_NAME_LEN = 22
_QUERY_IP_SIZES = (IPV4_ADDRESS_SIZE - 1, IPV6_ADDRESS_SIZE - 1)
#: The tracker keeps a listed storage id in a 16-byte C buffer with its NUL.
MAX_STORAGE_ID_LEN = STORAGE_ID_LEN - 1

#: Commands a tracker serves to clients; anything else is answered with EINVAL.
TRACKER_CLIENT_CMDS = frozenset(
    {
        Cmd.SERVER_LIST_ONE_GROUP,
        Cmd.SERVER_LIST_ALL_GROUPS,
        Cmd.SERVER_LIST_STORAGE,
        Cmd.QUERY_STORE_WITHOUT_GROUP_ONE,
        Cmd.QUERY_FETCH_ONE,
        Cmd.QUERY_UPDATE,
        Cmd.QUERY_STORE_WITH_GROUP_ONE,
        Cmd.QUERY_FETCH_ALL,
        Cmd.QUERY_STORE_WITHOUT_GROUP_ALL,
        Cmd.QUERY_STORE_WITH_GROUP_ALL,
        Cmd.ACTIVE_TEST,
        Cmd.QUIT,
    }
)


class StoreTarget(NamedTuple):
    """Where to upload: storage servers of one group and the store path index."""

    group: str
    servers: tuple[ServerAddr, ...]
    store_path_index: int


class FetchTarget(NamedTuple):
    """Storage servers able to serve (or update) one file."""

    group: str
    servers: tuple[ServerAddr, ...]


# ---------------------------------------------------------------- requests


def query_store_request(group: str | None = None, *, all_servers: bool = False) -> Request:
    if group is None:
        if all_servers:
            return Request(Cmd.QUERY_STORE_WITHOUT_GROUP_ALL)
        return Request(Cmd.QUERY_STORE_WITHOUT_GROUP_ONE)
    cmd = Cmd.QUERY_STORE_WITH_GROUP_ALL if all_servers else Cmd.QUERY_STORE_WITH_GROUP_ONE
    return Request(cmd, pack_group(group))


def query_fetch_request(cmd: int, group: str, remote_name: str) -> Request:
    """QUERY_FETCH_ONE (102), QUERY_UPDATE (103) or QUERY_FETCH_ALL (105)."""
    if cmd not in (Cmd.QUERY_FETCH_ONE, Cmd.QUERY_UPDATE, Cmd.QUERY_FETCH_ALL):
        raise LocalProtocolError(f"cmd {cmd} is not a fetch query")
    name = encode_text(remote_name, "remote file name")
    if not MIN_REMOTE_NAME_LEN <= len(name) <= MAX_REMOTE_NAME_LEN:
        # The tracker answers EINVAL to names under 22 bytes.
        raise LocalProtocolError(f"bad remote file name {remote_name!r}")
    return Request(cmd, pack_group(group) + name)


def list_groups_request() -> Request:
    return Request(Cmd.SERVER_LIST_ALL_GROUPS)


def list_one_group_request(group: str) -> Request:
    return Request(Cmd.SERVER_LIST_ONE_GROUP, pack_group(group))


def list_storages_request(group: str, storage_id: str | None = None) -> Request:
    body = pack_group(group)
    if storage_id:
        raw = encode_text(storage_id, "storage id")
        if len(raw) > MAX_STORAGE_ID_LEN or b"\0" in raw:
            raise LocalProtocolError(f"bad storage id {storage_id!r}")
        body += raw
    return Request(Cmd.SERVER_LIST_STORAGE, body)


def active_test_request() -> Request:
    return Request(Cmd.ACTIVE_TEST)


def quit_request() -> Request:
    return Request(Cmd.QUIT)


# ----------------------------------------------------------------- replies


def _split_servers(r: FieldReader, count_bytes: int, trailer: int, what: str) -> int:
    """Pick the IP field size that makes the server list fit exactly."""
    for ip_size in _QUERY_IP_SIZES:
        if count_bytes % (ip_size + _PORT_LEN) == 0 and count_bytes > 0:
            return ip_size
    raise ProtocolError(f"{what}: {count_bytes + trailer} body bytes fit no server list")


def _reply_group(r: FieldReader, what: str) -> str:
    """The group field of a reply; no tracker can have a group that fails validation."""
    group = r.text(GROUP_NAME_LEN)
    try:
        validate_group_name(group)
    except LocalProtocolError as exc:
        raise ProtocolError(f"{what}: invalid group name {group!r}") from exc
    return group


def decode_store_reply(body: bytes) -> StoreTarget:
    """Reply to 101/104 (one server) or 106/107 (all servers)."""
    r = FieldReader(body, "query store reply")
    group = _reply_group(r, "query store reply")
    ip_size = _split_servers(r, r.remaining - 1, 1, "query store reply")
    servers = []
    while r.remaining > 1:
        servers.append(ServerAddr(r.text(ip_size), r.int64()))
    index = r.byte()
    r.end()
    _check_servers(servers, "query store reply")
    return StoreTarget(group, tuple(servers), index)


def decode_fetch_reply(body: bytes) -> FetchTarget:
    """Reply to 102/103 (one server) or 105 (all servers holding the file)."""
    r = FieldReader(body, "query fetch reply")
    group = _reply_group(r, "query fetch reply")
    ip_size = _split_servers(r, r.remaining, 0, "query fetch reply")
    servers = []
    while r.remaining:
        servers.append(ServerAddr(r.text(ip_size), r.int64()))
    _check_servers(servers, "query fetch reply")
    return FetchTarget(group, tuple(servers))


def _check_servers(servers: list[ServerAddr], what: str) -> None:
    for s in servers:
        if not s.host or not 0 < s.port < 65536:
            raise ProtocolError(f"{what}: bad server address {s.host!r}:{s.port}")


def decode_groups_reply(body: bytes) -> list[GroupStat]:
    return decode_group_list(body)


def decode_one_group_reply(body: bytes) -> GroupStat:
    groups = decode_group_list(body)
    if len(groups) != 1:
        raise ProtocolError(f"expected one group record, got {len(groups)}")
    return groups[0]


def decode_storages_reply(body: bytes) -> list[StorageStat]:
    return decode_storage_list(body)


# ------------------------------------------------- server side (harness)


def encode_store_reply(target: StoreTarget, ip_size: int = IPV4_ADDRESS_SIZE) -> bytes:
    return (
        pack_group(target.group)
        + _encode_servers(target.servers, ip_size)
        + bytes((target.store_path_index & 0xFF,))
    )


@functools.lru_cache(maxsize=1024)
def encode_fetch_reply(target: FetchTarget, ip_size: int = IPV4_ADDRESS_SIZE) -> bytes:
    """Remembered: a tracker names the same few servers in most of its replies."""
    return pack_group(target.group) + _encode_servers(target.servers, ip_size)


def _encode_servers(servers: tuple[ServerAddr, ...], ip_size: int) -> bytes:
    # One pack per server: the tracker answers a fetch or store query with every request.
    parts = []
    for server in servers:
        host = encode_text(server.host, "ip address")
        if len(host) >= ip_size:
            raise LocalProtocolError(f"ip address {host!r} longer than {ip_size - 1} bytes")
        layout = _SERVER_RECORD.get(ip_size) or struct.Struct(f">{ip_size - 1}sq")
        try:
            parts.append(layout.pack(host, server.port))
        except struct.error as exc:
            raise LocalProtocolError(f"port of {server} does not fit 8 bytes") from exc
    return b"".join(parts)


def encode_groups_reply(groups: list[GroupStat]) -> bytes:
    return b"".join(g.encode() for g in groups)


def encode_storages_reply(storages: list[StorageStat], ip_size: int = IPV4_ADDRESS_SIZE) -> bytes:
    return b"".join(s.encode(ip_size) for s in storages)


def parse_group_body(body: bytes) -> str:
    """Body of 90/104/107: exactly a 16-byte group field."""
    if len(body) != GROUP_NAME_LEN:
        raise ProtocolError(f"expected a {GROUP_NAME_LEN}-byte group field, got {len(body)}")
    return decode_text(body)


def parse_fetch_body(body: bytes) -> tuple[str, str]:
    """Body of 102/103/105: group + remote name (22 to 127 chars)."""
    if not MIN_REMOTE_NAME_LEN <= len(body) - GROUP_NAME_LEN <= MAX_REMOTE_NAME_LEN:
        raise ProtocolError(f"query fetch body of {len(body)} bytes")
    return decode_text(body[:GROUP_NAME_LEN]), body[GROUP_NAME_LEN:].decode(
        "utf-8", "surrogateescape"
    )


def parse_list_storage_body(body: bytes) -> tuple[str, str | None]:
    """Body of 92: group, then optionally an unpadded storage id (up to 15 bytes)."""
    if not GROUP_NAME_LEN <= len(body) <= GROUP_NAME_LEN + MAX_STORAGE_ID_LEN:
        raise ProtocolError(f"list storage body of {len(body)} bytes")
    r = FieldReader(body, "list storage request")
    group = r.text(GROUP_NAME_LEN)
    storage_id = decode_text(r.rest()) or None
    return group, storage_id


def parse_tracker_cmd(cmd: int) -> Cmd:
    """The command of a request to a tracker; `ProtocolError` if it serves no such command."""
    if cmd not in TRACKER_CLIENT_CMDS:
        raise ProtocolError(f"tracker command {cmd} unknown")
    return Cmd(cmd)
