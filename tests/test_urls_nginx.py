"""nginx serving an fdfsmount mount answers the URLs `url_for` builds (the plain form).

Stock nginx has no fastdfs module, so it ignores ``token``/``ts``: this checks
the path layout (``/group/Mxx/..`` under the document root), the token
formula is checked against upstream in test_urls.py.
"""

from __future__ import annotations

import http.client
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fdfsmount.mountproc import MountProcess
from fdfsmount.proto.sync import Client
from fdfsmount.urls import url_for
from harness.cluster import Cluster
from harness.process import ChildProcess, pick_free_port, port_is_listening

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

pytestmark = [
    pytest.mark.processes,
    pytest.mark.mount,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed"),
]

NGINX_CONF = """\
master_process off;
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


@pytest.fixture
def nginx_base(fdfs_mount: MountProcess, tmp_path: Path) -> Iterator[str]:
    assert NGINX is not None
    port = pick_free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=tmp_path, root=fdfs_mount.mountpoint, port=port))
    process = ChildProcess(
        [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        name="nginx",
        log_dir=tmp_path / "logs",
        ready_line=None,
        ready_probe=lambda: port_is_listening("127.0.0.1", port),
        extra_logs=[tmp_path / "error.log"],
    )
    process.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()


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
