"""One user call, one deadline: a lookup never waits for the tracker and then for a storage
in turn, and the kernel's second lookup after a failed check of a cached name fails at once."""

from __future__ import annotations

import errno

import pyfuse3
import pytest
import trio
import trio.testing
from opshelp import CTX, Env, expect_errno, make_env, requests, walk
from waiting import eventually

from fdfsmount.namespace import GROUPS_TTL, GroupDirectory
from fdfsmount.proto import GroupStat
from harness.pytest_plugin import ClusterFactory

pytestmark = pytest.mark.processes  # starts servers, mounts or programs


async def test_a_known_group_list_is_served_while_its_refresh_waits(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    calls = 0

    async def list_groups() -> list[GroupStat]:
        nonlocal calls
        calls += 1
        if calls > 1:
            await trio.sleep_forever()  # a frozen tracker
        return [GroupStat("group1", 100, 50)]

    groups = GroupDirectory(list_groups, nursery=nursery)
    assert set(await groups.all()) == {"group1"}
    await trio.sleep(GROUPS_TTL + 1)
    before = trio.current_time()
    stat = await groups.get("group1")  # old list, at once; the refresh runs behind
    assert stat is not None and stat.group_name == "group1"
    assert trio.current_time() == before
    await trio.testing.wait_all_tasks_blocked()
    assert calls == 2
    # A name the list lacks must wait for the tracker: that is the one wait.
    with trio.move_on_after(5) as waited:
        await groups.get("group9")
    assert waited.cancelled_caught


@pytest.mark.expect_log_warnings
async def test_a_failed_lookup_fails_again_at_once_for_the_kernels_retry(
    fdfs_cluster_factory: ClusterFactory, nursery: trio.Nursery
) -> None:
    cluster = await fdfs_cluster_factory.start_async(groups={"group1": 1})
    (storage,) = cluster.storages_of("group1")
    async for env in make_env(cluster, nursery, timeout=2.0, exists_ttl=0.0):
        fid = await env.client.upload(b"frozen soon", ext="txt", group="group1")
        assert (await walk(env.ops, str(fid))).st_size == 11
        leaf = await walk(env.ops, str(fid).rsplit("/", 1)[0])
        cluster.stop(storage)

        async def lookup_fails(
            env: Env = env, parent: int = leaf.st_ino, name: bytes = fid.name.encode()
        ) -> bool:
            # A request the storage answered just before it stopped may still be
            # in flight, and a lookup then shares its answer: ask until one waits
            # out the timeout.
            try:
                await env.ops.lookup(parent, name, CTX)
            except pyfuse3.FUSEError as exc:
                assert exc.errno == errno.EIO, exc
                return True
            return False

        try:
            with trio.fail_after(30):
                await eventually(lookup_fails, what="a lookup to time out")
            asked = requests(env.client)
            # The kernel's fresh lookup after a failed revalidation: no second wait,
            # not a single request.
            await expect_errno(errno.EIO, env.ops.lookup(leaf.st_ino, fid.name.encode(), CTX))
            assert requests(env.client) == asked
        finally:
            cluster.cont(storage)

        async def found_again(env: Env = env, path: str = str(fid)) -> bool:
            try:  # the failure is remembered for a moment only
                return (await walk(env.ops, path)).st_size == 11
            except pyfuse3.FUSEError:
                return False

        await eventually(found_again, what="the lookup to reach the storage again")
