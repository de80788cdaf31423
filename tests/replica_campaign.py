"""Replica convergence under faults: seeded appends, modifies and truncates on appender files.

# Strategy
One client changes a few appender files of a two-storage group through the
tracker's routing (QUERY_UPDATE each time, as every FastDFS client does)
while a seeded schedule kills, freezes (SIGSTOP) and restarts storages. A
change counts once a storage acknowledged it; a refused or timed-out one is
retried until one does, so every change must be idempotent: an append is
retried as a modify at the offset it was meant for, a modify or truncate is
simply sent again. A local model holds what was acknowledged. At the end
every storage is read directly (not through routing) and must hold exactly
the model's bytes: a byte acknowledged to the client and missing or
different on any replica counts as lost.

The same seed gives the same operations, data and fault schedule, so a
failing run replays with its seed (timing still varies: the servers run in
other processes).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from fdfsmount.proto.client import Client
from fdfsmount.proto.errors import FdfsError
from fdfsmount.proto.fileid import FileId
from fdfsmount.proto.message import ServerAddr
from harness.cluster import Cluster, Node

log = logging.getLogger(__name__)

BLOCK = 4096
#: Bound for one attempt of one call (the client's own timeouts are shorter).
ATTEMPT_TIMEOUT = 6.0
#: Bound for getting one change acknowledged, retries included.
CHANGE_DEADLINE = 60.0
#: Bound for every replica to hold the model once the faults are over.
CONVERGE_DEADLINE = 60.0
#: A change refused this long ends the current fault (the operator repairs the node):
#: with the only copy of the newest acknowledged version on a dead source, waiting is right.
FAULT_PATIENCE = 5.0


class CampaignFailure(AssertionError):
    pass


@dataclass
class CampaignResult:
    seed: int
    ops: int
    faults: list[str] = field(default_factory=list)
    retries: int = 0
    #: Per file ID and storage: acknowledged bytes missing or different there.
    lost: dict[str, int] = field(default_factory=dict)
    slowest_change: float = 0.0
    acknowledged_bytes: int = 0

    @property
    def lost_bytes(self) -> int:
        return sum(self.lost.values())

    def summary(self) -> str:
        return (
            f"seed {self.seed}: {self.ops} changes ({self.acknowledged_bytes} bytes acknowledged),"
            f" {len(self.faults)} faults, {self.retries} retries,"
            f" slowest change {self.slowest_change:.1f} s, lost bytes {self.lost_bytes}"
        )


@dataclass
class _Fault:
    kind: str  # "kill", "stop" or "restart"
    node: Node
    ends_at: int  # op index


class Campaign:
    def __init__(
        self,
        cluster: Cluster,
        client: Client,
        seed: int,
        ops: int,
        files: int = 3,
        *,
        truncates: bool = True,
    ):
        self.cluster = cluster
        self.client = client
        self.rng = random.Random(seed)
        self.result = CampaignResult(seed, ops)
        self.file_count = files
        self.models: dict[FileId, bytearray] = {}
        self.fault: _Fault | None = None
        self.truncates = truncates

    # ------------------------------------------------------------ changes

    async def _until_acknowledged(self, what: str, call: Callable[[], Awaitable[None]]) -> None:
        started = time.monotonic()
        deadline = started + CHANGE_DEADLINE
        while True:
            try:
                with trio.fail_after(ATTEMPT_TIMEOUT):
                    await call()
                break
            except (FdfsError, trio.TooSlowError, OSError) as exc:
                self.result.retries += 1
                if self.fault is not None and time.monotonic() - started > FAULT_PATIENCE:
                    with trio.CancelScope(shield=True):
                        await self._end_fault()
                if time.monotonic() > deadline:
                    raise CampaignFailure(f"seed {self.result.seed}: {what}: {exc}") from exc
                log.debug("%s not acknowledged (%s); retrying", what, exc)
                await trio.sleep(0.1)
        self.result.slowest_change = max(self.result.slowest_change, time.monotonic() - started)

    async def append(self, fid: FileId, data: bytes) -> None:
        model = self.models[fid]
        offset = len(model)
        first = True

        async def attempt() -> None:
            nonlocal first
            if first:
                first = False
                await self.client.append(fid, data)
            else:
                # The first try may have landed: a modify at the same offset is idempotent.
                await self.client.modify(fid, offset, data)

        await self._until_acknowledged(f"append {len(data)} to {fid}", attempt)
        model += data

    async def modify(self, fid: FileId, offset: int, data: bytes) -> None:
        await self._until_acknowledged(
            f"modify {fid} at {offset}", lambda: self.client.modify(fid, offset, data)
        )
        model = self.models[fid]
        model[offset : offset + len(data)] = data

    async def truncate(self, fid: FileId, size: int) -> None:
        await self._until_acknowledged(
            f"truncate {fid} to {size}", lambda: self.client.truncate(fid, size)
        )
        model = self.models[fid]
        del model[size:]
        model.extend(bytes(size - len(model)))

    # ------------------------------------------------------------ faults

    async def _end_fault(self) -> None:
        fault, self.fault = self.fault, None
        if fault is None:
            return
        log.info("fault ends: %s %s", fault.kind, fault.node.name)
        if fault.kind == "kill":
            await self.cluster.restart_async(fault.node, wait=False)
        elif fault.kind == "stop":
            await trio.to_thread.run_sync(self.cluster.cont, fault.node)

    async def _maybe_fault(self, index: int) -> None:
        fault = self.fault
        if fault is not None and index >= fault.ends_at:
            await self._end_fault()
            return
        if fault is not None or self.rng.random() > 0.04:
            return
        storages = self.cluster.storages_of("group1")
        node = self.rng.choice(storages)
        kind = self.rng.choice(["kill", "stop", "restart"])
        duration = self.rng.randrange(3, 25)
        self.result.faults.append(f"op {index}: {kind} {node.name} for {duration} ops")
        log.info("fault at op %d: %s %s", index, kind, node.name)
        if kind == "kill":
            await trio.to_thread.run_sync(self.cluster.kill, node)
        elif kind == "stop":
            await trio.to_thread.run_sync(self.cluster.stop, node)
        else:
            await self.cluster.restart_async(node, wait=False)
        self.fault = _Fault(kind, node, index + duration)

    async def _end_faults(self) -> None:
        await self._end_fault()
        await self.cluster.wait_active_async(self.cluster.storages)

    # ------------------------------------------------------------ run

    async def run(self) -> CampaignResult:
        for _ in range(self.file_count):
            data = self.rng.randbytes(BLOCK)
            fid = await self.client.upload(data, ext="bin", appender=True)
            self.models[fid] = bytearray(data)
        files = list(self.models)
        try:
            for index in range(self.result.ops):
                await self._maybe_fault(index)
                fid = self.rng.choice(files)
                size = len(self.models[fid])
                choice = self.rng.random()
                data = self.rng.randbytes(BLOCK)
                if choice < 0.5 or size < BLOCK:
                    await self.append(fid, data)
                elif choice < 0.9 or not self.truncates:
                    offset = self.rng.randrange(0, size // BLOCK + 1) * BLOCK
                    await self.modify(fid, offset, data)
                else:
                    await self.truncate(fid, self.rng.randrange(1, size // BLOCK + 1) * BLOCK)
                self.result.acknowledged_bytes += len(data)
        finally:
            with trio.CancelScope(shield=True):
                await self._end_faults()
        await self.check_replicas()
        return self.result

    async def check_replicas(self) -> None:
        """Every storage holds every file exactly as acknowledged (bounded wait)."""
        storages = self.cluster.storages_of("group1")
        deadline = time.monotonic() + CONVERGE_DEADLINE
        for fid, model in self.models.items():
            for node in storages:
                addr = ServerAddr(node.host, node.port)
                while True:
                    held = await self._read_replica(fid, addr, len(model))
                    lost = _differing_bytes(model, held)
                    if not lost or time.monotonic() > deadline:
                        break
                    await trio.sleep(0.2)
                if lost:
                    self.result.lost[f"{fid} on {node.name}"] = lost

    async def _read_replica(self, fid: FileId, addr: ServerAddr, size: int) -> bytes | None:
        try:
            with trio.fail_after(ATTEMPT_TIMEOUT):
                return bytes(await self.client.read_range(fid, 0, size + BLOCK, servers=[addr]))
        except (FdfsError, trio.TooSlowError, OSError):
            return None


def _differing_bytes(model: bytes | bytearray, held: bytes | None) -> int:
    if held is None:
        return len(model) or 1
    if held == model:
        return 0
    common = min(len(model), len(held))
    diff = sum(1 for a, b in zip(model[:common], held[:common], strict=True) if a != b)
    return diff + abs(len(model) - len(held))


async def run_campaign(
    cluster: Cluster, seed: int, ops: int, files: int = 3, *, truncates: bool = True
) -> CampaignResult:
    client = Client(cluster.trackers, connect_timeout=1.0, network_timeout=3.0)
    try:
        return await Campaign(cluster, client, seed, ops, files, truncates=truncates).run()
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
