"""Group and storage stat records (tracker cmds 90, 91, 92), across server versions.

# Strategy
The records grew over releases, and the IP field follows the tracker's
``response_ip_addr_size`` (16 for IPv4, 46 with IPv6). A reply carries no
version, so the layout is chosen by record size:

=========  =========================  ==============================
layout      group record               storage record (ip 16 / 46)
=========  =========================  ==============================
6.13.1+     113 (reserved MB added)    487 / 517
6.13.0      105 (readable/writable)    479 / 509
<= 6.12     105 (http port, active)    614 / 644 (domain name, http port)
=========  =========================  ==============================

The two 105-byte group layouts cannot be told apart; we decode them as 6.13.0
(``readable`` then holds the old http port, ``writable`` the old active count).
All sizes are pairwise coprime enough that a list of up to 32 records is never
ambiguous; the newest layout wins when several fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .constants import (
    IPV4_ADDRESS_SIZE,
    IPV6_ADDRESS_SIZE,
    STORAGE_ID_LEN,
    VERSION_LEN,
    RwMode,
)
from .errors import ProtocolError
from .wire import FieldReader, pack_fixed, pack_int, pack_int32

GROUP_RECORD_SIZE = 113
GROUP_RECORD_SIZE_OLD = 105
_DOMAIN_NAME_LEN = 128


@dataclass(frozen=True, slots=True)
class GroupStat:
    """One group as the tracker reports it."""

    group_name: str
    total_mb: int
    free_mb: int
    reserved_mb: int = 0
    trunk_free_mb: int = 0
    storage_count: int = 0
    storage_port: int = 0
    readable_count: int = 0
    writable_count: int = 0
    current_write_server: int = 0
    store_path_count: int = 1
    subdir_count_per_path: int = 256
    current_trunk_file_id: int = -1

    def encode(self) -> bytes:
        return pack_fixed(self.group_name, 17, "group name") + b"".join(
            pack_int(v)
            for v in (
                self.total_mb,
                self.free_mb,
                self.reserved_mb,
                self.trunk_free_mb,
                self.storage_count,
                self.storage_port,
                self.readable_count,
                self.writable_count,
                self.current_write_server,
                self.store_path_count,
                self.subdir_count_per_path,
                self.current_trunk_file_id,
            )
        )

    @classmethod
    def decode(cls, record: bytes) -> GroupStat:
        r = FieldReader(record, "group record")
        name = r.text(17)
        if len(record) == GROUP_RECORD_SIZE:
            total, free, reserved, trunk = r.int64(), r.int64(), r.int64(), r.int64()
        elif len(record) == GROUP_RECORD_SIZE_OLD:
            total, free, reserved, trunk = r.int64(), r.int64(), 0, r.int64()
        else:
            raise ProtocolError(f"group record of unknown size {len(record)}")
        values = [r.int64() for _ in range(8)]
        r.end()
        return cls(name, total, free, reserved, trunk, *values)


#: Names of the 42 counters that follow the connection counts, in wire order.
STAT_COUNTER_NAMES: tuple[str, ...] = (
    *(
        f"{kind}_{op}_count"
        for op in (
            "upload",
            "append",
            "modify",
            "truncate",
            "set_meta",
            "delete",
            "download",
            "get_meta",
            "create_link",
            "delete_link",
        )
        for kind in ("total", "success")
    ),
    *(
        f"{kind}_{op}_bytes"
        for op in ("upload", "append", "modify", "download", "sync_in", "sync_out")
        for kind in ("total", "success")
    ),
    *(
        f"{kind}_file_{op}_count"
        for op in ("open", "read", "write")
        for kind in ("total", "success")
    ),
    "last_source_update",
    "last_sync_update",
    "last_synced_timestamp",
    "last_heart_beat_time",
)
assert len(STAT_COUNTER_NAMES) == 42


@dataclass(frozen=True, slots=True)
class StorageStat:
    """One storage server as the tracker reports it."""

    status: int
    storage_id: str
    ip_addr: str
    rw_mode: int = RwMode.READ_WRITE
    src_id: str = ""
    version: str = ""
    join_time: int = 0
    up_time: int = 0
    total_mb: int = 0
    free_mb: int = 0
    reserved_mb: int = 0
    upload_priority: int = 10
    store_path_count: int = 1
    subdir_count_per_path: int = 256
    current_write_path: int = 0
    storage_port: int = 0
    connections_alloc: int = 0
    connections_current: int = 0
    connections_max: int = 0
    counters: dict[str, int] = field(default_factory=dict, hash=False, compare=False)
    is_trunk_server: bool = False

    def encode(self, ip_size: int = IPV4_ADDRESS_SIZE) -> bytes:
        """The 6.13.1+ layout with an IP field of ``ip_size`` bytes."""
        parts = [
            bytes((self.status & 0xFF, self.rw_mode & 0xFF)),
            pack_fixed(self.storage_id, STORAGE_ID_LEN, "storage id"),
            pack_fixed(self.ip_addr, ip_size, "ip address"),
            pack_fixed(self.src_id, STORAGE_ID_LEN, "storage id"),
            pack_fixed(self.version, VERSION_LEN, "version"),
            *(
                pack_int(v)
                for v in (
                    self.join_time,
                    self.up_time,
                    self.total_mb,
                    self.free_mb,
                    self.reserved_mb,
                    self.upload_priority,
                    self.store_path_count,
                    self.subdir_count_per_path,
                    self.current_write_path,
                    self.storage_port,
                )
            ),
            pack_int32(self.connections_alloc),
            pack_int32(self.connections_current),
            pack_int32(self.connections_max),
            *(pack_int(self.counters.get(name, 0)) for name in STAT_COUNTER_NAMES),
            b"\x01" if self.is_trunk_server else b"\x00",
        ]
        return b"".join(parts)

    @classmethod
    def decode(cls, record: bytes) -> StorageStat:
        layout = _STORAGE_LAYOUTS.get(len(record))
        if layout is None:
            raise ProtocolError(f"storage record of unknown size {len(record)}")
        generation, ip_size = layout
        r = FieldReader(record, "storage record")
        status = r.byte()
        rw_mode = r.byte() if generation >= 2 else int(RwMode.READ_WRITE)
        storage_id = r.text(STORAGE_ID_LEN)
        ip_addr = r.text(ip_size)
        if generation == 1:
            r.take(_DOMAIN_NAME_LEN)
        src_id = r.text(STORAGE_ID_LEN)
        version = r.text(VERSION_LEN)
        join_time, up_time, total_mb, free_mb = r.int64(), r.int64(), r.int64(), r.int64()
        reserved_mb = r.int64() if generation == 3 else 0
        priority, path_count, subdirs, write_path, port = (r.int64() for _ in range(5))
        if generation == 1:
            r.int64()  # http port, gone since 6.13
        conn = (r.int32(), r.int32(), r.int32())
        counters = {name: r.int64() for name in STAT_COUNTER_NAMES}
        trunk = r.byte() != 0
        r.end()
        return cls(
            status, storage_id, ip_addr, rw_mode, src_id, version, join_time, up_time,
            total_mb, free_mb, reserved_mb, priority, path_count, subdirs, write_path,
            port, *conn, counters, trunk,
        )  # fmt: skip


def _storage_record_size(generation: int, ip_size: int) -> int:
    fixed = 1 + STORAGE_ID_LEN + ip_size + STORAGE_ID_LEN + VERSION_LEN + 12 + 42 * 8 + 1
    if generation == 1:
        return fixed + _DOMAIN_NAME_LEN + 10 * 8
    return fixed + 1 + (9 if generation == 2 else 10) * 8


#: record size -> (generation, ip size); generation 3 = 6.13.1+, 2 = 6.13.0, 1 = older.
_STORAGE_LAYOUTS: dict[int, tuple[int, int]] = {
    _storage_record_size(gen, ip): (gen, ip)
    for gen in (3, 2, 1)
    for ip in (IPV4_ADDRESS_SIZE, IPV6_ADDRESS_SIZE)
}
STORAGE_RECORD_SIZE = _storage_record_size(3, IPV4_ADDRESS_SIZE)
assert STORAGE_RECORD_SIZE == 487


def _split_records(body: bytes, sizes: list[int], what: str) -> list[bytes]:
    if not body:
        return []
    for size in sizes:
        if len(body) % size == 0:
            return [body[i : i + size] for i in range(0, len(body), size)]
    raise ProtocolError(f"{what} reply of {len(body)} bytes fits no known record size")


def decode_group_list(body: bytes) -> list[GroupStat]:
    records = _split_records(body, [GROUP_RECORD_SIZE, GROUP_RECORD_SIZE_OLD], "group list")
    return [GroupStat.decode(rec) for rec in records]


def decode_storage_list(body: bytes) -> list[StorageStat]:
    records = _split_records(body, list(_STORAGE_LAYOUTS), "storage list")
    return [StorageStat.decode(rec) for rec in records]


def counter_fields() -> list[str]:
    """Field names of `StorageStat` (for table output)."""
    return [f.name for f in fields(StorageStat) if f.name != "counters"]
