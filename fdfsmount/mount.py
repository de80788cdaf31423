"""Mount lifecycle: check, wire client + caches + `Operations`, serve, unmount cleanly on signals.

`serve` owns everything a mount runs: the protocol client, one nursery for
background work (readahead, listing refresh, write-back) and the
pyfuse3 session. It returns after the file system is unmounted, whether by
``fusermount3 -u``, SIGTERM/SIGINT, or an error.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import pyfuse3
import trio

from .attrs import AttrFactory, FileStat, FileStats
from .blockcache import BlockCache
from .catalog import AliasCatalog, cluster_key, default_cache_dir
from .clientapi import ReadClient, WriteClient
from .diskcache import DiskCache
from .fs import Operations
from .listing import Listing
from .logsetup import reopen_log_files
from .namespace import GroupDirectory, InodeTable, Node
from .options import MountOptions
from .proto import FileId, GroupStat, decode_file_id
from .proto.errors import FdfsError
from .proto.replicas import decoded_file_id
from .proto.storage import FileInfo
from .readpath import ReadPath
from .sdnotify import notify
from .writepath import WritePath
from .xattrs import Xattrs

log = logging.getLogger(__name__)

#: Requests served at once (pyfuse3 worker tasks; each holds a request buffer).
FUSE_WORKERS = 99

FIRST_LIST_WAIT = 10.0  # the first listing of a group is waited for at most this long
FLUSH_ON_EXIT = 30.0  # how long pending writes may take to flush on unmount
KERNEL_READAHEAD = 4 * 1024 * 1024  # kernel readahead window on the mount (set as root)


class MountError(Exception):
    """The mount cannot start; the message is one line for the operator."""


@dataclass(slots=True)
class MountParts:
    """The wired pieces of a mount (tests use them directly)."""

    ops: Operations
    table: InodeTable
    groups: GroupDirectory
    listing: Listing
    readpath: ReadPath
    cache: BlockCache
    writer: WritePath
    client: ReadClient
    kernel_readahead: KernelReadahead
    disk_cache: DiskCache | None = None

    async def refresh(self, group: str | None = None) -> str:
        """Ask the tracker for the groups and list `group` (default: every group) again now;
        one line saying what was found. `MountError` for a group that is not mounted."""
        groups = await self.groups.all(max_age=0)
        if group is not None and group not in groups:
            raise MountError(
                f"no group {group} in this mount (it has {', '.join(sorted(groups)) or 'none'})"
            )
        names = [group] if group is not None else sorted(groups)
        if not self.listing.enabled:
            return f"groups refreshed ({len(groups)}); listing is off (nolist)"
        found = await self.listing.refresh(names)
        shown = ", ".join(
            f"{name} {n} files" if isinstance(n, int) else f"{name} failed: {n}"
            for name, n in found.items()
        )
        log.info("listing refreshed: %s", shown or "no groups")
        return f"refreshed {shown or 'no groups'}"

    def drop_caches(self) -> str:
        """Forget cached blocks, file attributes and metadata (not unsent writes)."""
        blocks, size = len(self.cache), self.cache.size
        self.cache.clear()
        infos = self.ops.stats.clear()
        metadata = self.ops.xattrs.clear()
        log.info("caches dropped: %d blocks (%d bytes), %d file infos, %d metadata",
                 blocks, size, infos, metadata)  # fmt: skip
        return (
            f"dropped {blocks} cached blocks ({size} bytes), {infos} file attributes, "
            f"{metadata} metadata entries"
        )

    def counters(self) -> dict[str, int]:
        """Live counters of the mount (for status reports and metrics exporters)."""
        out: dict[str, int] = {
            "inodes": len(self.table),
            "inodes_in_memory": self.table.resident,
            "open_files": self.ops.open_files,
            "readahead_window": self.ops.readahead_window,
            "pending_write_files": self.writer.pending_files(),
            "fuse_requests": sum(self.ops.op_stats.requests.values()),
            "fuse_errors": sum(sum(e.values()) for e in self.ops.op_stats.errors.values()),
            "fuse_bytes_read": self.ops.op_stats.bytes_read,
            "fuse_bytes_written": self.ops.op_stats.bytes_written,
            "cache_bytes": self.cache.size,
            "cache_blocks": len(self.cache),
            "page_cache_stores": self.ops.kernel.stored,
        }
        out.update({f"cache_{k}": v for k, v in asdict(self.cache.stats).items()})
        out.update({f"read_{k}": v for k, v in asdict(self.readpath.stats).items()})
        out.update(self.writer.counters())
        out.update(self.listing.counters())
        if self.disk_cache is not None:
            out.update(self.disk_cache.counters())
        stats = getattr(self.client, "stats", None)
        if stats is not None:
            out["client_requests"] = sum(stats.requests.values())
            out["client_errors"] = sum(stats.errors.values())
            out["client_bytes_sent"] = stats.bytes_sent
            out["client_bytes_received"] = stats.bytes_received
        return out


def build_operations(
    opts: MountOptions,
    client: ReadClient,
    nursery: trio.Nursery,
    *,
    groups: list[GroupStat] | None = None,
) -> MountParts:
    """Wire the caches and the `Operations` around `client`; background work goes to `nursery`."""
    directory = GroupDirectory(_listed_groups(client, opts.groups), nursery=nursery)
    if groups is not None:
        directory.seed(g for g in groups if not opts.groups or g.group_name in opts.groups)
    table = InodeTable(directory)

    async def confirm(fid: FileId) -> FileInfo:
        # A small file is downloaded whole instead: that answers the read to come too.
        ident = decoded_file_id(fid)
        if await readpath.fetch_to_confirm(fid, ident):
            assert ident.size is not None
            return FileInfo(ident.size, ident.create_time, 0, ident.source_ip or "")
        return await client.info(fid, calc_crc32=False)

    stats = FileStats(
        lambda fid: client.info(fid),
        confirm=confirm,
        trust_ids=opts.trust_ids,
        exists_ttl=opts.exists_ttl,
    )
    attrs = AttrFactory(
        uid=opts.uid,
        gid=opts.gid,
        umask=opts.umask,
        attr_timeout=opts.attr_timeout,
        entry_timeout=opts.entry_timeout,
    )
    listing = Listing(
        client,
        enabled=not opts.no_list,
        ttl=opts.list_ttl,
        first_wait=min(FIRST_LIST_WAIT, opts.timeout * 0.8),
        nursery=nursery,
        index_dir=listing_index_dir(opts, client),
    )
    cache = BlockCache(opts.cache_size)
    kernel_readahead = KernelReadahead(opts)
    disk_cache = open_disk_cache(opts, client, nursery)
    readpath = ReadPath(
        client,
        cache,
        readahead=opts.readahead,
        timeout=opts.timeout,
        nursery=nursery,
        # One owner of "which servers failed lately": the client's.
        health=getattr(client, "health", None),
        replicas=getattr(client, "replicas", None),
        before_first_open=kernel_readahead.apply,
        disk_cache=disk_cache,
    )
    # The write side needs the whole client; read-only fakes in tests never write.
    write_client = cast(WriteClient, client)

    async def file_stat(node: Node) -> FileStat:
        return writer.local_stat(node) or await stats.get(node)

    async def set_metadata(fid: FileId, meta: Mapping[str, str], overwrite: bool) -> None:
        await write_client.set_metadata(fid, meta, overwrite=overwrite)

    async def source_metadata(fid: FileId) -> dict[str, str]:
        servers = await readpath.replicas.servers_for(fid, decode_file_id(fid))
        return await write_client.get_metadata(fid, servers=servers or None)

    xattrs = Xattrs(
        client.get_metadata,
        file_stat,
        set_metadata=set_metadata,
        source_metadata=source_metadata,
    )
    trackers = getattr(client, "trackers", None) or opts.trackers or [opts.source]

    writer = WritePath(
        write_client,
        table=table,
        listing=listing,
        stats=stats,
        xattrs=xattrs,
        catalog=AliasCatalog.for_cluster(opts.cache_dir, trackers),
        forget_blocks=readpath.invalidate,
        flush_size=opts.write_buffer,
        idle=opts.write_idle,
        buffers=opts.write_buffers,
        retry_for=opts.timeout,
    )
    ops = Operations(
        opts,
        table=table,
        groups=directory,
        stats=stats,
        attrs=attrs,
        listing=listing,
        readpath=readpath,
        xattrs=xattrs,
        writer=writer,
    )
    return MountParts(
        ops, table, directory, listing, readpath, cache, writer, client, kernel_readahead,
        disk_cache,
    )  # fmt: skip


def open_disk_cache(
    opts: MountOptions, client: ReadClient, nursery: trio.Nursery
) -> DiskCache | None:
    """The local disk cache of ``-o disk_cache=DIR`` (one subdirectory per cluster)."""
    if opts.disk_cache is None:
        return None
    trackers = getattr(client, "trackers", None) or opts.trackers or [opts.source]

    async def slave_crc32(fid: FileId) -> int:
        return (await client.info(fid)).crc32

    directory = Path(opts.disk_cache) / cluster_key(trackers)
    try:
        return DiskCache(
            directory,
            capacity=opts.disk_cache_size,
            min_free=opts.disk_cache_min_free,
            crc_of=slave_crc32,
            nursery=nursery,
        )
    except (OSError, sqlite3.Error) as exc:
        raise MountError(f"disk_cache={opts.disk_cache}: cannot use it: {exc}") from None


def listing_index_dir(opts: MountOptions, client: ReadClient) -> Path:
    """Where the listing indexes of this cluster live: ``<cache_dir>/index-<cluster>/``."""
    trackers = getattr(client, "trackers", None) or opts.trackers or [opts.source]
    base = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()
    return base / f"index-{cluster_key(trackers)}"


def _listed_groups(
    client: ReadClient, only: tuple[str, ...]
) -> Callable[[], Awaitable[list[GroupStat]]]:
    """The tracker's group list, cut down to `only` (``-o groups=``) when given."""
    if not only:
        return client.list_groups

    async def list_some() -> list[GroupStat]:
        return [g for g in await client.list_groups() if g.group_name in only]

    return list_some


