"""Small launcher of builtin tracker/storage processes for the server-level tests.

The tests of the servers themselves (golden replay, fuzz, replication) need
exact control over storage ids, addresses and options, so they start the
processes directly with `harness.process.ChildProcess` (own session, bounded
readiness on ``READY <port>``, killed by process group) instead of going
through the Cluster API. Every child is terminated on exit, also when the
body or the start-up fails.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from waiting import wait_until

from fdfsmount.proto.constants import StorageStatus
from fdfsmount.proto.records import StorageStat
from fdfsmount.proto.tracker import (
    active_test_request,
    decode_storages_reply,
    list_storages_request,
)
from fdfsmount.proto.wire import decode_header
from harness.process import ChildProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
Addr = tuple[str, int]


@dataclass
class StorageSpec:
    group: str
    host: str
    storage_id: str | None = None  # None: ip mode (the id is the IP)
    extra_args: tuple[str, ...] = ()

    @property
    def server_id(self) -> str:
        return self.storage_id or self.host


@dataclass
class StorageNode:
    spec: StorageSpec
    proc: ChildProcess
    base_dir: Path
    port: int = 0

    @property
    def addr(self) -> Addr:
        return (self.spec.host, self.port)

    def argv(self, tracker: Addr, heartbeat: float) -> list[str]:
        spec = self.spec
        argv = [
            sys.executable, "-m", "harness.storage", "--group", spec.group,
            "--bind", spec.host, "--port", str(self.port), "--base-dir", str(self.base_dir),
            "--tracker", f"{tracker[0]}:{tracker[1]}", "--heartbeat-interval", str(heartbeat),
        ]  # fmt: skip
        if spec.storage_id:
            argv += ["--storage-id", spec.storage_id, "--id-in-filename", "id"]
        return argv + list(spec.extra_args)


@dataclass
class BuiltinNodes:
    """One builtin tracker plus storages; a context manager that always cleans up."""

    root: Path
    storages_spec: list[StorageSpec]
    tracker_host: str = "127.0.0.1"
    tracker_args: tuple[str, ...] = ()
    heartbeat: float = 0.5
    tracker: Addr = ("", 0)
    tracker_proc: ChildProcess | None = None
    storages: list[StorageNode] = field(default_factory=list)

    def __enter__(self) -> BuiltinNodes:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start(self) -> None:
        tdir = self.root / "tracker"
        argv = [
            sys.executable, "-m", "harness.tracker", "--bind", self.tracker_host, "--port", "0",
            "--base-dir", str(tdir), *self.tracker_args,
        ]  # fmt: skip
        self.tracker_proc = self._child(argv, "tracker", tdir)
        self.tracker = (self.tracker_host, self.tracker_port(self.tracker_proc))
        for i, spec in enumerate(self.storages_spec):
            base = self.root / f"storage{i}"
            node = StorageNode(spec, self._child([], f"storage{i}", base, start=False), base)
            self.storages.append(node)
            self.start_storage(node)
        self.wait_active()

    def _child(self, argv: list[str], name: str, base: Path, start: bool = True) -> ChildProcess:
        proc = ChildProcess(
            argv, name=name, log_dir=base / "log", cwd=REPO_ROOT, startup_timeout=20.0,
            terminate_timeout=5.0,
        )  # fmt: skip
        return proc.start() if start else proc

    @staticmethod
    def tracker_port(proc: ChildProcess) -> int:
        assert proc.ready_match is not None
        return int(proc.ready_match.group(1))

    def start_storage(self, node: StorageNode) -> None:
        node.proc.argv = node.argv(self.tracker, self.heartbeat)
        node.proc.start()
        node.port = self.tracker_port(node.proc)

    def restart_storage(self, node: StorageNode) -> None:
        """Stop and start again on the same port (a restart, not a new node)."""
        node.proc.terminate()
        self.start_storage(node)

    def close(self) -> None:
        for node in self.storages:
            with contextlib.suppress(Exception):
                node.proc.terminate()
        if self.tracker_proc is not None:
            with contextlib.suppress(Exception):
                self.tracker_proc.terminate()

    def by_id(self, server_id: str) -> StorageNode:
        for node in self.storages:
            if node.spec.server_id == server_id:
                return node
        raise KeyError(server_id)

    # ------------------------------------------------------------ tracker view

    def list_storages(self, group: str) -> list[StorageStat]:
        response, _ = exchange(self.tracker, list_storages_request(group).encode())
        header = decode_header(response[:10])
        if header.status:
            return []
        return decode_storages_reply(response[10:])

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
        def done_or_died() -> bool:
            for node in self.storages:
                if not node.proc.running:
                    raise RuntimeError(f"{node.proc.name} died:\n{node.proc.stderr_tail()}")
            return check()

        wait_until(done_or_died, timeout=timeout, interval=0.1, what=what)

    def all_active(self) -> bool:
        for group in {s.group for s in self.storages_spec}:
            want = {s.server_id for s in self.storages_spec if s.group == group}
            records = self.list_storages(group)
            active = {r.storage_id for r in records if r.status == StorageStatus.ACTIVE}
            if not want <= active:
                return False
        return True

    def wait_active(self, timeout: float = 20.0) -> None:
        self.wait_until("every storage ACTIVE", self.all_active, timeout)

    def all_synced(self) -> bool:
        """Every storage of a multi-storage group reports replication progress."""
        for group in {s.group for s in self.storages_spec}:
            records = self.list_storages(group)
            if len(records) > 1 and any(
                r.counters.get("last_synced_timestamp", 0) <= 0 for r in records
            ):
                return False
        return True

    def wait_synced(self, timeout: float = 20.0) -> None:
        self.wait_until("replication progress", self.all_synced, timeout)


def exchange(addr: Addr, request: bytes, *, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send one request on a fresh connection; return (response bytes, server closed)."""
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(request)
        return read_response(sock, request[8] if len(request) > 8 else 0)


def read_response(sock: socket.socket, cmd: int) -> tuple[bytes, bool]:
    """Read one reply (or up to EOF for QUIT and binlog streams); report a close.

    Whether the server kept the connection open is probed with an ACTIVE_TEST
    right after the reply: an answer means open, EOF or a reset means closed.
    """
    data = bytearray()
    if cmd == 82:
        return bytes(data), _probe_closed(sock)
    while len(data) < 10:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data), True
        data += chunk
    header = decode_header(bytes(data[:10]))
    if cmd == 26 and header.status == 0:
        while chunk := sock.recv(65536):
            data += chunk
        return bytes(data), True
    while len(data) < 10 + header.length:
        chunk = sock.recv(min(1 << 20, 10 + header.length - len(data)))
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), _probe_closed(sock)


def _probe_closed(sock: socket.socket, timeout: float = 3.0) -> bool:
    sock.settimeout(timeout)
    try:
        sock.sendall(active_test_request().encode())
        reply = sock.recv(10)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return reply == b""
