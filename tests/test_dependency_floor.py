"""The declared floor of prometheus_client is one the code works with: the metrics server
starts, serves a scrape and shuts down with exactly the floor release, and fails with the
release before it (whose start_http_server() returns nothing to shut down)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes  # installs packages and runs a metrics server

REPO = Path(__file__).resolve().parent.parent

SCRAPE = """
import importlib.metadata, urllib.request
import trio
from fdfsmount.metrics import MetricsServer, MountCollector

async def main() -> None:
    token = trio.lowlevel.current_trio_token()
    snapshot = lambda: {"state": "starting", "mountpoint": "/mnt/x", "source": "s"}
    server = MetricsServer(("127.0.0.1", 0), MountCollector(snapshot, token))
    try:
        body = await trio.to_thread.run_sync(lambda: urllib.request.urlopen(server.url).read())
    finally:
        server.close()
    assert b"fdfsmount_up 0.0" in body, body
    print("prometheus_client", importlib.metadata.version("prometheus_client"), "ok")

trio.run(main)
"""


def floor() -> str:
    match = re.search(r'"prometheus_client>=([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert match, "pyproject.toml declares no prometheus_client floor"
    return match[1]


def scrape_with(version: str, target: Path) -> subprocess.CompletedProcess[str]:
    """Install only prometheus_client==`version` into `target` and run a scrape with it
    first on the path (the project and its other dependencies from this environment)."""
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
         "--no-deps", "--target", os.fspath(target), f"prometheus_client=={version}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if pip.returncode != 0:
        pytest.skip(f"cannot install prometheus_client=={version}: {pip.stderr.strip()[-200:]}")
    path = os.pathsep.join([os.fspath(target), os.fspath(REPO), sysconfig.get_paths()["purelib"]])
    return subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path[:0] = {path.split(os.pathsep)!r}\n"
         + SCRAPE],
        capture_output=True, text=True, timeout=120, cwd=target,
    )  # fmt: skip


@pytest.mark.slow
def test_metrics_work_with_the_declared_floor_and_not_below(tmp_path: Path) -> None:
    version = floor()
    done = scrape_with(version, tmp_path / "floor")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"prometheus_client {re.escape(version)}(\.0)* ok", done.stdout.strip())
    major, minor = (int(x) for x in version.split(".")[:2])
    below = scrape_with(f"{major}.{minor - 1}.0", tmp_path / "below")
    assert below.returncode != 0 and "cannot unpack non-iterable NoneType" in below.stderr
