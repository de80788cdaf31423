"""A FastDFS cluster of real tracker and storage processes on loopback, for tests.

# Strategy
`Cluster` owns the lifecycle and the fault controls; a `Backend` only knows how
to turn a `Node` into a command line (and config files): `BuiltinBackend` runs
this project's servers, ``harness.native.NativeBackend`` the upstream ones.
Start-up is synchronous code; the trio entry (``async with``) runs that same
code in a worker thread and polls for cancellation from inside its wait loops,
so there is one implementation of the logic.

Readiness is what a client would see: every tracker lists every storage as
ACTIVE (cmd 92). Each wait is bounded and checks that no node died meanwhile.

Teardown never depends on the test having gone well: the cluster registers
itself for ``atexit`` before creating anything, every child is killed by
process group (TERM, then KILL), stray processes whose command line mentions
the cluster's directory are swept up, and the directory is removed if the
cluster created it.

Addresses: trackers listen on 127.0.0.2.. (upstream storages refuse a tracker
at literally 127.0.0.1), storages on 127.0.0.10.., one IP per storage, so that
file IDs and tracker listings name each storage distinctly. With
``share_ip=True`` (storage-id mode only) the storages of a group share one IP
and are told apart by port, as several storage daemons on one host are.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import errno
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal

import trio

from fdfsmount.proto.constants import StorageStatus
from fdfsmount.proto.errors import FdfsError, LocalProtocolError, ProtocolError
from fdfsmount.proto.records import StorageStat
from fdfsmount.proto.sockframes import new_decoder, receive_reply
from fdfsmount.proto.tracker import decode_storages_reply, list_storages_request
from fdfsmount.proto.wire import validate_group_name

from .process import (
    ChildProcess,
    ProcessError,
    Reaper,
    kill_processes_mentioning,
    pick_free_port,
    unwind_on_sigterm,
)
from .reaper import remove_trees

log = logging.getLogger(__name__)

BACKENDS = ("builtin", "native")
DEFAULT_GROUPS: Mapping[str, int] = {"group1": 2, "group2": 1}
#: First storage id handed out in storage-id mode (upstream ids are natural numbers).
FIRST_STORAGE_ID = 100001
_REPO_ROOT = Path(__file__).resolve().parent.parent
_POLL_INTERVAL = 0.1
_START_ATTEMPTS = 3

Role = Literal["tracker", "storage"]
PollHook = Callable[[], None]


class ClusterError(RuntimeError):
    """The cluster could not be started, or a fault control failed."""


class BackendUnavailable(ClusterError):
    """The requested backend cannot run here (e.g. upstream binaries not installed)."""


class NotReady(ClusterError):
    """Storages did not reach the expected status in time."""


class Unsupported(ClusterError):
    """The backend cannot perform this fault control."""


class _LaunchAborted(Exception):
    """A parallel launch was called off because a sibling failed."""


@dataclass(eq=False)
class Node:
    """One server process of the cluster, with its own address and directory."""

    name: str
    role: Role
    host: str
    port: int
    base_dir: Path
    group: str | None = None
    #: The id the tracker reports: the numeric id in storage-id mode, else the IP.
    storage_id: str | None = None
    process: ChildProcess | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description (used by ``python -m harness up``)."""
        return {
            "name": self.name,
            "role": self.role,
            "group": self.group,
            "host": self.host,
            "port": self.port,
            "address": self.address,
            "storage_id": self.storage_id,
            "base_dir": str(self.base_dir),
            "pid": self.pid,
        }


@dataclass(frozen=True)
class Launch:
    """How a backend starts one node."""

    argv: list[str]
    ready_line: str | None = None
    ready_probe: Callable[[], bool] | None = None
    env: Mapping[str, str] | None = None
    extra_logs: Sequence[Path] = ()


