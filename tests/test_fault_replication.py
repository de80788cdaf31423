"""Fault campaign, replica side: acknowledged changes survive storages killed, frozen, restarted.

Client-level and seeded (see `replica_campaign`); short here, long with
``python bench/fault_replication.py --seeds 20 --ops 5000``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from replica_campaign import run_campaign

from harness.cluster import Cluster

pytestmark = [pytest.mark.fault, pytest.mark.slow]


@pytest.fixture
async def pair_cluster() -> AsyncIterator[Cluster]:
    async with Cluster(groups={"group1": 2}, heartbeat_interval=0.5, offline_after=1.5) as c:
        yield c


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.deadline(600)
async def test_acknowledged_changes_reach_every_replica(pair_cluster: Cluster, seed: int) -> None:
    result = await run_campaign(pair_cluster, seed, ops=120)
    assert result.faults, "the schedule must inject faults"
    assert result.lost == {}, result.summary()
