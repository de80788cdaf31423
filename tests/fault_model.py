"""A random-operation model run through real mounts (in the style of fsx), seeded and replayable.

One appender file is created through mount A and changed there through several
descriptors (plain, ``O_APPEND``) with writes at random offsets, appends,
truncates and fsyncs, while reads at random offsets -- through those
descriptors, a read-only one, and fresh descriptors on mount B after each
fsync (close-to-open) -- are compared with a local model after every read.

With ``faults`` the file's storages are frozen (SIGSTOP), killed and restarted
under the writer. A call that fails during a fault is expected (EIO); what
matters is what was *acknowledged*: every byte that an ``fsync`` or ``close``
returning 0 covered, and that no later operation changed, must be in the file
afterwards -- through the mount and on every storage of the group. Reads that
succeed must match the model whenever the model is certain (no failed change
since the last acknowledged state).

`run_model` returns a `ModelReport`; `ModelFailure` carries the seed and the
operation log's tail so a failure can be replayed with the same seed (the
operations replay exactly; the faults' timing varies from run to run).

Known: with ``long_faults`` (freezes longer than the mount's timeout, kills of
the file's source) changes go to a replica while the source is away, and the
builtin servers' replication then replays the source's older binlog lines over
them (a ``T`` line truncates to its old size): files shrink to a size they had
minutes ago on every storage. The short runs in the tests freeze briefly and
kill only replicas; the campaign keeps everything and reports what it finds.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trio

from fdfsmount.proto import FileId, FileNotFound, decode_file_id, parse_file_id
from fdfsmount.proto.client import Client
from harness.cluster import Cluster, Node

log = logging.getLogger(__name__)
T = TypeVar("T")

KIB = 1024
MIB = 1024 * KIB
MAX_SIZE = 6 * MIB  # truncates become likelier past this
REPLICATION_WAIT = 60.0
DIAGNOSIS_WAIT = 15.0  # how long a failure report waits for the storages to agree
#: The mounts' ``timeout``: long freezes last from it to 4 s more, so calls fail in them.
MOUNT_TIMEOUT = 5.0
OPS_PER_FAULT = 40  # operations made during one fault before waiting for it to end


class ModelFailure(AssertionError):
    """The file differs from what was acknowledged, or a read returned wrong bytes."""


class ReplicaDiverged(ModelFailure):
    """The source storage (and the mount) has every acknowledged byte, but another storage
    of the group does not converge to it: replication between the servers, not the mount."""


@dataclass
class ModelReport:
    seed: int
    ops: int = 0
    failed_calls: int = 0  # calls that returned an error (expected during faults)
    faults: int = 0
    reads_checked: int = 0
    bytes_acknowledged: int = 0  # the file's size at the last acknowledged state
    slowest_call: float = 0.0
    slowest_op: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per operation kind

    def spent(self, what: str, since: float) -> None:
        self.seconds[what] = self.seconds.get(what, 0.0) + time.monotonic() - since

    def line(self) -> str:
        return (
            f"seed {self.seed}: {self.ops} ops, {self.reads_checked} reads checked, "
            f"{self.faults} faults, {self.failed_calls} failed calls, "
            f"{self.bytes_acknowledged} bytes acknowledged at the end, "
            f"slowest call {self.slowest_call:.2f}s ({self.slowest_op})"
        )

    def time_line(self) -> str:
        """Where the run's wall time went, largest first."""
        spent = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{what} {secs:.1f}s" for what, secs in spent)