class Backend(abc.ABC):
    """Turns nodes into processes; the cluster does everything else."""

    name: ClassVar[str]
    #: How long one process may take to say it is ready.
    process_startup_timeout: ClassVar[float] = 30.0
    #: The trackers' fixed reserve: `Cluster.unfill_disk` waits for more free MB
    #: than this (the builtin tracker reserves 1% of the disk, which any disk in
    #: use exceeds once unfilled).
    reserved_mb: ClassVar[int] = 0

    def check_available(self) -> None:  # noqa: B027 - optional hook
        """Raise `BackendUnavailable` if this backend cannot run here."""

    def prepare(self, cluster: Cluster) -> None:  # noqa: B027 - optional hook
        """Write whatever the whole cluster shares (called once addresses are known)."""

    @abc.abstractmethod
    def launch(self, cluster: Cluster, node: Node) -> Launch:
        """The command (and readiness test) that runs ``node``."""

    def release(self, cluster: Cluster) -> None:  # noqa: B027 - optional hook
        """Undo what `prepare` set up besides files (mounts), once the processes are gone.

        Called on every teardown, also after a failed or partial `prepare`.
        """

    def fill_disk(self, cluster: Cluster, node: Node) -> None:
        raise Unsupported(f"the {self.name} backend cannot fill a disk")

    def unfill_disk(self, cluster: Cluster, node: Node) -> None:
        raise Unsupported(f"the {self.name} backend cannot fill a disk")


class BuiltinBackend(Backend):
    """This project's trio servers: ``python -m harness.tracker`` / ``harness.storage``."""

    name = "builtin"
    #: File in a storage's base dir that makes it report no free space.
    DISK_FULL_FLAG = "DISK_FULL"

    def launch(self, cluster: Cluster, node: Node) -> Launch:
        python = [sys.executable, "-m"]
        common = ["--bind", node.host, "--port", str(node.port), "--base-dir", str(node.base_dir)]
        if node.role == "tracker":
            argv = [*python, "harness.tracker", *common, "--ip-size", str(cluster.ip_size)]
            argv += ["--store-lookup", cluster.store_lookup]
            if cluster.offline_after is not None:
                argv += ["--offline-after", f"{cluster.offline_after:g}"]
        else:
            assert node.group is not None
            argv = [*python, "harness.storage", "--group", node.group, *common]
            for tracker in cluster.trackers:
                argv += ["--tracker", tracker]
            argv += ["--store-paths", str(cluster.store_paths), "--subdirs", str(cluster.subdirs)]
            argv += ["--heartbeat-interval", f"{cluster.heartbeat_interval:g}"]
            if cluster.synthetic_files:
                argv += ["--synthetic-files", str(cluster.synthetic_files)]
            if cluster.storage_id_mode:
                assert node.storage_id is not None
                argv += ["--storage-id", node.storage_id, "--id-in-filename", "id"]
            else:
                argv += ["--id-in-filename", "ip"]
        env = dict(os.environ)
        # The servers must import this checkout's harness and fdfsmount packages.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        return Launch(argv, ready_line=r"^READY (\d+)\s*$", env=env)

    def fill_disk(self, cluster: Cluster, node: Node) -> None:
        # The storage then reports 0 MB free; its real free space is not touched.
        (node.base_dir / self.DISK_FULL_FLAG).write_text("full\n")

    def unfill_disk(self, cluster: Cluster, node: Node) -> None:
        (node.base_dir / self.DISK_FULL_FLAG).unlink(missing_ok=True)


def parse_groups(text: str) -> dict[str, int]:
    """``"group1:2,group2:1"`` -> ``{"group1": 2, "group2": 1}`` (a bare name means 1)."""
    groups: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, count = item.partition(":")
        name = name.strip()
        try:
            validate_group_name(name)
        except LocalProtocolError:
            raise ValueError(f"bad group name {name!r} (1-16 ASCII letters and digits)") from None
        try:
            storages = int(count) if sep else 1
        except ValueError:
            raise ValueError(f"bad storage count {count!r} for group {name}") from None
        if storages < 1:
            raise ValueError(f"group {name} needs at least one storage")
        if name in groups:
            raise ValueError(f"group {name} given twice")
        groups[name] = storages
    if not groups:
        raise ValueError("no groups given")
    return groups


def make_backend(name: str) -> Backend:
    if name == "builtin":
        return BuiltinBackend()
    if name == "native":
        from .native import NativeBackend  # here: native imports this module

        return NativeBackend()
    raise ValueError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")


# ------------------------------------------------------------------ tracker view