def check_mountpoint(path: str) -> None:
    """Refuse a missing, non-directory, stale or already mounted mountpoint."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(
                f"mountpoint {path} is a dead FUSE mount; clear it with: fusermount3 -u {path}"
            ) from None
        raise MountError(f"mountpoint {path}: {exc.strerror}") from None
    if not os.path.isdir(path):
        raise MountError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path) or _in_proc_mounts(path):
        raise MountError(f"mountpoint {path} is busy: something is already mounted there")
    del st


def _in_proc_mounts(path: str) -> bool:
    target = os.path.realpath(path)
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 1 and _unescape(fields[1]) == target:
                    return True
    except OSError:
        pass
    return False


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")


def client_timeouts(opts: MountOptions) -> tuple[float, float]:
    """Connect and network timeouts: the conf's, capped so a replica can fail over in time."""
    connect, network = opts.client_timeouts
    if opts.conf is not None:
        from .proto.clientconf import read_client_conf

        try:
            conf = read_client_conf(opts.conf)
        except (OSError, ValueError) as exc:
            raise MountError(f"conf={opts.conf}: {exc}") from None
        connect = min(connect, conf.connect_timeout or connect)
        network = min(network, conf.network_timeout or network)
    return connect, network


@asynccontextmanager
async def open_client(opts: MountOptions) -> AsyncIterator[ReadClient]:
    """The protocol client for `opts` (trackers from SOURCE, else from the conf file)."""
    from .proto.client import Client

    connect, network = client_timeouts(opts)
    try:
        if opts.trackers:
            client = Client(
                list(opts.trackers),
                connect_timeout=connect,
                network_timeout=network,
                replica_directory=True,
            )
        else:
            assert opts.conf is not None
            client = Client.from_conf(
                opts.conf,
                connect_timeout=connect,
                network_timeout=network,
                replica_directory=True,
            )
    except (OSError, ValueError) as exc:
        raise MountError(f"cannot use the tracker list: {exc}") from None
    async with client:
        yield client


