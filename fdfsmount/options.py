"""Mount options: SOURCE and `-o` lists (ours, FUSE's, mount(8)'s) parsed into `MountOptions`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

#: Options mount(8), fstab and systemd pass along that mean nothing to a FUSE
#: daemon (or that the kernel already applies to every FUSE mount).
IGNORED_OPTIONS = frozenset(
    {
        "_netdev",
        "nofail",
        "rw",
        "auto",
        "noauto",
        "user",
        "nouser",
        "users",
        "owner",
        "group",
        "defaults",
        "dev",
        "suid",
        "exec",
        "async",
        "sync",
        "nosuid",
        "nodev",
        "loud",
        "silent",
    }
)
IGNORED_PREFIXES = ("x-", "comment=", "fsname=", "subtype=")

#: Generic mount flags worth handing to FUSE unchanged.
FUSE_PASSTHROUGH = frozenset(
    {"noexec", "noatime", "atime", "nodiratime", "diratime", "relatime", "norelatime"}
)

_BOOL_OPTIONS = {
    "ro": "read_only",
    "allow_other": "allow_other",
    "default_permissions": "default_permissions",
    "nolist": "no_list",
    "debug": "debug",
    "verify_exists": "verify_exists",
    "trust_ids": "trust_ids",
    "sparse": "sparse",
}
_SIZE_OPTIONS = {
    "readahead": "readahead",
    "cache_size": "cache_size",
    "write_buffer": "write_buffer",
    "disk_cache_size": "disk_cache_size",
    "disk_cache_min_free": "disk_cache_min_free",
}
_DURATION_OPTIONS = {
    "attr_timeout": "attr_timeout",
    "entry_timeout": "entry_timeout",
    "list_ttl": "list_ttl",
    "exists_ttl": "exists_ttl",
    "timeout": "timeout",
    "write_idle": "write_idle",
}
_INT_OPTIONS = {"uid": "uid", "gid": "gid", "write_buffers": "write_buffers"}
_PATH_OPTIONS = {
    "conf": "conf",
    "logfile": "logfile",
    "log_file": "logfile",
    "cache_dir": "cache_dir",
    "disk_cache": "disk_cache",
}

_TRACKER_RE = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})"
)
_SIZE_RE = re.compile(r"(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[kKmMgG]?)(?:i?[bB])?")
_GROUP_RE = re.compile(r"[A-Za-z0-9_.-]{1,16}")  # FDFS_GROUP_NAME_MAX_LEN is 16
_DURATION_RE = re.compile(r"(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?")


class OptionError(ValueError):
    """A bad command line: the message is one line meant for the operator."""


@dataclass(frozen=True, slots=True)
class MountOptions:
    """Everything the mount needs to know, validated."""

    mountpoint: str = ""
    source: str = "fdfs"  # shown as the file system name in /proc/mounts
    trackers: tuple[str, ...] = ()  # "host:port"; empty when they come from `conf`
    conf: str | None = None
    foreground: bool = False
    read_only: bool = False
    allow_other: bool = False
    default_permissions: bool = False
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = 0o022
    attr_timeout: float = 10.0
    entry_timeout: float = 10.0
    readahead: int = 64 * MIB  # largest readahead window per open file
    cache_size: int = 256 * MIB  # shared block cache
    no_list: bool = False
    list_ttl: float = 60.0
    timeout: float = 30.0  # deadline of every file system operation
    debug: bool = False
    verify_exists: bool = False  # older spelling of the default (confirm existence); no effect
    trust_ids: bool = False  # a well-formed normal-file ID exists without asking (no round trip)
    exists_ttl: float = 10.0  # how long a confirmed file is trusted to still exist
    sparse: bool = False  # hide Mxx/HH directories the listing shows to be empty
    logfile: str | None = None
    cache_dir: str | None = None  # alias catalog; None: $XDG_CACHE_HOME or /var/cache
    write_buffer: int = 8 * MIB  # largest coalesced append/modify per file
    write_idle: float = 1.0  # buffered writes are sent after this long without a new one
    write_buffers: int = 16  # the whole mount buffers at most write_buffer x this many bytes
    metrics: tuple[str, int] | None = None  # (host, port) to serve Prometheus metrics on
    groups: tuple[str, ...] = ()  # mount only these groups; empty: every group
    disk_cache: str | None = None  # local disk cache of immutable files; None: off
    disk_cache_size: int = 1 * GIB  # its largest size
    disk_cache_min_free: int = 1 * GIB  # free space it always leaves on its file system
    fuse_extra: frozenset[str] = frozenset()

    @property
    def fuse_options(self) -> set[str]:
        """The option set for `pyfuse3.init`."""
        opts = {f"fsname={self.source}", "subtype=fdfsmount", *self.fuse_extra}
        if self.read_only:
            opts.add("ro")
        if self.allow_other:
            opts.add("allow_other")
        if self.default_permissions:
            opts.add("default_permissions")
        return opts

    @property
    def client_timeouts(self) -> tuple[float, float]:
        """(connect, network) timeouts for the client, so that one replica can
        time out and another still answer within the operation deadline."""
        return min(5.0, max(0.5, self.timeout / 4)), max(0.5, self.timeout * 0.4)


def human_size(n: float) -> str:
    """A byte count for people: ``1.5 MiB`` (the inverse, roughly, of `parse_size`)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_size(text: str, what: str) -> int:
    """``65536``, ``64K``, ``64M``, ``1G``, ``1GiB`` -> bytes (binary units)."""
    m = _SIZE_RE.fullmatch(text.strip())
    if not m:
        raise OptionError(f"{what}={text!r}: expected a size such as 512K, 64M or 1G")
    scale = {"": 1, "k": KIB, "m": MIB, "g": GIB}[m["unit"].lower()]
    return int(float(m["num"]) * scale)


