"""Fixtures shared by the test modules (the cluster ones come from the harness plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from opshelp import Env, make_env

from harness.cluster import Cluster


@pytest.fixture
def cluster(fdfs_cluster: Cluster) -> Cluster:
    """The session's shared cluster (group1 with 2 storages, group2 with 1)."""
    if set(fdfs_cluster.groups) < {"group1", "group2"}:
        pytest.skip("needs the default groups group1 and group2")
    return fdfs_cluster


@pytest.fixture
async def env(cluster: Cluster, nursery: trio.Nursery) -> AsyncIterator[Env]:
    """`Operations` wired as the mount wires them, over their own client."""
    async for e in make_env(cluster, nursery):
        yield e
