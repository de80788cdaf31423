"""pytest plugin: FastDFS cluster fixtures (loaded through the ``pytest11`` entry point).

Fixtures:

``fdfs_cluster`` (session)
    A `harness.cluster.Cluster`, started the first time a test asks for it and
    torn down at the end of the session. Shared: do not kill or stop its nodes,
    use ``fdfs_cluster_factory`` for fault tests.
``fdfs_client`` (function, trio)
    An ``fdfsmount.proto.client.Client`` connected to ``fdfs_cluster``.
``fdfs_mount`` (function)
    An fdfsmount (``fdfsmount.mountproc.MountProcess``; the tree is at its
    ``.mountpoint``) over ``fdfs_cluster``, run ``-f`` in a child process
    and always unmounted afterwards, pass or fail. Options for a test go
    through ``@pytest.mark.fdfs_mount_options("nolist", "timeout=5")``.
    Skipped where FUSE is not available.
``fdfs_cluster_factory`` (function)
    ``fdfs_cluster_factory(groups={"g": 3}, ...)`` starts a cluster (keyword
    arguments of `Cluster`); ``await fdfs_cluster_factory.start_async(...)``
    does the same from a trio test without blocking the event loop. Every
    cluster it made is torn down when the test ends, pass or fail.

Configuration (command line wins over ini): ``--fdfs-backend builtin|native``
(ini ``fdfs_backend``), ``--fdfs-groups group1:2,group2:1`` (``fdfs_groups``),
``--fdfs-trackers N`` (``fdfs_trackers``). Tests marked ``native`` are skipped
when the upstream servers are not installed.

Heavy imports (the cluster code, the client) happen only when a fixture is
used, so this plugin loads in any pytest run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import pytest

if TYPE_CHECKING:
    from fdfsmount.mountproc import MountProcess
    from fdfsmount.proto.client import Client

    from .cluster import Cluster


def _trio_fixture_decorator() -> Callable[[Callable[..., Any]], Any] | None:
    try:
        from pytest_trio import trio_fixture  # type: ignore[import-untyped]
    except ImportError:  # pytest-trio is in the test extras; without it no fdfs_client
        return None
    return cast(Callable[[Callable[..., Any]], Any], trio_fixture)


_DEFAULT_BACKEND = "builtin"
_DEFAULT_GROUPS = "group1:2,group2:1"
_DEFAULT_TRACKERS = "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fdfs", "FastDFS test cluster (harness)")
    group.addoption(
        "--fdfs-backend",
        choices=("builtin", "native"),
        default=None,
        help="servers behind fdfs_cluster: the project's own or upstream fdfs_trackerd/"
        f"fdfs_storaged (default: ini fdfs_backend, else {_DEFAULT_BACKEND})",
    )
    group.addoption(
        "--fdfs-groups",
        default=None,
        metavar="GROUP:N,...",
        help=f"groups and storages per group of fdfs_cluster (default: {_DEFAULT_GROUPS})",
    )
    group.addoption(
        "--fdfs-trackers",
        default=None,
        metavar="N",
        help=f"number of trackers of fdfs_cluster (default: {_DEFAULT_TRACKERS})",
    )
    parser.addini("fdfs_backend", "backend of fdfs_cluster", default=_DEFAULT_BACKEND)
    parser.addini("fdfs_groups", "groups of fdfs_cluster (GROUP:N,...)", default=_DEFAULT_GROUPS)
    parser.addini("fdfs_trackers", "trackers of fdfs_cluster", default=_DEFAULT_TRACKERS)


def _setting(config: pytest.Config, name: str) -> str:
    value = config.getoption(f"--fdfs-{name}")
    return str(value if value is not None else config.getini(f"fdfs_{name}"))


def _cluster_settings(config: pytest.Config) -> dict[str, Any]:
    from .cluster import parse_groups

    backend = _setting(config, "backend")
    if backend not in ("builtin", "native"):
        raise pytest.UsageError(f"fdfs backend must be builtin or native, not {backend!r}")
    try:
        groups = parse_groups(_setting(config, "groups"))
        trackers = int(_setting(config, "trackers"))
    except ValueError as exc:
        raise pytest.UsageError(f"fdfs cluster settings: {exc}") from None
    return {"backend": backend, "groups": groups, "trackers": trackers}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "native: needs upstream FastDFS servers (fdfs_trackerd, fdfs_storaged)"
    )
    config.addinivalue_line(
        "markers", "fdfs_mount_options(*options): mount options of the fdfs_mount fixture"
    )
    if config.getoption("--fdfs-backend") == "native":
        from .native import native_available, unavailable_reason

        if not native_available():
            raise pytest.UsageError(f"--fdfs-backend native: {unavailable_reason()}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("native") is not None:
        from .native import native_available, unavailable_reason

        if not native_available():
            pytest.skip(unavailable_reason())


@pytest.fixture(scope="session")
def fdfs_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The session's shared cluster (started lazily, on first use)."""
    from .cluster import Cluster

    with Cluster(**_cluster_settings(request.config)) as cluster:
        yield cluster


class ClusterFactory:
    """Starts clusters for one test and tears all of them down afterwards."""

    def __init__(self, default_backend: str) -> None:
        self.default_backend = default_backend
        self.clusters: list[Cluster] = []

    def _make(self, kwargs: dict[str, Any]) -> Cluster:
        from .cluster import Cluster

        kwargs.setdefault("backend", self.default_backend)
        cluster = Cluster(**kwargs)
        self.clusters.append(cluster)  # before start: a failed start is closed too
        return cluster

    def __call__(self, **kwargs: Any) -> Cluster:
        return self._make(kwargs).start()

    async def start_async(self, **kwargs: Any) -> Cluster:
        cluster = self._make(kwargs)
        return await cluster.__aenter__()

    def close_all(self) -> None:
        errors = []
        for cluster in reversed(self.clusters):
            try:
                cluster.close()
            except Exception as exc:
                errors.append(exc)
        self.clusters.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def fdfs_cluster_factory(request: pytest.FixtureRequest) -> Iterator[ClusterFactory]:
    factory = ClusterFactory(_cluster_settings(request.config)["backend"])
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture
def fdfs_mount(
    fdfs_cluster: Cluster, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MountProcess]:
    """fdfsmount over the session's cluster in a child process; unmounted however the test ends."""
    from fdfsmount.mountproc import fuse_available, mounted

    if not fuse_available():
        pytest.skip("FUSE is not available (/dev/fuse and fusermount3)")
    marker = request.node.get_closest_marker("fdfs_mount_options")
    options = [str(o) for o in marker.args] if marker is not None else []
    where = tmp_path_factory.mktemp("fdfs-mount")
    with mounted(fdfs_cluster.trackers, where / "mnt", options) as mount:
        yield mount


async def fdfs_client(fdfs_cluster: Cluster) -> AsyncIterator[Client]:
    """A trio Client connected to the session's fdfs_cluster."""
    try:
        from fdfsmount.proto.client import Client
    except ImportError as exc:
        pytest.skip(f"fdfsmount.proto.client is not available: {exc}")
    async with Client(fdfs_cluster.trackers) as client:
        yield client


_trio_fixture = _trio_fixture_decorator()
if _trio_fixture is not None:
    fdfs_client = _trio_fixture(fdfs_client)
