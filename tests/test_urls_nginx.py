"""nginx serving an fdfsmount mount answers the URLs `url_for` builds (the plain form).

Stock nginx has no fastdfs module, so it ignores ``token``/``ts``: this checks
the path layout (``/group/Mxx/..`` under the document root), the token
formula is checked against upstream in test_urls.py.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from nginxhelp import NGINX, serving

from fdfsmount.mountproc import MountProcess
from fdfsmount.proto.sync import Client
from fdfsmount.urls import url_for
from harness.cluster import Cluster

pytestmark = [
    pytest.mark.processes,
    pytest.mark.mount,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed"),
]

@pytest.fixture
def nginx_base(fdfs_mount: MountProcess, tmp_path: Path) -> Iterator[str]:
    with serving(fdfs_mount.mountpoint, tmp_path) as server:
        yield server.url()


def fetch(url: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_nginx_serves_url_for_paths(cluster: Cluster, nginx_base: str) -> None:
    data = os.urandom(20_000)
    with Client(cluster.trackers) as client:
        fid = client.upload(data, ext="bin", group="group2")
        try:
            assert fetch(url_for(fid, nginx_base)) == (200, data)
            signed = url_for(fid, nginx_base + "/", secret="k", ttl=60)
            assert fetch(signed) == (200, data)  # stock nginx ignores the token
            assert fetch(url_for(fid, nginx_base, with_group=False))[0] == 404  # root = mount
        finally:
            client.delete(fid)