def parse_duration(text: str, what: str) -> float:
    """``30``, ``1.5``, ``500ms``, ``2m``, ``1h`` -> seconds."""
    m = _DURATION_RE.fullmatch(text.strip())
    if not m:
        raise OptionError(f"{what}={text!r}: expected seconds such as 30, 1.5, 500ms or 2m")
    scale = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}[m["unit"]]
    return float(m["num"]) * scale


def parse_trackers(source: str) -> tuple[str, ...]:
    """``host:port[,host:port...]`` -> normalized "host:port" strings."""
    out: list[str] = []
    for part in source.split(","):
        part = part.strip()
        m = _TRACKER_RE.fullmatch(part)
        if not m or not 0 < int(m["port"]) < 65536:
            raise OptionError(
                f"bad SOURCE {source!r}: expected tracker host:port[,host:port...] "
                "(or -o conf=FILE to read trackers from a FastDFS client.conf)"
            )
        host = m["v6"] or m["host"]
        out.append(f"[{host}]:{int(m['port'])}" if m["v6"] else f"{host}:{int(m['port'])}")
    return tuple(out)


def parse_listen(text: str, what: str) -> tuple[str, int]:
    """``127.0.0.1:9108`` or ``[::1]:9108`` -> (host, port); the host is required."""
    m = _TRACKER_RE.fullmatch(text.strip())
    if not m or not 0 < int(m["port"]) < 65536:
        raise OptionError(f"{what}={text!r}: expected an address and port such as 127.0.0.1:9108")
    return (m["v6"] or m["host"], int(m["port"]))


def split_option_list(text: str) -> list[str]:
    """Split ``a,b=c,d`` (as `-o` takes it); empty items are dropped.

    ``groups=g1,g2,g3`` stays one item: the names after ``groups=`` that are
    not options themselves belong to it."""
    items: list[str] = []
    in_groups = False
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if in_groups and "=" not in item and not _is_option_word(item):
            items[-1] += f",{item}"
            continue
        in_groups = item.startswith("groups=")
        items.append(item)
    return items


def _is_option_word(item: str) -> bool:
    return (
        item in IGNORED_OPTIONS or item in FUSE_PASSTHROUGH or item in _BOOL_OPTIONS
        or item.startswith(IGNORED_PREFIXES)
    )  # fmt: skip


