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


# First: xdist's own hook reads the groups given here, and -m deselects by the
# `processes` marker given here.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the `processes` tier; group and order the tests for the workers; bound every
    async test body by a trio deadline."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _PROCESS_FIXTURES or item.get_closest_marker("mount"):
            item.add_marker(pytest.mark.processes)
    _order_for_workers(items)
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
#: Modules of independent tests that each start their own cluster: their tests
#: are shared out between the workers one by one. Every other module runs whole
#: on one worker, so its module fixtures (a mount, a 256 MiB file) are made once.
_SHARED_OUT = frozenset(
    {
        "tests/test_cluster.py",
        "tests/test_harness_replication.py",
        "tests/test_fault_replication.py",
    }
)


def _scope_of(nodeid: str) -> str:
    """The unit of work a worker takes: a test of a shared-out module, else a module."""
    module = nodeid.split("::", 1)[0]
    return nodeid if module in _SHARED_OUT else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with our units of work (scripts/test.sh)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class CostOrderedScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope_of(nodeid)

    return CostOrderedScopes(config, log)


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


def _order_for_workers(items: list[pytest.Item]) -> None:
    """Put the costliest units of work first.

    With ``--dist loadscope --no-loadscope-reorder`` (scripts/test.sh) the workers
    take the units (`_scope_of`) in collection order: long ones then start first
    instead of last, which leaves no worker idle at the end while another runs a
    long module alone.
    """
    costs = _costs(items)
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(_scope_of(item.nodeid), []).append(item)
        if item.nodeid.split("::", 1)[0] in _SHARED_OUT and _shares_module_fixture(item):
            raise pytest.UsageError(
                f"{item.nodeid} uses a module-scoped fixture, but its module is in "
                "_SHARED_OUT (its tests are shared out between workers): take it out"
            )
    ranked = sorted(units.values(), key=lambda unit: -sum(costs[id(i)] for i in unit))
    items[:] = [item for unit in ranked for item in unit]


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
