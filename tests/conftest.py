"""Fixtures shared by the test modules (the cluster ones come from the harness plugin)."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
from opshelp import Env, make_env
from scripted_peer import ScriptedNetwork, ScriptedServer

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


#: Seconds an async test body may run before it fails with `trio.TooSlowError`;
#: ``@pytest.mark.deadline(seconds)`` changes it for one test.
DEFAULT_DEADLINE = 90.0


def _with_deadline(
    test: Callable[..., Awaitable[Any]], seconds: float
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        with trio.fail_after(seconds):
            return await test(*args, **kwargs)

    return bounded


#: Fixtures that start OS processes (a cluster, a mount): their tests are the
#: `processes` tier, which the quick inner loop (`-m "not processes"`) leaves out.
_PROCESS_FIXTURES = {"fdfs_cluster", "fdfs_cluster_factory", "fdfs_client", "fdfs_mount"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the `processes` tier; bound every async test body by a trio deadline."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _PROCESS_FIXTURES or item.get_closest_marker("mount"):
            item.add_marker(pytest.mark.processes)
    for item in items:
        test = getattr(item, "obj", None)
        # Hypothesis tests are wrapped by pytest-trio one level down; leave them be.
        if not inspect.iscoroutinefunction(test) or hasattr(test, "hypothesis"):
            continue
        if {"autojump_clock", "mock_clock"} & set(getattr(item, "fixturenames", ())):
            continue  # a deadline would be measured on the mock clock, which the test moves
        marker = item.get_closest_marker("deadline")
        seconds = float(marker.args[0]) if marker else DEFAULT_DEADLINE
        item.obj = _with_deadline(test, seconds)  # type: ignore[attr-defined]


#: Loggers of the project: an unexpected WARNING from them fails the test.
_CHECKED_LOGGERS = ("fdfsmount", "harness")


@pytest.fixture(autouse=True)
def check_logs(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test whose own code path logged a WARNING or worse it did not ask for.

    Tests that provoke failures on purpose (dead replicas, refused writes,
    malformed replies) say so with ``@pytest.mark.expect_log_warnings``.
    """
    yield
    if request.node.get_closest_marker("expect_log_warnings"):
        return
    unexpected = [
        r
        for r in caplog.get_records("call")
        if r.levelno >= logging.WARNING and r.name.startswith(_CHECKED_LOGGERS)
    ]
    if unexpected:
        lines = "\n".join(f"  {r.levelname} {r.name}: {r.getMessage()}" for r in unexpected[:10])
        pytest.fail(f"unexpected log warnings (mark the test expect_log_warnings):\n{lines}")


# -- a scripted network of golden-replaying peers (client and CLI tests) -------


@pytest.fixture
def net() -> Iterator[ScriptedNetwork]:
    network = ScriptedNetwork()
    yield network
    assert not network.unexpected(), "requests no golden record matched"


@pytest.fixture
def tracker(net: ScriptedNetwork) -> ScriptedServer:
    return net.add("127.0.0.1", 22122)


@pytest.fixture
def s0(net: ScriptedNetwork) -> ScriptedServer:
    return net.add("127.0.0.1", 23000)


@pytest.fixture
def s1(net: ScriptedNetwork) -> ScriptedServer:
    return net.add("127.0.0.1", 23001)
