"""The examples run against a harness cluster: the Flask app (through Flask's test
client) and the trio program (as a subprocess)."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlsplit

import pytest

from fdfsmount.proto.sync import Client
from fdfsmount.urls import check_token
from harness.cluster import Cluster

pytestmark = pytest.mark.processes  # starts servers, mounts or programs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flask_example_imports_without_flask() -> None:
    code = (
        "import sys, importlib.util; sys.modules['flask'] = None\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(EXAMPLES / 'flask_app.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(m.create_app.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "create_app"


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with Client(cluster.trackers) as c:
        yield c


def test_flask_upload_serve_delete(client: Client) -> None:
    pytest.importorskip("flask")
    app = load_example("flask_app").create_app(client=client, group="group2")
    web = app.test_client()
    data = b"\x89PNG fake image " * 2000
    reply = web.post("/files", data={"file": (io.BytesIO(data), "cat.png")})
    assert reply.status_code == 201, reply.get_data(as_text=True)
    body = reply.get_json()
    fid = body["id"]
    assert fid.startswith("group2/") and fid.endswith(".png") and body["size"] == len(data)
    again = web.post("/files", data={"file": (io.BytesIO(data), "copy.png")})
    assert again.status_code == 200 and again.get_json()["id"] == fid
    assert again.get_json()["duplicate"] is True
    raw = web.post("/files?ext=bin", data=b"raw body bytes", content_type="application/x")
    assert raw.status_code == 201
    served = web.get(f"/files/{fid}")
    assert served.status_code == 200 and served.data == data
    assert served.mimetype == "image/png" and served.content_length == len(data)
    assert web.get("/files/not-an-id").status_code == 400
    assert web.delete(f"/files/{fid}").status_code == 204
    assert web.get(f"/files/{fid}").status_code == 404
    assert web.delete(f"/files/{raw.get_json()['id']}").status_code == 204


def test_flask_redirects_to_signed_urls(client: Client) -> None:
    pytest.importorskip("flask")
    module = load_example("flask_app")
    app = module.create_app(client=client, base_url="http://cdn.test", secret="k3y", link_ttl=60)
    web = app.test_client()
    fid = "group1/M00/00/00/wKgBaFzL2xmAKzVYAAAADl5uqpk842.txt"
    reply = web.get(f"/files/{fid}")
    assert reply.status_code == 302
    location = reply.headers["Location"]
    assert location.startswith(f"http://cdn.test/{fid}?token=")
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert check_token(fid, params["token"], int(params["ts"]), "k3y")


def test_trio_example_runs(cluster: Cluster, tmp_path: Path) -> None:
    payload = tmp_path / "payload.txt"
    payload.write_bytes(b"example payload\n" * 5000)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "trio_example.py"), cluster.trackers[0], str(payload)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    urls = [line for line in done.stdout.splitlines() if "token=" in line]
    assert len(urls) == 5