async def check_cluster(client: ReadClient, opts: MountOptions) -> list[GroupStat]:
    """List the groups once, within the timeout: proof that the cluster answers."""
    where = ",".join(opts.trackers) or f"the trackers of {opts.conf}"
    try:
        with trio.fail_after(opts.timeout):
            groups = await client.list_groups()
    except trio.TooSlowError:
        raise MountError(
            f"FastDFS cluster at {where} did not answer within {opts.timeout:g}s"
        ) from None
    except FdfsError as exc:
        raise MountError(f"cannot reach the FastDFS cluster at {where}: {exc}") from None
    if not groups:
        log.warning("the tracker at %s knows no groups yet; the mount starts empty", where)
    missing = [name for name in opts.groups if name not in {g.group_name for g in groups}]
    if missing and groups:
        log.warning("groups=: the cluster at %s has no group %s (yet); it has %s",
                    where, ", ".join(missing), ", ".join(g.group_name for g in groups))  # fmt: skip
    return groups


def mount_device(mountpoint: str) -> str | None:
    """``major:minor`` of the file system mounted at `mountpoint`, from /proc/self/mountinfo.

    (Not from stat: a stat of the mountpoint would wait for the FUSE loop, which
    is not running yet.)"""
    # realpath() of the mountpoint itself would stat it: resolve only its parent.
    head, tail = os.path.split(os.path.abspath(mountpoint))
    target = os.path.join(os.path.realpath(head), tail)
    device = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mountinfo:
            for line in mountinfo:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == target:
                    device = fields[2]  # the last one listed is the one on top
    except OSError:
        return None
    return device