def tracker_storages(tracker: str, group: str, timeout: float = 2.0) -> list[StorageStat]:
    """Storages of ``group`` as ``tracker`` lists them (cmd 92), over a plain socket.

    An unknown group (status ENOENT) yields an empty list; other failures raise
    OSError or `FdfsError`.
    """
    host, _, port = tracker.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(list_storages_request(group).encode())
        reply = receive_reply(sock, new_decoder(1 << 20), peer=f"tracker {tracker}")
        if reply.header.status == errno.ENOENT:
            return []
        if reply.header.status != 0:
            raise ProtocolError(
                f"tracker {tracker} answered cmd 92 with status {reply.header.status}"
            )
        return decode_storages_reply(reply.body)


def _status_name(status: int | None) -> str:
    if status is None:
        return "absent"
    try:
        return StorageStatus(status).name
    except ValueError:
        return str(status)


# ------------------------------------------------------------------------ cluster


_open_clusters: set[Cluster] = set()
_open_lock = threading.Lock()


@atexit.register
def _close_open_clusters() -> None:
    with _open_lock:
        clusters = list(_open_clusters)
    for cluster in clusters:
        with contextlib.suppress(Exception):
            cluster.close()


class Cluster:
    """Trackers and storage groups as OS processes; a sync and a trio context manager.

    ``groups`` maps group name to its number of storages. ``storage_id_mode``
    names storages by numeric id (file IDs then carry the id); otherwise by IP.
    ``ip_size`` 46 makes the trackers answer with IPv6-sized address fields.
    ``base_dir`` keeps everything in a given directory (left in place at
    close); by default a temporary directory is created and removed.
    ``backend`` is ``"builtin"``, ``"native"`` or a `Backend` instance.
    ``disk_mb`` (native backend, needs root) puts every store path on a tmpfs
    of that many MB, so that `fill_disk` can really fill it; the builtin
    backend fakes a full disk and ignores it.
    """

    def __init__(
        self,
        groups: Mapping[str, int] | None = None,
        trackers: int = 1,
        backend: str | Backend = "builtin",
        base_dir: str | os.PathLike[str] | None = None,
        *,
        storage_id_mode: bool = True,
        ip_size: int = 16,
        store_paths: int = 1,
        subdirs: int = 256,
        share_ip: bool = False,
        store_lookup: Literal["round_robin", "load_balance"] = "round_robin",
        heartbeat_interval: float = 1.0,
        offline_after: float | None = 3.0,
        disk_mb: int | None = None,
        ready_timeout: float = 60.0,
        terminate_timeout: float = 10.0,
        synthetic_files: int = 0,
    ) -> None:
        groups = dict(DEFAULT_GROUPS if groups is None else groups)
        if not groups or any(n < 1 for n in groups.values()):
            raise ValueError(f"every group needs at least one storage: {groups}")
        for group in groups:
            try:
                validate_group_name(group)
            except LocalProtocolError as exc:
                raise ValueError(str(exc)) from None
        if not 1 <= trackers <= 8:
            raise ValueError("between 1 and 8 trackers")
        if sum(groups.values()) > 200:
            raise ValueError("at most 200 storages")
        if ip_size not in (16, 46):
            raise ValueError("ip_size is 16 (IPv4) or 46 (IPv6-sized fields)")
        if share_ip and not storage_id_mode:
            raise ValueError("storages can share an IP only in storage-id mode")
        if not 1 <= store_paths <= 256 or not 1 <= subdirs <= 256:
            raise ValueError("store_paths and subdirs must be within 1..256")
        if disk_mb is not None and not 4 <= disk_mb <= 4096:
            raise ValueError("disk_mb must be within 4..4096")
        self.groups = groups
        self.tracker_count = trackers
        self.backend = make_backend(backend) if isinstance(backend, str) else backend
        self.backend_name = self.backend.name
        self.storage_id_mode = storage_id_mode
        self.ip_size = ip_size
        self.store_paths = store_paths
        self.subdirs = subdirs
        self.share_ip = share_ip
        self.store_lookup = store_lookup
        self.heartbeat_interval = heartbeat_interval
        self.offline_after = offline_after
        self.disk_mb = disk_mb
        self.ready_timeout = ready_timeout
        self.terminate_timeout = terminate_timeout
        #: Made-up files each builtin storage lists (harness.synthetic); 0: none.
        self.synthetic_files = synthetic_files
        self._requested_dir = Path(base_dir).resolve() if base_dir is not None else None
        self.base_dir: Path = self._requested_dir or Path("/nonexistent")
        self._created_dir = False
        self.tracker_nodes: list[Node] = []
        self.storages: list[Node] = []
        self.client_conf: Path = self.base_dir / "client.conf"
        #: Nodes taken down on purpose; readiness waits do not treat them as crashed.
        self._killed: set[Node] = set()
        self._launch_batches: list[tuple[threading.Event, list[Future[None]]]] = []
        self._started = False
        self._closed = False
        self._lock = threading.RLock()
        self._reaper: Reaper | None = None

    def __repr__(self) -> str:
        return (
            f"<Cluster {self.backend_name} {self.groups} trackers={self.trackers}"
            f" dir={self.base_dir}>"
        )

    # --------------------------------------------------------------- properties

    @property
    def trackers(self) -> list[str]:
        """Tracker addresses, ``host:port``."""
        return [n.address for n in self.tracker_nodes]

    @property
    def nodes(self) -> list[Node]:
        return [*self.tracker_nodes, *self.storages]

    def storages_of(self, group: str) -> list[Node]:
        return [n for n in self.storages if n.group == group]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def describe(self) -> dict[str, Any]:
        """The JSON line of ``python -m harness up``."""
        return {
            "trackers": self.trackers,
            "client_conf": str(self.client_conf),
            "storages": [n.describe() for n in self.storages],
            "base_dir": str(self.base_dir),
            "backend": self.backend_name,
        }

    # ---------------------------------------------------------------- lifecycle

    def start(self, poll_hook: PollHook | None = None) -> Cluster:
        """Start every node and wait until all storages are ACTIVE on all trackers.

        On any failure (or an exception raised by ``poll_hook``) everything
        started so far is torn down before the exception propagates.
        """
        with self._lock:
            if self._started:
                raise ClusterError("a Cluster can be started only once")
            self._started = True
            unwind_on_sigterm()
            self.backend.check_available()
            requested = self._requested_dir
            # Old node dirs would resurrect old state (binlogs, tracker data).
            if requested is not None and requested.is_dir() and any(requested.iterdir()):
                raise ClusterError(f"{requested} is not empty; give a new or empty directory")
            # Registered before anything exists, so nothing can escape cleanup.
            with _open_lock:
                _open_clusters.add(self)
        try:
            # If this process is SIGKILLed, the reaper stops the nodes and removes the dir.
            self._reaper = Reaper()
            self._create_base_dir()
            if self._created_dir:
                self._reaper.watch_dir(self.base_dir)
            log.info("cluster directory: %s", self.base_dir)
            for attempt in range(1, _START_ATTEMPTS + 1):
                self._lay_out()
                try:
                    self._start_nodes(poll_hook)
                    break
                except ProcessError as exc:
                    if not exc.address_in_use or attempt == _START_ATTEMPTS:
                        raise
                    log.info("a port was taken meanwhile; starting again on new ports")
                    self._terminate(self.nodes)
                    self.backend.release(self)
                    self._wipe_node_dirs()
            self.wait_active(poll_hook=poll_hook)
        except BaseException:
            self.close()
            raise
        log.info("cluster ready: trackers %s, %d storages", self.trackers, len(self.storages))
        return self

    def _create_base_dir(self) -> None:
        if self._requested_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="fdfs-cluster-"))
            self._created_dir = True
        else:
            self.base_dir = self._requested_dir
            self.base_dir.mkdir(parents=True, exist_ok=True)
        self.client_conf = self.base_dir / "client.conf"

    def _lay_out(self) -> None:
        """Assign names, addresses, ids and directories; write the shared config files."""
        self.tracker_nodes = []
        for i in range(self.tracker_count):
            host = f"127.0.0.{2 + i}"
            name = f"tracker{i + 1}"
            node = Node(name, "tracker", host, pick_free_port(host), self.base_dir / name)
            self.tracker_nodes.append(node)
        self.storages = []
        k = 0
        for g, (group, count) in enumerate(self.groups.items()):
            if self.share_ip:
                hosts = [f"127.0.0.{10 + g}"] * count
            else:
                hosts = [f"127.0.0.{10 + k + j}" for j in range(count)]
            # Upstream trackers in IP mode insist on one port for the whole group.
            group_port = None if self.storage_id_mode else pick_free_port(*hosts)
            for j, host in enumerate(hosts):
                name = f"{group}-storage{j + 1}"
                storage_id = str(FIRST_STORAGE_ID + k) if self.storage_id_mode else host
                port = group_port or pick_free_port(host)
                node = Node(
                    name, "storage", host, port, self.base_dir / name,
                    group=group, storage_id=storage_id,
                )  # fmt: skip
                self.storages.append(node)
                k += 1
        for node in self.nodes:
            node.base_dir.mkdir(parents=True, exist_ok=True)
        if self.storage_id_mode:
            self._write_storage_ids_conf()
        self._write_client_conf()
        self.backend.prepare(self)

    @property
    def storage_ids_conf(self) -> Path:
        """Upstream-format storage_ids.conf (written in storage-id mode)."""
        return self.base_dir / "storage_ids.conf"

    def _write_storage_ids_conf(self) -> None:
        entries = [f"{n.storage_id:<8} {n.group:<16} {n.host}:{n.port}" for n in self.storages]
        self.storage_ids_conf.write_text(
            "# <id> <group> <ip:port>  (generated for this test cluster)\n"
            + "\n".join(entries)
            + "\n"
        )

    def _write_client_conf(self) -> None:
        lines = [
            "# FastDFS client configuration for this test cluster (generated).",
            "connect_timeout = 5",
            "network_timeout = 30",
            f"base_path = {self.base_dir}",
            *(f"tracker_server = {t}" for t in self.trackers),
            "log_level = info",
            "use_connection_pool = false",
            "load_fdfs_parameters_from_tracker = false",
        ]
        if self.storage_id_mode:
            lines += ["use_storage_id = true", f"storage_ids_filename = {self.storage_ids_conf}"]
        else:
            lines += ["use_storage_id = false"]
        self.client_conf.write_text("\n".join(lines) + "\n")

    def _wipe_node_dirs(self) -> None:
        remove_trees([node.base_dir for node in self.nodes])

    def _start_nodes(self, poll_hook: PollHook | None) -> None:
        self._launch_all(self.tracker_nodes, poll_hook)
        self._launch_all(self.storages, poll_hook)

    def _launch_all(self, nodes: Sequence[Node], poll_hook: PollHook | None) -> None:
        """Start ``nodes`` side by side (an upstream storage spends seconds making dirs).

        ``poll_hook`` may only run in this thread (trio's cancellation check
        does), so workers watch an event instead; on any failure or
        cancellation every worker stops its child before this returns. The
        batch is recorded so that `close` can abort and join it too, should an
        exception (KeyboardInterrupt) land here before the workers are joined.
        """
        abort = threading.Event()

        def worker_hook() -> None:
            if abort.is_set():
                raise _LaunchAborted

        with ThreadPoolExecutor(max_workers=len(nodes), thread_name_prefix="launch") as pool:
            futures = [pool.submit(self._launch, n, worker_hook) for n in nodes]
            self._launch_batches.append((abort, futures))
            try:
                pending: set[Future[None]] = set(futures)
                while pending:
                    if poll_hook is not None:
                        poll_hook()
                    done, pending = wait(pending, _POLL_INTERVAL, FIRST_EXCEPTION)
                    if any(f.exception() is not None for f in done):
                        break
            finally:
                if any(not f.done() or f.exception() is not None for f in futures):
                    abort.set()
        errors = [f.exception() for f in futures]
        real = [e for e in errors if e is not None and not isinstance(e, _LaunchAborted)]
        if real:
            raise real[0]

    def _launch(self, node: Node, poll_hook: PollHook | None) -> None:
        launch = self.backend.launch(self, node)
        node.process = ChildProcess(
            launch.argv,
            name=node.name,
            log_dir=node.base_dir,
            cwd=node.base_dir,
            env=launch.env,
            ready_line=launch.ready_line,
            ready_probe=launch.ready_probe,
            startup_timeout=self.backend.process_startup_timeout,
            terminate_timeout=self.terminate_timeout,
            extra_logs=launch.extra_logs,
            reaper=self._reaper,
        )
        log.info("starting %s on %s", node.name, node.address)
        node.process.start(poll_hook)

    def close(self) -> None:
        """Stop every process, sweep strays, remove the directory if we made it.

        Idempotent, and safe to call on a cluster that failed half-way. If it
        is interrupted, the cluster stays registered and ``atexit`` finishes it.
        """
        with self._lock:
            if self._closed:
                return
            for abort, futures in self._launch_batches:
                abort.set()
                wait(futures)
            if self._created_dir:
                # The directory goes with the cluster, and with it all a clean exit
                # would save: the nodes are killed at once (upstream's servers take
                # a second each to stop on SIGTERM).
                self._kill(self.nodes)
            else:
                # Storages first: they would otherwise log reconnect noise at the trackers.
                self._terminate(self.storages)
                self._terminate(self.tracker_nodes)
            if self._started and self.base_dir.exists():
                # Anything that escaped its process group still names a path in our
                # directory (the separator keeps /tmp/x from matching /tmp/x2).
                kill_processes_mentioning(f"{self.base_dir}{os.sep}")
            try:
                self.backend.release(self)
            except Exception:
                log.exception("releasing the backend's resources failed")
            if self._created_dir:
                self._remove_base_dir()
            if self._reaper is not None:
                self._reaper.close()
            self._closed = True
            with _open_lock:
                _open_clusters.discard(self)
        log.info("cluster in %s torn down", self.base_dir)

    def _remove_base_dir(self) -> None:
        remove_trees([self.base_dir])
        if self.base_dir.exists():
            log.error("could not remove %s", self.base_dir)

    def _terminate(self, nodes: Iterable[Node]) -> None:
        self._end(nodes, ChildProcess.terminate)

    def _kill(self, nodes: Iterable[Node]) -> None:
        self._end(nodes, ChildProcess.kill)

    def _end(self, nodes: Iterable[Node], how: Callable[[ChildProcess], object]) -> None:
        processes = [n.process for n in nodes if n.process is not None]
        if not processes:
            return
        with ThreadPoolExecutor(max_workers=len(processes)) as pool:
            for future in [pool.submit(how, p) for p in processes]:
                try:
                    future.result()
                except Exception:
                    log.exception("terminating a harness process failed")

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Cluster:
        unwind_on_sigterm()  # here: the worker thread cannot install signal handlers
        await self._in_thread(lambda check: self.start(poll_hook=check))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.close)

    async def _in_thread(self, work: Callable[[PollHook], Any]) -> Any:
        """Run blocking harness code in a thread; its wait loops notice cancellation."""
        return await trio.to_thread.run_sync(work, trio.from_thread.check_cancelled)

    # ---------------------------------------------------------------- readiness

    def storage_status(self, node: Node, tracker: str | None = None) -> int | None:
        """``node``'s status as ``tracker`` (default: the first) reports it; None if unlisted."""
        assert node.group is not None
        for stat in tracker_storages(tracker or self.trackers[0], node.group):
            if self._is_record_of(stat, node):
                return stat.status
        return None

    def _is_record_of(self, stat: StorageStat, node: Node) -> bool:
        if self.storage_id_mode:
            return stat.storage_id == node.storage_id
        return stat.ip_addr == node.host and stat.storage_port in (0, node.port)

    def wait_status(
        self,
        nodes: Sequence[Node],
        accept: Callable[[int | None], bool],
        what: str,
        timeout: float | None = None,
        poll_hook: PollHook | None = None,
        trackers: Sequence[Node] | None = None,
    ) -> None:
        """Wait until every tracker reports a status satisfying ``accept`` for ``nodes``.

        Raises `NotReady` after ``timeout`` (default ``ready_timeout``), quoting
        what the trackers said, and `ProcessError` at once if a node died.
        """
        timeout = self.ready_timeout if timeout is None else timeout
        trackers = self.tracker_nodes if trackers is None else trackers
        deadline = time.monotonic() + timeout
        while True:
            if poll_hook is not None:
                poll_hook()
            self._check_alive()
            views = self._tracker_views(trackers, {n.group for n in nodes if n.group})
            pending = [
                f"{node.name}@{tracker.name}={_status_name(status)}"
                for tracker in trackers
                for node in nodes
                if not accept(status := self._status_in(views[tracker.address], node))
            ]
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise NotReady(
                    f"storages not {what} after {timeout:g}s: {', '.join(pending)}"
                    + self._log_tails(nodes)
                )
            time.sleep(_POLL_INTERVAL)

    def _tracker_views(
        self, trackers: Sequence[Node], groups: set[str]
    ) -> dict[str, dict[str, list[StorageStat]] | str]:
        views: dict[str, dict[str, list[StorageStat]] | str] = {}
        for tracker in trackers:
            try:
                views[tracker.address] = {
                    group: tracker_storages(tracker.address, group, timeout=1.0)
                    for group in sorted(groups)
                }
            except (OSError, FdfsError) as exc:
                views[tracker.address] = f"unreachable ({exc})"
        return views

    def _status_in(self, view: dict[str, list[StorageStat]] | str, node: Node) -> int | None:
        if isinstance(view, str) or node.group is None:
            return None
        for stat in view.get(node.group, []):
            if self._is_record_of(stat, node):
                return stat.status
        return None

    def wait_active(
        self,
        nodes: Sequence[Node] | None = None,
        timeout: float | None = None,
        poll_hook: PollHook | None = None,
    ) -> None:
        """Wait until every tracker lists ``nodes`` (default: all storages) ACTIVE."""
        self.wait_status(
            self.storages if nodes is None else nodes,
            lambda s: s == StorageStatus.ACTIVE,
            "ACTIVE",
            timeout,
            poll_hook,
        )

    def wait_offline(
        self,
        nodes: Sequence[Node],
        timeout: float | None = None,
        poll_hook: PollHook | None = None,
    ) -> None:
        """Wait until no tracker lists ``nodes`` as ACTIVE (or ONLINE) any more."""
        self.wait_status(
            nodes,
            lambda s: s not in (StorageStatus.ACTIVE, StorageStatus.ONLINE),
            "offline",
            timeout,
            poll_hook,
        )

    async def wait_active_async(self, nodes: Sequence[Node] | None = None) -> None:
        """`wait_active` with the cluster's `ready_timeout`; a caller's deadline cancels it."""
        await self._in_thread(lambda check: self.wait_active(nodes, None, check))

    async def wait_offline_async(self, nodes: Sequence[Node]) -> None:
        """`wait_offline` with the cluster's `ready_timeout`; a caller's deadline cancels it."""
        await self._in_thread(lambda check: self.wait_offline(nodes, None, check))

    def _check_alive(self) -> None:
        """Raise if a node died on its own (not by kill() or restart())."""
        for node in self.nodes:
            if node.process is None or node.process.running or node in self._killed:
                continue
            raise ProcessError(
                f"{node.name} exited with status {node.process.returncode}",
                name=node.name,
                stderr_tail=node.process.stderr_tail(),
            )

    def _log_tails(self, nodes: Iterable[Node]) -> str:
        parts = []
        for node in [*self.tracker_nodes, *nodes]:
            if node.process is not None and (tail := node.process.stderr_tail(8)):
                parts.append(f"\n--- {node.name} ---\n{tail}")
        return "".join(parts)

    # ----------------------------------------------------------- fault controls

    def _resolve(self, node: Node | str) -> Node:
        return self.node(node) if isinstance(node, str) else node

    def kill(self, node: Node | str) -> None:
        """SIGKILL a node's process group: a crash, no goodbye to the tracker."""
        node = self._resolve(node)
        assert node.process is not None
        log.info("killing %s", node.name)
        self._killed.add(node)
        node.process.kill()

    def stop(self, node: Node | str) -> None:
        """Freeze a node (SIGSTOP): connections stay open but nothing answers.

        Returns once every thread of the node is frozen, so a request sent
        afterwards is not served until `cont`.
        """
        node = self._resolve(node)
        assert node.process is not None
        log.info("stopping (SIGSTOP) %s", node.name)
        node.process.stop()

    def cont(self, node: Node | str) -> None:
        """Resume a frozen node (SIGCONT)."""
        node = self._resolve(node)
        assert node.process is not None
        log.info("continuing (SIGCONT) %s", node.name)
        node.process.cont()

    def restart(
        self, node: Node | str, *, wait: bool = True, poll_hook: PollHook | None = None
    ) -> None:
        """Terminate (if running) and start again on the same port and data dir.

        With ``wait``, returns once every tracker reports every storage ACTIVE
        again (after a tracker restart the storages must re-register with it).
        """
        node = self._resolve(node)
        assert node.process is not None
        log.info("restarting %s", node.name)
        if node.process.running:
            self._killed.add(node)
            node.process.terminate()
        # The port is ours: it was picked outside the ephemeral range, and servers
        # bind with SO_REUSEADDR, so TIME_WAIT leftovers do not block it.
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                node.process.start(poll_hook)
                break
            except ProcessError as exc:
                if not exc.address_in_use or attempt == _START_ATTEMPTS:
                    raise
                time.sleep(0.5 * attempt)
        self._killed.discard(node)
        if wait:
            if node.role == "storage":
                self.wait_active([node], poll_hook=poll_hook)
            else:
                self.wait_status(
                    self.storages,
                    lambda s: s == StorageStatus.ACTIVE,
                    "ACTIVE",
                    poll_hook=poll_hook,
                    trackers=[node],
                )

    async def restart_async(self, node: Node | str, *, wait: bool = True) -> None:
        await self._in_thread(lambda check: self.restart(node, wait=wait, poll_hook=check))

    def fill_disk(
        self, node: Node | str, *, timeout: float | None = None, poll_hook: PollHook | None = None
    ) -> None:
        """Make a storage's disk full (trackers refuse uploads to a group with no room: ENOSPC).

        Returns once every tracker reports the storage with 0 MB free (a
        storage reports its disk every heartbeat interval). The native backend
        needs ``disk_mb``; it raises `Unsupported` otherwise.
        """
        node = self._resolve(node)
        if node.role != "storage":
            raise ClusterError(f"{node.name} is not a storage")
        log.info("filling the disk of %s", node.name)
        self.backend.fill_disk(self, node)
        self.wait_free_mb(node, lambda mb: mb == 0, "full", timeout, poll_hook)

    def unfill_disk(
        self, node: Node | str, *, timeout: float | None = None, poll_hook: PollHook | None = None
    ) -> None:
        """Undo `fill_disk`; returns once every tracker sees free space above the reserve."""
        node = self._resolve(node)
        if node.role != "storage":
            raise ClusterError(f"{node.name} is not a storage")
        log.info("freeing the disk of %s", node.name)
        self.backend.unfill_disk(self, node)
        reserved = self.backend.reserved_mb
        self.wait_free_mb(node, lambda mb: mb > reserved, "free again", timeout, poll_hook)

    def wait_free_mb(
        self,
        node: Node,
        accept: Callable[[int], bool],
        what: str,
        timeout: float | None = None,
        poll_hook: PollHook | None = None,
    ) -> None:
        """Wait until every tracker lists ``node`` with a free space satisfying ``accept``."""
        assert node.group is not None
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if poll_hook is not None:
                poll_hook()
            self._check_alive()
            views = self._tracker_views(self.tracker_nodes, {node.group})
            seen: list[str] = []
            for tracker in self.tracker_nodes:
                view = views[tracker.address]
                stats = [] if isinstance(view, str) else view.get(node.group, [])
                free = [s.free_mb for s in stats if self._is_record_of(s, node)]
                if not free or not accept(free[0]):
                    seen.append(f"{tracker.name}: {free[0] if free else 'unlisted'} MB free")
            if not seen:
                return
            if time.monotonic() >= deadline:
                raise NotReady(
                    f"{node.name} not {what} after {timeout:g}s ({', '.join(seen)})"
                    + self._log_tails([node])
                )
            time.sleep(_POLL_INTERVAL)

    async def fill_disk_async(self, node: Node | str) -> None:
        await self._in_thread(lambda check: self.fill_disk(node, poll_hook=check))

    async def unfill_disk_async(self, node: Node | str) -> None:
        await self._in_thread(lambda check: self.unfill_disk(node, poll_hook=check))
