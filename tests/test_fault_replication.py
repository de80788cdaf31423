"""Fault campaign, replica side: acknowledged changes survive storages killed, frozen, restarted.

Client-level and seeded (see `replica_campaign`); short here, long with
``python bench/fault_replication.py --seeds 20 --ops 5000``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import trio
from replica_campaign import run_campaign
from waiting import eventually

from fdfsmount.proto.client import Client
from fdfsmount.proto.errors import FdfsError
from fdfsmount.proto.fileid import decode_file_id
from fdfsmount.proto.message import ServerAddr
from harness.cluster import Cluster

pytestmark = [pytest.mark.processes, pytest.mark.fault, pytest.mark.slow]


@pytest.fixture
async def pair_cluster() -> AsyncIterator[Cluster]:
    async with Cluster(groups={"group1": 2}, heartbeat_interval=0.5, offline_after=1.5) as c:
        yield c


@pytest.fixture(params=["builtin", pytest.param("native", marks=pytest.mark.native)])
async def any_pair_cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    kwargs = {"subdirs": 16} if request.param == "native" else {"heartbeat_interval": 0.5}
    async with Cluster(
        groups={"group1": 2}, backend=request.param, offline_after=1.5, **kwargs
    ) as c:
        yield c


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.deadline(600)
async def test_acknowledged_changes_reach_every_replica(pair_cluster: Cluster, seed: int) -> None:
    result = await run_campaign(pair_cluster, seed, ops=120)
    assert result.faults, "the schedule must inject faults"
    assert result.lost == {}, result.summary()


@pytest.mark.deadline(120)
async def test_client_never_reads_an_old_version_after_the_source_crashes(
    any_pair_cluster: Cluster,
) -> None:
    """Right after an acknowledged append the source dies: old bytes are never served.

    Upstream 6.16.1 (native) routes reads to the replica as soon as it notices
    the source is gone, caught up or not, and so serves the old version.
    """
    cluster = any_pair_cluster
    upstream = cluster.backend_name == "native"
    async with Client(cluster.trackers, connect_timeout=1.0, network_timeout=3.0) as client:
        old = os.urandom(4096)
        fid = await client.upload(old, ext="bin", appender=True)
        source = next(
            n for n in cluster.storages if n.storage_id == str(decode_file_id(fid).source_id)
        )
        (replica,) = [n for n in cluster.storages if n is not source]
        addr = ServerAddr(replica.host, replica.port)

        async def replica_has_it() -> bool:
            try:
                return await client.read_range(fid, 0, 8192, servers=[addr]) == old
            except FdfsError:
                return False

        await eventually(replica_has_it, what="the replica holding the upload")
        created = decode_file_id(fid).create_time

        async def replica_past_creation() -> bool:
            # By timestamps alone the replica now looks caught up with the source.
            stats = await client.list_storages("group1", replica.storage_id)
            return stats[0].counters.get("last_synced_timestamp", 0) > created

        if not upstream:  # upstream needs no such progress to route to the replica
            await eventually(replica_past_creation, what="the replica reporting progress")
        new = os.urandom(4096)
        cluster.stop(replica)  # it cannot pull the append below
        try:
            await client.append(fid, new)
            cluster.kill(source)
        finally:
            cluster.cont(replica)
        await cluster.wait_offline_async([source])
        for _ in range(20):  # a few of the replica's heartbeats
            try:
                data = await client.download(fid)
            except FdfsError:
                pass  # unavailable is fine
            else:
                if upstream and data == old:
                    pytest.xfail("upstream 6.16.1 serves the old version (known quirk)")
                assert data == old + new, "the old version was served"
            await trio.sleep(0.1)
        await cluster.restart_async(source)
        assert await client.download(fid) == old + new
