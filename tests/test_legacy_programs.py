"""Programs that know nothing of FastDFS, on a real mount: nginx serving the mount as its
``root`` (with and without ``open_file_cache``), rsync, tar, sha256sum, file, ImageMagick's
identify, find, cp -a and mv -- each compared with the source bytes or the expected output.

Against the builtin servers, and (``native`` marker) against the upstream servers."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mounthelp import client_run
from nginxhelp import NGINX, Nginx, serving
from waiting import wait_until

from fdfsmount.demo import sample_png
from fdfsmount.mountproc import MountProcess, fuse_available, mounted
from fdfsmount.proto import FileId, parse_file_id
from fdfsmount.proto.client import Client
from fdfsmount.proto.fileid import make_remote_name
from harness.cluster import Cluster

PROGRAMS = ("rsync", "tar", "sha256sum", "file", "identify", "find", "cp", "mv")
MISSING = [p for p in PROGRAMS if shutil.which(p) is None] + ([] if NGINX else ["nginx"])

pytestmark = [
    pytest.mark.processes,
    pytest.mark.mount,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3"),
    pytest.mark.skipif(
        bool(MISSING), reason=f"needs {', '.join(MISSING)} (bash scripts/bootstrap.sh test)"
    ),
]

#: Short kernel and existence caches, so that a deletion elsewhere shows within a second.
OPTIONS = ["timeout=10", "exists_ttl=1", "attr_timeout=1", "entry_timeout=1"]
DELETION_WAIT = 20.0
BACKENDS = ["builtin", pytest.param("native", marks=[pytest.mark.native, pytest.mark.slow])]


@dataclass
class Sample:
    fid: FileId
    data: bytes


@dataclass
class Site:
    cluster: Cluster
    mount: MountProcess
    text: Sample
    image: Sample
    blob: Sample

    @property
    def mnt(self) -> Path:
        return self.mount.mountpoint

    def path(self, fid: FileId | str) -> Path:
        return self.mnt / str(fid)

    def upload(self, data: bytes, ext: str, group: str = "group1") -> FileId:
        async def work(client: Client) -> FileId:
            return await client.upload(data, ext=ext, group=group)

        return client_run(self.cluster, work)

    def delete(self, fid: FileId) -> None:
        async def work(client: Client) -> None:
            await client.delete(fid)

        client_run(self.cluster, work)


@pytest.fixture(scope="module", params=BACKENDS)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    if request.param == "builtin":
        cluster: Cluster = request.getfixturevalue("fdfs_cluster")
        yield from _site(cluster, tmp_path_factory)
        return
    with Cluster(groups={"group1": 1, "group2": 1}, backend="native", disk_mb=64) as native:
        yield from _site(native, tmp_path_factory)


def _site(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    rng = random.Random(20260906)

    async def upload(client: Client) -> tuple[Sample, Sample, Sample]:
        text = b"plain text served by nginx\n" * 100
        image = sample_png()
        blob = rng.randbytes(300_000)
        return (
            Sample(await client.upload(text, ext="txt", group="group1"), text),
            Sample(await client.upload(image, ext="png", group="group1"), image),
            Sample(await client.upload(blob, ext="bin", group="group1"), blob),
        )

    text, image, blob = client_run(cluster, upload)
    where = tmp_path_factory.mktemp("legacy")
    with mounted(cluster.trackers, where / "mnt", OPTIONS) as mount:
        yield Site(cluster, mount, text, image, blob)


def run(*argv: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.fspath(a) for a in argv], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def quiet(*argv: str | os.PathLike[str], cwd: Path | None = None) -> str:
    """Run a program that must succeed and print nothing on stderr; its stdout."""
    done = run(*argv, cwd=cwd)
    assert (done.returncode, done.stderr) == (0, ""), f"{argv}: {done.stderr}"
    return done.stdout


# ---------------------------------------------------------------- nginx

@pytest.fixture(scope="module")
def nginx(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """nginx as a child of the test, on 127.0.0.1 with its own prefix; killed at teardown."""
    with serving(site.mnt, tmp_path_factory.mktemp("nginx")) as server:
        yield server


FLAVOURS = ["plain", "cached"]  # without and with open_file_cache


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nginx_serves_exact_bytes_ranges_and_lengths(
    site: Site, nginx: Nginx, flavour: str
) -> None:
    for sample, mime in ((site.text, "text/plain"), (site.image, "image/png"), (site.blob, None)):
        status, headers, body = nginx.request(flavour, "GET", str(sample.fid))
        assert (status, body) == (200, sample.data)
        if mime:
            assert headers["content-type"] == mime
        status, headers, body = nginx.request(
            flavour, "GET", str(sample.fid), {"Range": "bytes=100-1099"}
        )
        assert status == 206 and body == sample.data[100:1100]
        assert headers["content-range"] == f"bytes 100-1099/{len(sample.data)}"
        status, headers, body = nginx.request(flavour, "HEAD", str(sample.fid))
        assert status == 200 and body == b""
        assert int(headers["content-length"]) == len(sample.data)
    size = len(site.blob.data)
    status, _, body = nginx.request(
        flavour, "GET", str(site.blob.fid), {"Range": f"bytes={size - 5000}-"}
    )
    assert status == 206 and body == site.blob.data[-5000:]


def made_up_id(group: str = "group1") -> FileId:
    """A name a storage could have generated, of a file no storage has."""
    remote = make_remote_name(
        source=100001, create_time=1_700_000_000, size=4242, crc32=0xDEADBEEF, ext="png",
        subdirs=(0, 0), rng=random.Random(7),
    )  # fmt: skip
    return parse_file_id(f"{group}/{remote}")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nginx_404_for_made_up_ids_and_missing_groups(
    site: Site, nginx: Nginx, flavour: str
) -> None:
    for path in (
        str(made_up_id()),
        "group1/M00/00/00/nopeAAAAAAAAAAAAAAAAAAAAAAAAAA.png",  # no storage makes such a name
        str(made_up_id("nosuchgroup")),
        f"nosuchgroup/{site.text.fid.remote_name}",
    ):
        for _ in range(2):  # the second answer comes from the caches
            status, _, _ = nginx.request(flavour, "GET", path)
            assert status == 404, path
            status, _, _ = nginx.request(flavour, "HEAD", path)
            assert status == 404, path


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nginx_404_for_a_file_deleted_through_the_client(
    site: Site, nginx: Nginx, flavour: str
) -> None:
    data = random.Random(flavour).randbytes(50_000)
    fid = site.upload(data, "bin")
    for _ in range(3):
        assert nginx.request(flavour, "GET", str(fid))[::2] == (200, data)
    site.delete(fid)

    def not_found() -> bool:
        status, _, body = nginx.request(flavour, "GET", str(fid))
        if status == 404:
            return True
        # Until the deletion shows, the whole file or nothing: never a cut body.
        assert (status, body) == (200, data)
        return False

    wait_until(not_found, timeout=DELETION_WAIT, interval=0.2, what=f"404 for deleted {fid}")
    assert nginx.request(flavour, "HEAD", str(fid))[0] == 404
    assert not site.path(fid).exists()


# ---------------------------------------------------------------- reading programs


def test_sha256sum_file_identify_find(site: Site) -> None:
    for sample in (site.text, site.image, site.blob):
        out = quiet("sha256sum", site.path(sample.fid))
        assert out.split()[0] == hashlib.sha256(sample.data).hexdigest()
    assert quiet("file", "-b", "--mime-type", site.path(site.image.fid)).strip() == "image/png"
    assert quiet("file", "-b", "--mime-type", site.path(site.text.fid)).strip() == "text/plain"
    assert quiet("identify", "-format", "%m %wx%h", site.path(site.image.fid)) == "PNG 96x64"
    leaf = site.path(site.image.fid).parent
    found = quiet("find", leaf, "-name", "*.png", "-type", "f").split()
    assert str(site.path(site.image.fid)) in found


def test_tar_of_mount_files_holds_the_same_bytes(site: Site, tmp_path: Path) -> None:
    samples = (site.text, site.image, site.blob)
    archive = tmp_path / "files.tar"
    quiet("tar", "cf", archive, *(str(s.fid) for s in samples), cwd=site.mnt)
    with tarfile.open(archive) as tar:
        for sample in samples:
            member = tar.extractfile(str(sample.fid))
            assert member is not None and member.read() == sample.data


def test_rsync_and_cp_from_the_mount_to_local_disk(site: Site, tmp_path: Path) -> None:
    samples = (site.text, site.image, site.blob)
    sources = [site.path(s.fid) for s in samples]
    for tool, argv in (
        ("rsync", ["rsync", "-a"]),
        ("rsync-x", ["rsync", "-aX"]),
        ("cp", ["cp", "-a"]),
    ):
        dest = tmp_path / tool
        dest.mkdir()
        quiet(*argv, *sources, dest)
        for sample in samples:
            assert (dest / sample.fid.name).read_bytes() == sample.data
    # The facts of the source file are not copied as if they were the copy's.
    copied = os.listxattr(tmp_path / "cp" / sources[0].name)
    assert not any(n.startswith("user.fdfs.") for n in copied)


def test_mv_cp_rsync_between_groups_and_back_from_local_disk(
    site: Site, tmp_path: Path
) -> None:
    group2 = site.mnt / "group2"
    original = site.mnt / "group1" / "to-move.txt"  # a name made in /group1/ (an alias)
    data = b"moved between groups\n" * 100
    original.write_bytes(data)
    os.setxattr(original, "user.owner", b"ops")
    quiet("mv", original, group2 / "moved.txt")
    assert (group2 / "moved.txt").read_bytes() == data
    assert os.getxattr(group2 / "moved.txt", "user.owner") == b"ops"
    assert not original.exists()
    quiet("cp", "-a", site.path(site.image.fid), group2 / "copied.png")
    assert (group2 / "copied.png").read_bytes() == site.image.data
    quiet("rsync", "-aX", site.path(site.blob.fid), group2 / "synced.bin")
    assert (group2 / "synced.bin").read_bytes() == site.blob.data
    # Local disk -> mount, with an attribute of its own that becomes metadata.
    local = tmp_path / "local.txt"
    local.write_bytes(b"from local disk\n")
    os.setxattr(local, "user.origin", b"disk")
    quiet("cp", "-a", local, group2 / "cp-local.txt")
    quiet("rsync", "-aX", local, group2 / "rsync-local.txt")
    for name in ("cp-local.txt", "rsync-local.txt"):
        assert (group2 / name).read_bytes() == b"from local disk\n"
        assert os.getxattr(group2 / name, "user.origin") == b"disk"
    quiet("mv", local, group2 / "mv-local.txt")
    assert (group2 / "mv-local.txt").read_bytes() == b"from local disk\n"
    # ... and back to local disk.
    back = tmp_path / "back"
    back.mkdir()
    quiet("mv", group2 / "mv-local.txt", back / "mv-local.txt")
    assert (back / "mv-local.txt").read_bytes() == b"from local disk\n"
    assert not (group2 / "mv-local.txt").exists()
    quiet("rsync", "-aX", group2 / "rsync-local.txt", back / "rsync-local.txt")
    assert os.getxattr(back / "rsync-local.txt", "user.origin") == b"disk"
    for name in ("moved.txt", "copied.png", "synced.bin", "cp-local.txt", "rsync-local.txt"):
        (group2 / name).unlink()


def test_a_deliberate_setfattr_of_a_file_fact_still_fails_clearly(site: Site) -> None:
    target = site.path(site.text.fid)
    done = run("setfattr", "-n", "user.fdfs.type", "-v", "appender", target)
    assert done.returncode != 0 and "Operation not supported" in done.stderr
    fact = quiet("getfattr", "--absolute-names", "--only-values", "-n", "user.fdfs.type", target)
    assert fact == "normal"


def test_stat_open_and_ls_say_enoent_for_made_up_deleted_and_groupless_paths(
    site: Site,
) -> None:
    deleted = site.upload(b"short-lived", "txt")
    assert site.path(deleted).read_bytes() == b"short-lived"
    site.delete(deleted)
    paths = [site.path(made_up_id()), site.mnt / "nosuchgroup", site.path(made_up_id("nogroup"))]
    wait_until(lambda: not site.path(deleted).exists(), timeout=DELETION_WAIT, what="deletion")
    for path in [*paths, site.path(deleted)]:
        with pytest.raises(FileNotFoundError):
            os.stat(path)
        with pytest.raises(FileNotFoundError):
            open(path, "rb").close()
        done = run("ls", "-l", path)
        assert done.returncode == 2 and "No such file or directory" in done.stderr, path
