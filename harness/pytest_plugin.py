"""pytest plugin: FastDFS cluster fixtures (loaded through the ``pytest11`` entry point).

Placeholder so pytest starts; the fixtures arrive with ``harness.cluster``.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fdfs", "FastDFS test cluster")
    group.addoption(
        "--fdfs-backend",
        choices=("builtin", "native"),
        default=None,
        help="servers behind the fdfs_cluster fixture (default: builtin)",
    )
    parser.addini("fdfs_backend", "servers behind the fdfs_cluster fixture", default="builtin")