class _Faults:
    """Freezes, kills and restarts storages in the background; `settle` waits for all."""

    def __init__(
        self,
        cluster: Cluster,
        storages: list[Node],
        rng: random.Random,
        *,
        long: bool,
        mount_timeout: float = MOUNT_TIMEOUT,
    ) -> None:
        self.long = long
        self.mount_timeout = mount_timeout
        self.cluster = cluster
        self.storages = storages
        self.rng = rng
        self._threads: list[threading.Thread] = []
        self._frozen: set[str] = set()
        self._lock = threading.Lock()
        self.source: str | None = None  # the file's source storage (kept alive unless long)

    @property
    def active(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def inject(self) -> str:
        node = self.rng.choice(self.storages)
        with self._lock:
            if node.name in self._frozen:
                return "busy"
        kind = self.rng.choice(("freeze", "freeze", "kill"))
        if kind == "kill" and not self.long and node.name == self.source:
            # Killing the source sends changes to a replica meanwhile, which the builtin
            # servers' replication does not yet reconcile (left to the long campaign).
            kind = "freeze"
        # Long ones outlast the mount's timeout: calls fail with EIO, and a change the
        # frozen storage still holds may be applied when it wakes (see the module doc).
        long = self.long and self.rng.random() >= 0.7
        hold = (
            self.rng.uniform(self.mount_timeout, self.mount_timeout + 4)
            if long
            else self.rng.uniform(0.2, 1.2)
        )
        if kind == "freeze":
            self.cluster.stop(node)
            with self._lock:
                self._frozen.add(node.name)
            thread = threading.Thread(target=self._thaw, args=(node, hold), daemon=True)
        else:
            self.cluster.kill(node)
            with self._lock:
                self._frozen.add(node.name)
            thread = threading.Thread(target=self._restart, args=(node, hold), daemon=True)
        thread.start()
        self._threads.append(thread)
        return f"{kind} {node.name} for {hold:.1f}s"

    def _thaw(self, node: Node, hold: float) -> None:
        time.sleep(hold)
        self.cluster.cont(node)
        try:
            # Over only once the storage is back in service, as after a restart: a
            # freeze that outlasted the trackers' patience makes it rejoin and catch up
            # first (the trackers send no changes to it meanwhile).
            self.cluster.wait_active([node])
        finally:
            with self._lock:
                self._frozen.discard(node.name)

    def _restart(self, node: Node, hold: float) -> None:
        time.sleep(hold)
        try:
            self.cluster.restart(node)
        finally:
            with self._lock:
                self._frozen.discard(node.name)

    def settle(self) -> None:
        for thread in self._threads:
            thread.join()
        self._threads.clear()


class _Run:
    def __init__(
        self,
        seed: int,
        cluster: Cluster,
        mount_a: Path,
        mount_b: Path | None,
        *,
        faults: bool,
        long_faults: bool,
        group: str,
        mount_timeout: float = MOUNT_TIMEOUT,
    ) -> None:
        self.rng = random.Random(seed)
        self.report = ModelReport(seed)
        self.cluster = cluster
        self.mount_a = mount_a
        self.mount_b = mount_b
        self.group = group
        self.path_a = mount_a / group / f"model-{seed}-{os.getpid()}.bin"
        self.model = bytearray()
        self.acked = bytearray()  # the last acknowledged state
        self.dirty: list[tuple[int, int]] = []  # ranges changed since then (end -1: to EOF)
        self.certain = True  # the model is the file (no failed change since)
        self.fds: dict[str, int] = {}
        self.history: list[str] = []
        storages = cluster.storages_of(group)
        self.faults = (
            _Faults(cluster, storages, self.rng, long=long_faults, mount_timeout=mount_timeout)
            if faults
            else None
        )
        self.file_id: FileId | None = None
        self.ops_in_fault = 0  # operations made since the current fault began

    # -- bookkeeping ----------------------------------------------------------

    def note(self, text: str) -> None:
        self.history.append(text)
        del self.history[:-40]

    def fail(self, message: str, kind: type[ModelFailure] = ModelFailure) -> ModelFailure:
        tail = "\n  ".join(self.history[-15:])
        return kind(
            f"seed {self.report.seed} (replay with this seed): {message}\n"
            f"  on the storages: {self.storage_sizes()}\n"
            f"  last operations:\n  {tail}"
        )

    def storage_sizes(self) -> str:
        """What each storage of the group has of the file (for failure messages), once
        they agree: replication runs behind, so storages measured at once may differ
        only because the last change has not reached a replica yet."""
        if self.file_id is None:
            return "-"
        fid, model = self.file_id, bytes(self.model)

        async def sizes() -> str:
            async with Client(self.cluster.trackers) as client:
                nodes = self.cluster.storages_of(self.group)
                waited = time.monotonic()
                while True:
                    contents = [await _content_on(client, node, fid) for node in nodes]
                    agree = len(set(contents)) == 1
                    if agree or time.monotonic() - waited > DIAGNOSIS_WAIT:
                        break
                    await trio.sleep(0.2)
            out = []
            for node, got in zip(nodes, contents, strict=True):
                same = "" if got is None else (", = model" if got == model else ", differs")
                out.append(f"{node.name}: {'none' if got is None else len(got)}{same}")
            verdict = "agree" if agree else f"still differ after {DIAGNOSIS_WAIT:g}s"
            return "; ".join(out) + f" ({verdict})"

        try:
            return trio.run(sizes)
        except Exception as exc:  # diagnostics only
            return f"unknown ({exc})"

    def timed(self, what: str, fn: Callable[..., T], *args: object) -> T:
        started = time.monotonic()
        try:
            return fn(*args)
        finally:
            took = time.monotonic() - started
            if took > self.report.slowest_call:
                self.report.slowest_call, self.report.slowest_op = took, what

    def changed(self, start: int, end: int) -> None:
        self.dirty.append((start, end))

    def acknowledge(self) -> None:
        if self.certain:
            self.acked = bytearray(self.model)
            self.dirty.clear()

    # -- descriptors -----------------------------------------------------------

    def fd(self, name: str) -> int:
        if name not in self.fds:
            flags = {"rw": os.O_RDWR, "rw2": os.O_RDWR, "app": os.O_WRONLY | os.O_APPEND,
                     "ro": os.O_RDONLY}[name]  # fmt: skip
            self.fds[name] = self.timed(f"open {name}", os.open, self.path_a, flags)
        return self.fds[name]

    def close(self, name: str) -> None:
        fd = self.fds.pop(name, None)
        if fd is not None:
            self.timed(f"close {name}", os.close, fd)

    # -- the run ----------------------------------------------------------------

    def setup(self) -> None:
        fd = os.open(self.path_a, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        self.file_id = parse_file_id(os.getxattr(self.path_a, "user.fdfs.file_id").decode())
        self.note(f"created {self.path_a.name} -> {self.file_id}")
        if self.faults is not None:
            source = decode_file_id(self.file_id).source
            self.faults.source = next(
                (n.name for n in self.faults.storages if source in (n.storage_id, n.host)), None
            )

    def step(self) -> None:
        rng = self.rng
        size = len(self.model)
        choices = [
            ("write", 30),
            ("append", 10),
            ("read", 25),
            ("truncate", 3 if size < MAX_SIZE else 25),
            ("fsync", 8),
            ("read_b", 6 if self.mount_b else 0),
            ("reopen", 4),
        ]
        if self.faults is not None and not self.faults.active:
            choices.append(("fault", 1))
        op = rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]
        self.report.counts[op] = self.report.counts.get(op, 0) + 1
        began = time.monotonic()
        try:
            getattr(self, f"op_{op}")()
        except OSError as exc:
            self.report.failed_calls += 1
            self.note(f"  -> {errno.errorcode.get(exc.errno or 0, exc.errno)}")
            if self.faults is None:
                raise self.fail(f"{op} failed without a fault: {exc}") from exc
            self.certain = False
        self.report.spent(op, began)
        self.report.ops += 1
        if self.faults is not None and self.faults.active:
            self.ops_in_fault += 1
            if self.ops_in_fault >= OPS_PER_FAULT:
                # Enough calls met this fault: wait it out, so that most operations of a
                # run are checked against the model rather than made while it is unsure.
                began = time.monotonic()
                self.faults.settle()
                self.report.spent("settle", began)
        if not self.certain and (self.faults is None or not self.faults.active):
            began = time.monotonic()
            self.resync()
            self.report.spent("resync", began)

    def _length(self) -> int:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.randint(1, 16 * KIB)
        if r < 0.95:
            return self.rng.randint(16 * KIB, 256 * KIB)
        return self.rng.randint(256 * KIB, 2 * MIB)

    def op_write(self) -> None:
        size = len(self.model)
        r = self.rng.random()
        if r < 0.5 and size:
            offset = self.rng.randrange(size)
        elif r < 0.9:
            offset = size + self.rng.randint(0, 64 * KIB)
        else:
            offset = size + self.rng.randint(64 * KIB, 3 * MIB // 2)
        data = self.rng.randbytes(self._length())
        name = self.rng.choice(("rw", "rw2"))
        self.note(f"pwrite {name} {len(data)} @ {offset}")
        self.changed(min(offset, size), offset + len(data))
        written = self.timed("pwrite", os.pwrite, self.fd(name), data, offset)
        data = data[: self.short(written, len(data))]
        if offset > size:
            self.model.extend(bytes(offset - size))
        self.model[offset : offset + len(data)] = data

    def op_append(self) -> None:
        data = self.rng.randbytes(self._length())
        self.note(f"append {len(data)}")
        self.changed(len(self.model), len(self.model) + len(data))
        written = self.timed("append", os.write, self.fd("app"), data)
        data = data[: self.short(written, len(data))]
        self.model += data

    def short(self, written: int, wanted: int) -> int:
        """A write that failed part-way returns what the kernel had sent: with faults,
        the rest met an error (the model is uncertain); without, it is a bug."""
        if written != wanted:
            self.note(f"  -> short write: {written} of {wanted}")
            if self.faults is None:
                raise self.fail(f"short write: {written} of {wanted} without a fault")
            self.report.failed_calls += 1
            self.certain = False
        return written

    def op_truncate(self) -> None:
        size = len(self.model)
        grow = self.rng.random() >= 0.8
        new = size + self.rng.randint(1, MIB) if grow else self.rng.randint(0, size)
        self.note(f"ftruncate {new}")
        if new < size:
            self.changed(new, -1)
        else:
            self.changed(size, new)
        self.timed("ftruncate", os.ftruncate, self.fd("rw"), new)
        if new < size:
            del self.model[new:]
        else:
            self.model.extend(bytes(new - size))

    def op_fsync(self) -> None:
        name = self.rng.choice(("rw", "rw2", "app"))
        self.note(f"fsync {name}")
        self.timed("fsync", os.fsync, self.fd(name))
        self.acknowledge()

    def op_reopen(self) -> None:
        name = self.rng.choice(("rw", "rw2", "app", "ro"))
        if name not in self.fds:
            return
        self.note(f"close {name}")
        self.close(name)
        if name != "ro":
            # close = 0 acknowledges what was written before it, through any descriptor
            # (the write-back is per file).
            self.acknowledge()

    def op_read(self) -> None:
        size = len(self.model)
        offset = self.rng.randint(0, size + 4 * KIB)
        length = self.rng.randint(1, 256 * KIB)
        name = self.rng.choice(("rw", "rw2", "ro"))
        self.note(f"pread {name} {length} @ {offset}")
        got = self.timed("pread", os.pread, self.fd(name), length, offset)
        self.check_read(got, offset, length, f"pread {name}")

    def op_read_b(self) -> None:
        assert self.mount_b is not None
        # What mount B sees at its next open is what A has acknowledged.
        self.op_fsync()
        path = self.mount_b / str(self.file_id)
        self.note(f"open+read on mount B ({len(self.model)} bytes)")
        fd = self.timed("open B", os.open, path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if self.certain and size != len(self.model):
                raise self.fail(f"mount B shows {size} bytes, the model has {len(self.model)}")
            offset = self.rng.randint(0, max(0, size - 1)) if size else 0
            length = self.rng.randint(1, 512 * KIB)
            got = self.timed("pread B", os.pread, fd, length, offset)
            self.check_read(got, offset, length, "pread on mount B")
        finally:
            os.close(fd)

    def check_read(self, got: bytes, offset: int, length: int, what: str) -> None:
        if not self.certain:
            return
        want = bytes(self.model[offset : offset + length])
        self.report.reads_checked += 1
        if got != want:
            first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                         min(len(got), len(want)))  # fmt: skip
            raise self.fail(
                f"{what} {length} @ {offset}: got {len(got)} bytes, want {len(want)}; "
                f"first difference at {offset + first}"
            )

    def op_fault(self) -> None:
        assert self.faults is not None
        what = self.faults.inject()
        self.ops_in_fault = 0
        self.report.faults += 1
        self.note(f"FAULT {what}")
        # Buffered writes may now be dropped (reported at the next fsync): until the
        # fault is over and the file is read back, the model is not the file.
        self.certain = False

    # -- after a failure ----------------------------------------------------------

    def resync(self) -> None:
        """Faults are over: the errors are reported, the file is what the storage has.
        Check that it keeps every acknowledged byte, and take it as the model."""
        deadline = time.monotonic() + REPLICATION_WAIT
        for name in list(self.fds):
            while True:
                try:
                    os.fsync(self.fds[name])
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise self.fail(f"fsync of {name} still fails after the faults") from None
                    time.sleep(0.2)
        actual = self.read_whole(self.path_a)
        self.check_acknowledged(actual, "through mount A after a fault")
        self.note(f"resync: the file has {len(actual)} bytes")
        self.model = bytearray(actual)
        self.certain = True
        self.acknowledge()

    def read_whole(self, path: Path) -> bytes:
        deadline = time.monotonic() + REPLICATION_WAIT
        while True:
            try:
                with open(path, "rb", buffering=0) as f:
                    return f.readall()  # (a None from read would be an EAGAIN)
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise self.fail(f"{path.name} unreadable after the faults: {exc}") from exc
                time.sleep(0.2)

    def check_acknowledged(self, actual: bytes, where: str) -> None:
        """Every acknowledged byte that nothing changed since is in `actual`."""
        keep = len(self.acked)
        for start, end in self.dirty:
            if end == -1:
                keep = min(keep, start)
        if len(actual) < keep:
            raise self.fail(f"{where}: {len(actual)} bytes, {keep} were acknowledged")
        pos = 0
        for start, end in sorted((s, e) for s, e in self.dirty if e != -1):
            self._compare(actual, pos, min(start, keep), where)
            pos = max(pos, end)
        self._compare(actual, pos, keep, where)

    def _compare(self, actual: bytes, start: int, end: int, where: str) -> None:
        if start < end and actual[start:end] != self.acked[start:end]:
            first = next(i for i in range(start, end) if actual[i] != self.acked[i])
            raise self.fail(f"{where}: acknowledged byte {first} lost (range {start}..{end})")

    def finish(self) -> None:
        if self.faults is not None:
            self.faults.settle()
        if not self.certain:
            self.resync()
        for name in list(self.fds):
            self.note(f"close {name}")
            self.close(name)
        self.acknowledge()
        self.report.bytes_acknowledged = len(self.acked)
        actual = self.read_whole(self.path_a)
        if actual != bytes(self.model):
            self.check_acknowledged(actual, "through mount A at the end")
            raise self.fail(
                f"through mount A at the end: {len(actual)} bytes differ from the model"
            )
        self.check_replicas()

    def check_replicas(self) -> None:
        assert self.file_id is not None
        fid, want = self.file_id, bytes(self.model)

        async def check() -> str | None:
            async with Client(self.cluster.trackers) as client:
                for node in self.cluster.storages_of(self.group):
                    got: bytes | None = None
                    with trio.move_on_after(REPLICATION_WAIT):
                        while True:
                            got = await _content_on(client, node, fid)
                            if got == want:
                                break
                            await trio.sleep(0.2)
                    if got != want:
                        size = "no file" if got is None else f"{len(got)} bytes"
                        return f"storage {node.name} has {size}, {len(want)} acknowledged"
            return None

        # A replica applying the last changes may shrink the file under a download and
        # close the connection; the client then warns and this loop asks again.
        with _quiet(*REPLICA_POLL_LOGGERS):
            problem = trio.run(check)
        if problem is not None:
            raise self.fail(f"{fid}: {problem}", ReplicaDiverged)

    def cleanup(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
        if self.faults is not None:
            self.faults.settle()
        with contextlib.suppress(OSError):
            self.path_a.unlink()


#: Loggers whose warnings about a replica dropping a download are expected while
#: replicas are polled until they hold the acknowledged bytes.
REPLICA_POLL_LOGGERS = ("fdfsmount.proto.download", "fdfsmount.proto.client")


class _DropWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno != logging.WARNING


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Drop WARNING records of the named loggers (not their errors: those still count)."""
    drop = _DropWarnings()
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


async def _content_on(client: Client, node: Node, fid: FileId) -> bytes | None:
    from fdfsmount.proto import ServerAddr

    addr = ServerAddr(node.host, node.port)
    try:
        with trio.fail_after(10):
            size = (await client.info(fid, calc_crc32=False, servers=[addr])).size
            return bytes(await client.read_range(fid, 0, size, servers=[addr])) if size else b""
    except FileNotFound:
        return None
    except Exception:
        return b"<unreadable>"


def run_model(
    seed: int,
    cluster: Cluster,
    mount_a: Path,
    mount_b: Path | None = None,
    *,
    ops: int = 300,
    faults: bool = False,
    long_faults: bool = True,
    group: str = "group1",
    mount_timeout: float = MOUNT_TIMEOUT,
) -> ModelReport:
    """`ops` random operations with `seed`; raises `ModelFailure` naming the seed."""
    run = _Run(
        seed,
        cluster,
        mount_a,
        mount_b,
        faults=faults,
        long_faults=long_faults,
        group=group,
        mount_timeout=mount_timeout,
    )
    try:
        run.setup()
        for _ in range(ops):
            run.step()
        began = time.monotonic()
        run.finish()
        run.report.spent("finish", began)
    finally:
        run.cleanup()
    log.info("%s", run.report.line())
    return run.report