class KernelReadahead:
    """Lets the kernel read ahead up to `KERNEL_READAHEAD` on this mount (needs root).

    By default the kernel reads a FUSE file 128 KiB ahead in 256 KiB requests;
    with a 4 MiB window it sends 1 MiB requests, several at a time, and
    sequential reads through the mount get about a third faster. The kernel
    sets the window itself from the reply to FUSE_INIT (lowering anything set
    before), and copies it into each file when the file is opened -- after
    the daemon answered the open. So `apply` runs in the first `open`, before
    it is answered (no file can be opened before FUSE_INIT is answered), and
    `watch` applies it again in the background in case the kernel resets it.
    Without permission (not root) the kernel's default stays.
    """

    def __init__(self, opts: MountOptions) -> None:
        self._mountpoint = opts.mountpoint
        self._kib = min(opts.readahead, KERNEL_READAHEAD) // 1024
        self._path: str | None = None
        self._given_up = self._kib <= 0

    def apply(self) -> None:
        """Set the window if it is not set (one small sysfs read; a write when needed)."""
        if self._given_up:
            return
        if self._path is None:
            device = mount_device(self._mountpoint)
            if device is None:
                return
            self._path = f"/sys/class/bdi/{device}/read_ahead_kb"
        try:
            with open(self._path, encoding="ascii") as knob:
                if int(knob.read()) == self._kib:
                    return
            with open(self._path, "w", encoding="ascii") as knob:
                knob.write(f"{self._kib}\n")
        except (OSError, ValueError) as exc:
            log.debug("kernel readahead left as is (%s: %s)", self._path, exc)
            self._given_up = True
            return
        log.debug("kernel readahead of %s set to %d KiB", self._mountpoint, self._kib)

    async def watch(self) -> None:
        """Apply at once and for two seconds after (the FUSE_INIT reply may reset it)."""
        for _ in range(20):
            self.apply()
            await trio.sleep(0.1)


async def _hang_up(parts: MountParts) -> None:
    """SIGHUP: reopen the log file (logrotate) and list every group again."""
    try:
        reopened = reopen_log_files()
    except OSError as exc:
        log.error("SIGHUP: cannot reopen the log file: %s", exc)
    else:
        log.info("SIGHUP received: %d log files reopened, refreshing the listings", reopened)
    try:
        await parts.refresh()
    except (FdfsError, MountError) as exc:
        log.warning("SIGHUP: refreshing the listings failed: %s", exc)