def parse_groups(text: str) -> tuple[str, ...]:
    """``group1,group2`` -> the group names, in order, without repeats."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if not _GROUP_RE.fullmatch(name):
            raise OptionError(f"groups: {name!r} is not a FastDFS group name")
    if not names:
        raise OptionError("option groups needs a value (groups=group1[,group2...])")
    return tuple(dict.fromkeys(names))


def apply_options(opts: MountOptions, items: Iterable[str]) -> MountOptions:
    """Fold `-o` items into `opts`; unknown options are an `OptionError`."""
    changes: dict[str, object] = {}
    extra = set(opts.fuse_extra)
    for item in items:
        name, has_value, value = item.partition("=")
        if name in IGNORED_OPTIONS or item.startswith(IGNORED_PREFIXES):
            continue
        if name in FUSE_PASSTHROUGH and not has_value:
            extra.add(name)
            continue
        if name in _BOOL_OPTIONS:
            if has_value:
                raise OptionError(f"option {name} takes no value")
            changes[_BOOL_OPTIONS[name]] = True
            continue
        if not has_value or not value:
            if name in (
                *_SIZE_OPTIONS, *_DURATION_OPTIONS, *_INT_OPTIONS, *_PATH_OPTIONS, "metrics",
                "groups",
            ):  # fmt: skip
                raise OptionError(f"option {name} needs a value ({name}=...)")
            raise OptionError(f"unknown mount option {item!r} (see fdfsmount --help)")
        if name in _SIZE_OPTIONS:
            changes[_SIZE_OPTIONS[name]] = parse_size(value, name)
        elif name in _DURATION_OPTIONS:
            changes[_DURATION_OPTIONS[name]] = parse_duration(value, name)
        elif name in _INT_OPTIONS:
            if not value.isdigit():
                raise OptionError(f"{name}={value!r}: expected a number")
            changes[_INT_OPTIONS[name]] = int(value)
        elif name == "umask":
            try:
                umask = int(value, 8)
            except ValueError:
                raise OptionError(f"umask={value!r}: expected an octal mask such as 022") from None
            if not 0 <= umask <= 0o777:
                raise OptionError(f"umask={value!r}: expected an octal mask such as 022")
            changes["umask"] = umask
        elif name in _PATH_OPTIONS:
            # The daemon changes to / before it opens the cache directory.
            absolute = name in ("cache_dir", "disk_cache")
            changes[_PATH_OPTIONS[name]] = os.path.abspath(value) if absolute else value
        elif name == "metrics":
            changes["metrics"] = parse_listen(value, name)
        elif name == "groups":
            changes["groups"] = parse_groups(value)
        else:
            raise OptionError(f"unknown mount option {item!r} (see fdfsmount --help)")
    result = replace(opts, fuse_extra=frozenset(extra), **changes)  # type: ignore[arg-type]
    _check(result)
    return result


def _check(opts: MountOptions) -> None:
    if opts.timeout <= 0:
        raise OptionError("timeout must be more than 0 seconds")
    if opts.readahead < 0 or opts.cache_size < 0:
        raise OptionError("readahead and cache_size cannot be negative")
    if opts.disk_cache is not None and opts.disk_cache_size < 1 * MIB:
        raise OptionError("disk_cache_size must be at least 1M")
    if opts.list_ttl <= 0:
        raise OptionError("list_ttl must be more than 0 seconds")
    if opts.exists_ttl < 0:
        raise OptionError("exists_ttl cannot be negative")
    if opts.trust_ids and opts.verify_exists:
        raise OptionError("trust_ids and verify_exists contradict each other: choose one")
    if not 4 * KIB <= opts.write_buffer <= 256 * MIB:
        raise OptionError("write_buffer must be between 4K and 256M")
    if not 1 <= opts.write_buffers <= 4096:
        raise OptionError("write_buffers must be between 1 and 4096")
    if opts.write_idle <= 0:
        raise OptionError("write_idle must be more than 0 seconds")


def build_options(
    source: str, mountpoint: str, option_lists: Iterable[str], *, foreground: bool = False
) -> MountOptions:
    """The whole command line (SOURCE, MOUNTPOINT, every `-o` value) -> `MountOptions`."""
    items = [item for text in option_lists for item in split_option_list(text)]
    opts = apply_options(MountOptions(mountpoint=mountpoint, foreground=foreground), items)
    if ":" in source or opts.conf is None:
        # A tracker list given next to conf= wins over the conf's tracker_server lines.
        opts = replace(opts, trackers=parse_trackers(source))
    if opts.conf is not None and not os.path.isfile(opts.conf):
        raise OptionError(f"conf={opts.conf}: no such file")
    # libfuse splits option values at commas unless escaped; fsname must be ASCII.
    fsname = source.encode("ascii", "replace").decode().replace("\\", "").replace(",", "\\,")
    return replace(opts, source=fsname or "fdfs")
