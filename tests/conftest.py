"""Fixtures shared by the test modules (the cluster ones come from the harness plugin)."""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
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
    """Mark the `processes` tier; group and order the tests for the workers; bound every
    async test body by a trio deadline."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _PROCESS_FIXTURES or item.get_closest_marker("mount"):
            item.add_marker(pytest.mark.processes)
    _group_for_workers(items)
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


#: Seconds each test took in a measured run (written by scripts/test_costs.py):
#: tests of 0.3 s or more one by one, the others as a total per module.
_COSTS: dict[str, dict[str, float]] = json.loads(
    (Path(__file__).with_name("test_costs.json")).read_text()
)
#: The guess for a test the measured run did not have.
_COST_SLOW, _COST_PROCESSES, _COST_IN_PROCESS = 5.0, 1.0, 0.005
#: A module costing more than this is shared out in chunks of about this size,
#: unless its tests share a module-scoped fixture (a mount, a cluster).
_CHUNK_COST = 12.0


def _guess(item: pytest.Item) -> float:
    if item.get_closest_marker("slow"):
        return _COST_SLOW
    return _COST_PROCESSES if item.get_closest_marker("processes") else _COST_IN_PROCESS


def _costs(items: list[pytest.Item]) -> dict[int, float]:
    """Seconds per test (by id of the item): measured where known, else guessed."""
    single = _COSTS["tests"]
    rest: dict[str, list[pytest.Item]] = {}
    out: dict[int, float] = {}
    for item in items:
        if item.nodeid in single:
            out[id(item)] = single[item.nodeid]
        else:
            rest.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    for module, members in rest.items():
        total = _COSTS["modules"].get(module)
        for item in members:
            out[id(item)] = _guess(item) if total is None else total / len(members)
    return out


def _shares_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(d.scope == "module" for defs in info.name2fixturedefs.values() for d in defs)


def _group_for_workers(items: list[pytest.Item]) -> None:
    """Give each test an ``xdist_group`` and put the costliest groups first.

    With ``--dist loadgroup --no-loadscope-reorder`` (scripts/test.sh) a group runs
    on one worker, so a module's fixtures are set up once, and the workers take
    the groups in this order: long groups start first instead of last, and a
    module of many independent cluster tests is shared out between workers.
    """
    costs = _costs(items)

    def _cost(item: pytest.Item) -> float:
        return costs[id(item)]

    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    groups: list[tuple[float, str, list[pytest.Item]]] = []
    for path, members in modules.items():
        name = path.rsplit("/", 1)[-1].removesuffix(".py")
        total = sum(_cost(i) for i in members)
        if total <= _CHUNK_COST or any(_shares_module_fixture(i) for i in members):
            groups.append((total, name, members))
            continue
        chunks = max(2, round(total / _CHUNK_COST))
        shares: list[list[pytest.Item]] = [[] for _ in range(chunks)]
        loads = [0.0] * chunks
        for item in sorted(members, key=_cost, reverse=True):  # longest first, to the lightest
            k = loads.index(min(loads))
            shares[k].append(item)
            loads[k] += _cost(item)
        position = {id(item): n for n, item in enumerate(members)}
        for k, share in enumerate(shares):
            share.sort(key=lambda item: position[id(item)])
            groups.append((loads[k], f"{name}-{k + 1}", share))
    groups.sort(key=lambda g: -g[0])
    items[:] = [item for _, _, members in groups for item in members]
    for _, name, members in groups:
        for item in members:
            item.add_marker(pytest.mark.xdist_group(name))


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