async def _unmount_on_signal(
    parts: MountParts,
    nursery: trio.Nursery,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """End the FUSE loop on SIGTERM/SIGINT; `serve` then flushes and unmounts.
    SIGHUP reopens the log file and refreshes the listings (`_hang_up`).

    Keeps receiving afterwards, so a second signal cannot kill the process
    halfway through the unmount."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        terminated = False
        async for signum in signals:
            name = signal.Signals(signum).name
            if terminated:
                log.info("%s received: already unmounting", name)
                continue
            if signum == signal.SIGHUP:
                nursery.start_soon(_hang_up, parts)
                continue
            log.info("%s received: unmounting", name)
            terminated = True
            end_fuse_loop()


#: Whether pyfuse3's session (one per process) is open: pyfuse3.terminate() on a
#: closed session dereferences a freed pointer and kills the process with SIGSEGV.
_session_open = False


def end_fuse_loop() -> bool:
    """End the FUSE loop if the session is still open (call in the trio thread).

    A signal and a failed readiness check may both ask, in either order, and the
    second may come after the unmount closed the session."""
    if not _session_open:
        return False
    pyfuse3.terminate()
    return True


async def serve(
    opts: MountOptions,
    *,
    on_ready: Callable[[MountParts], None] | None = None,
    client: ReadClient | None = None,
) -> None:
    """Mount `opts.mountpoint`, serve until unmounted or signalled, then unmount.

    Raises `MountError` (one line for the operator) when the mount cannot start.
    `on_ready` is called once the kernel has the mount, before the FUSE loop
    runs (so it must not wait for the mount to answer; see `sdnotify`).
    """
    check_mountpoint(opts.mountpoint)
    if client is None:
        async with open_client(opts) as own_client:
            await _serve_with(opts, own_client, on_ready)
    else:
        await _serve_with(opts, client, on_ready)


async def _serve_with(
    opts: MountOptions, client: ReadClient, on_ready: Callable[[MountParts], None] | None
) -> None:
    groups = await check_cluster(client, opts)
    failure: MountError | None = None
    async with trio.open_nursery() as nursery:
        parts = build_operations(opts, client, nursery, groups=groups)
        global _session_open
        try:
            pyfuse3.init(parts.ops, opts.mountpoint, opts.fuse_options)
            _session_open = True
        except RuntimeError as exc:
            # Raised after the nursery closes: inside it, it would come out wrapped in a group.
            failure = MountError(f"cannot mount {opts.mountpoint}: {exc}")
            nursery.cancel_scope.cancel()
        else:
            try:
                await nursery.start(parts.writer.run)
                parts.writer.kernel.attached = True
                nursery.start_soon(parts.kernel_readahead.watch)
                # Only now: pyfuse3.terminate() needs the session init() made.
                await nursery.start(_unmount_on_signal, parts, nursery)
                log.info("mounted %s at %s (%d groups)", opts.source, opts.mountpoint, len(groups))
                if on_ready is not None:
                    on_ready(parts)
                # Workers are kept once started: pyfuse3 does not free the request buffer
                # (max_write, 1 MiB) of a worker that ends, so bursts would leak memory.
                await pyfuse3.main(min_tasks=FUSE_WORKERS, max_tasks=FUSE_WORKERS)
            finally:
                await _shutdown(opts, parts, nursery)
    parts.listing.close()
    parts.table.close()
    if parts.disk_cache is not None:
        parts.disk_cache.close()
    if failure is not None:
        raise failure


async def _shutdown(opts: MountOptions, parts: MountParts, nursery: trio.Nursery) -> None:
    """Flush pending writes, stop background work, unmount: even when cancelled."""
    notify("STOPPING=1")
    with trio.CancelScope(shield=True):
        with trio.move_on_after(FLUSH_ON_EXIT) as flush_scope:
            try:
                await parts.writer.flush_all()
            except Exception:
                log.exception("flushing pending writes failed")
        if flush_scope.cancelled_caught:
            log.error("pending writes not flushed within %ss", FLUSH_ON_EXIT)
        nursery.cancel_scope.cancel()
        parts.writer.kernel.attached = False
        global _session_open
        _session_open = False
        pyfuse3.close(unmount=True)
        await trio.to_thread.run_sync(parts.writer.catalog.close)
        log.info("unmounted %s", opts.mountpoint)
