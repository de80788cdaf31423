"""A builtin cluster inside the calling trio run: tracker and storages as tasks, no processes.

For tests that drive `fdfsmount` objects directly (the `Operations` tier): the
servers are the same `TrackerServer` and `StorageServer` that ``Cluster`` runs
as OS processes, started in the caller's nursery with ``task_status``, on
loopback ports the kernel picks, with their data in a directory the caller
owns. Nothing outlives the nursery, and nothing can be stopped or frozen:
fault tests need `harness.cluster.Cluster`.

Readiness is what a client sees: the tracker lists every storage ACTIVE.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from fdfsmount.proto.client import Client
from fdfsmount.proto.constants import StorageStatus
from fdfsmount.proto.errors import FileNotFound

from .storage import StorageConfig, StorageServer
from .tracker import TrackerServer

log = logging.getLogger(__name__)

DEFAULT_GROUPS: Mapping[str, int] = {"group1": 2, "group2": 1}
TRACKER_HOST = "127.0.0.2"
FIRST_STORAGE_ID = 100001


@dataclass
class InProcessNode:
    """One storage task: the address and id the tracker knows it by."""

    name: str
    group: str
    host: str
    port: int
    storage_id: str
    base_dir: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class InProcessCluster:
    """The running servers; the same read-only view tests take of a `Cluster`."""

    backend_name = "builtin"

    def __init__(self, tracker: str, storages: list[InProcessNode]) -> None:
        self.trackers = [tracker]
        self.storages = storages
        self.groups = {s.group: len(self.storages_of(s.group)) for s in storages}

    def storages_of(self, group: str) -> list[InProcessNode]:
        return [s for s in self.storages if s.group == group]


async def start_inprocess_cluster(
    nursery: trio.Nursery,
    base_dir: Path,
    groups: Mapping[str, int] = DEFAULT_GROUPS,
    *,
    heartbeat_interval: float = 0.2,
    subdirs: int = 256,
    ready_timeout: float = 30.0,
) -> InProcessCluster:
    """Start a tracker and the storages of ``groups`` in ``nursery``; return once all are ACTIVE.

    The servers run until ``nursery`` is cancelled or closes. Storages are in
    storage-id mode, each on its own 127.0.0.x address.
    """
    tracker = TrackerServer(TRACKER_HOST, 0, base_dir / "tracker")
    tracker_port: int = await nursery.start(tracker.run)
    tracker_addr = f"{TRACKER_HOST}:{tracker_port}"
    nodes: list[InProcessNode] = []
    k = 0
    for group, count in groups.items():
        for j in range(count):
            host = f"127.0.0.{10 + k}"
            name = f"{group}-storage{j + 1}"
            config = StorageConfig(
                group=group, bind=host, port=0, base_dir=base_dir / name,
                trackers=[(TRACKER_HOST, tracker_port)], storage_id=str(FIRST_STORAGE_ID + k),
                subdirs=subdirs, heartbeat_interval=heartbeat_interval, id_in_filename="id",
            )  # fmt: skip
            port: int = await nursery.start(StorageServer(config).run)
            nodes.append(InProcessNode(name, group, host, port, config.server_id, config.base_dir))
            k += 1
    cluster = InProcessCluster(tracker_addr, nodes)
    with trio.fail_after(ready_timeout):
        await _wait_active(cluster)
    log.debug("in-process cluster ready: tracker %s, %d storages", tracker_addr, len(nodes))
    return cluster


async def _wait_active(cluster: InProcessCluster) -> None:
    async with Client(cluster.trackers) as client:
        for group in cluster.groups:
            want = {s.storage_id for s in cluster.storages_of(group)}
            while True:
                try:
                    listed = await client.list_storages(group)
                except FileNotFound:  # no storage of the group has joined yet
                    listed = []
                active = {s.storage_id for s in listed if s.status == StorageStatus.ACTIVE}
                if want <= active:
                    break
                await trio.sleep(0.02)
