"""nginx serving a mount as its static ``root``, as a child of the test.

Two servers on 127.0.0.1: ``plain`` and ``cached`` (with ``open_file_cache``, as
operators run it), each on a free port, with the test's own prefix for every
path nginx writes; the process is killed when the context ends.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.process import ChildProcess, pick_free_port, port_is_listening

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

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
    sendfile on;
    types {{ text/plain txt; image/png png; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{plain};
        root {root};
    }}
    server {{
        listen 127.0.0.1:{cached};
        root {root};
        open_file_cache max=1000 inactive=60s;
        open_file_cache_valid 1s;
        open_file_cache_errors on;
    }}
}}
"""


@dataclass
class Nginx:
    ports: dict[str, int]
    process: ChildProcess

    def url(self, flavour: str = "plain") -> str:
        return f"http://127.0.0.1:{self.ports[flavour]}"

    def request(
        self, flavour: str, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[flavour], timeout=60)
        try:
            conn.request(method, "/" + path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()  # IncompleteRead if the body is cut short
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            conn.close()


@contextlib.contextmanager
def serving(root: Path, prefix: Path) -> Iterator[Nginx]:
    """nginx with ``root`` as its document root and ``prefix`` for its own files."""
    assert NGINX is not None, "nginx is not installed"
    ports = {"plain": pick_free_port(), "cached": pick_free_port()}
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, root=root, **ports))
    process = ChildProcess(
        [NGINX, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)],
        name="nginx",
        log_dir=prefix / "logs",
        ready_line=None,
        ready_probe=lambda: all(port_is_listening("127.0.0.1", p) for p in ports.values()),
        extra_logs=[prefix / "error.log"],
    )
    process.start()
    try:
        yield Nginx(ports, process)
    finally:
        process.terminate()
