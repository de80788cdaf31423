"""Content addresses against a harness cluster: dedupe across processes and threads,
CRC32 collisions kept apart, files stored by others found by their bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import wait_until

from fdfsmount.content import Address, ContentStore
from fdfsmount.proto import FileId, FileNotFound
from fdfsmount.proto.fileid import decode_file_id
from fdfsmount.proto.sync import Client
from fdfsmount.urls import anti_steal_token
from harness.cluster import Cluster

GROUP = "group1"  # two storages: concurrent uploads may land on different ones


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with Client(cluster.trackers) as c:
        yield c


@pytest.fixture
def store(client: Client, tmp_path: Path) -> ContentStore:
    return ContentStore(client, group=GROUP, mount_point=tmp_path / "mnt", poll_interval=0.05)


def copies_of(client: Client, data: bytes, group: str = GROUP) -> list[FileId]:
    """Live files of the group holding exactly ``data`` (checked by downloading them)."""
    found = []
    for fid in client.list_files(group):
        info = decode_file_id(fid)
        if info.size != len(data) or info.crc32 != zlib.crc32(data):
            continue
        if client.exists(fid) and client.download(fid) == data:
            found.append(fid)
    return found


def forge_crc(prefix: bytes, target: int) -> bytes:
    """``prefix`` plus 4 bytes chosen so that the CRC32 of the whole is ``target``.

    CRC32 is affine over GF(2) in the appended bits: solve the 32x32 system.
    """
    base = zlib.crc32(prefix + b"\0\0\0\0")
    columns = [zlib.crc32(prefix + (1 << bit).to_bytes(4, "little")) ^ base for bit in range(32)]
    # Gaussian elimination: rows are (column value, the bit set it combines).
    rows = [(col, 1 << bit) for bit, col in enumerate(columns)]
    want, chosen = target ^ base, 0
    basis: dict[int, tuple[int, int]] = {}
    for value, combo in rows:
        for pivot in sorted(basis, reverse=True):
            if value >> pivot & 1:
                value ^= basis[pivot][0]
                combo ^= basis[pivot][1]
        if value:
            basis[value.bit_length() - 1] = (value, combo)
    for pivot in sorted(basis, reverse=True):
        if want >> pivot & 1:
            want ^= basis[pivot][0]
            chosen ^= basis[pivot][1]
    assert want == 0, "CRC32 of 4 appended bytes reaches every value"
    forged = prefix + chosen.to_bytes(4, "little")
    assert zlib.crc32(forged) == target
    return forged


def test_forge_crc_helper() -> None:
    assert zlib.crc32(forge_crc(b"hello world", 0xDEADBEEF)) == 0xDEADBEEF


def test_same_bytes_twice_is_one_file(store: ContentStore, client: Client) -> None:
    data = os.urandom(70_000)
    first = store.put(data, "bin")
    assert not first.is_duplicate
    assert (first.size, first.crc32) == (len(data), zlib.crc32(data))
    second = store.put(memoryview(data), ".bin")
    assert second.file_id == first.file_id and second.is_duplicate
    other_ext = store.put(data, "dat")  # the extension is part of the address
    assert other_ext.file_id != first.file_id
    assert set(copies_of(client, data)) == {first.file_id, other_ext.file_id}
    for a in (first, other_ext):
        store.delete(a)


def test_crc_collision_is_two_files(store: ContentStore, client: Client) -> None:
    data = os.urandom(4096)
    twin = forge_crc(bytes([data[0] ^ 0xFF]) + data[1:-4], zlib.crc32(data))
    assert twin != data and len(twin) == len(data) and zlib.crc32(twin) == zlib.crc32(data)
    a = store.put(data, "bin")
    b = store.put(twin, "bin")
    assert a.file_id != b.file_id and not b.is_duplicate
    assert decode_file_id(a.file_id).crc32 == decode_file_id(b.file_id).crc32
    assert store.put(twin, "bin").file_id == b.file_id
    assert store.put(data, "bin").file_id == a.file_id
    assert client.download(a.file_id) == data and client.download(b.file_id) == twin
    store.delete(a)
    store.delete(b)


PUT_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from fdfsmount.content import ContentStore
    from fdfsmount.proto.sync import Client

    trackers, data_path, start_at = sys.argv[1].split(","), sys.argv[2], float(sys.argv[3])
    data = open(data_path, "rb").read()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("fdfsmount.content").setLevel(logging.DEBUG)
    with Client(trackers) as client:
        store = ContentStore(client, group="group1", poll_interval=0.05)
        client.list_groups()  # connected and warm before the start line
        while time.time() < start_at:
            time.sleep(0.001)
        print(store.put(data, "bin").id, flush=True)
    """
)


def test_two_processes_put_the_same_bytes(client: Client, cluster: Cluster, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    data_path = tmp_path / "data"
    data_path.write_bytes(data)
    start_at = time.time() + 3.0
    argv = [sys.executable, "-c", PUT_SCRIPT, ",".join(cluster.trackers), str(data_path)]
    procs = [
        subprocess.Popen([*argv, str(start_at)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()
    ids = {out.decode().strip() for out, _err in outputs}
    assert len(ids) == 1, ids
    assert [str(f) for f in copies_of(client, data)] == list(ids)
    uploads = sum(err.decode().count("uploaded as pending") for _out, err in outputs)
    print(f"{uploads} upload(s) raced; one file kept")
    client.delete(ids.pop())


def test_threads_put_the_same_bytes(store: ContentStore, client: Client) -> None:
    data = os.urandom(100_000)
    barrier = threading.Barrier(4)
    results: list[Address] = []
    errors: list[BaseException] = []

    def put() -> None:
        try:
            barrier.wait(10)
            results.append(store.put(data, "bin"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert len({r.file_id for r in results}) == 1
    assert copies_of(client, data) == [results[0].file_id]
    store.delete(results[0])


def test_file_stored_by_others_is_found_by_its_bytes(client: Client) -> None:
    data = os.urandom(10_000)
    foreign = client.upload(data, ext="png", group=GROUP)  # no sha256 metadata
    # Found once the group's listing shows it (upstream storages: within a second).
    wait_until(lambda: foreign in client.list_files(GROUP), what=f"{foreign} listed")
    # fresh_grace 0: any file without put metadata counts as settled at once.
    store = ContentStore(client, group=GROUP, fresh_grace=0.0, poll_interval=0.05)
    found = store.put(data, "png")
    assert found.file_id == foreign and found.is_duplicate
    assert copies_of(client, data) == [foreign]
    client.delete(foreign)


def test_get_open_delete_and_url_by_address_or_path(store: ContentStore, tmp_path: Path) -> None:
    data = os.urandom(3000)
    address = store.put(data, "txt", meta={"owner": "test"})
    assert address.abspath == tmp_path / "mnt" / address.relpath
    by_path = store.get(tmp_path / "mnt" / address.relpath)
    assert by_path is not None and by_path.file_id == address.file_id
    assert by_path.size == len(data) and by_path.crc32 == zlib.crc32(data)
    assert store.get(address.id) is not None
    assert address in store and address.id in store
    with store.open(address) as f:
        f.seek(1000)
        assert f.read(10) == data[1000:1010]
    assert store.read(str(address.abspath)) == data
    plain = store.url_for(address, base_url="http://cdn")
    assert plain == f"http://cdn/{address.id}"
    signed = store.url_for(address, base_url="http://cdn", secret="k", now=1700000000)
    token = anti_steal_token(address.file_id.remote_name, "k", 1700000000)
    assert signed.endswith(f"?token={token}&ts=1700000000")
    store.delete(address.abspath or "")
    with pytest.raises(FileNotFound):
        store.delete(address)  # the source has it no more
    with pytest.raises(ValueError):
        store.file_id("/elsewhere/file")


def test_put_from_a_pipe_and_a_mid_file_position(store: ContentStore, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    r, w = os.pipe()
    with os.fdopen(w, "wb") as writer:
        writer.write(data)
    with os.fdopen(r, "rb") as reader:
        piped = store.put(reader, "bin", dedupe=False)
    assert store.read(piped) == data
    path = tmp_path / "f"
    path.write_bytes(b"HEADER" + data)
    with open(path, "rb") as f:
        f.seek(6)
        again = store.put(f, "bin")
    assert again.file_id == piped.file_id and again.is_duplicate
    store.delete(piped)


def test_any_group_store_finds_copies_in_every_group(client: Client) -> None:
    data = os.urandom(2048)
    stored = client.upload(data, ext="bin", group="group2")
    wait_until(lambda: stored in client.list_files("group2"), what=f"{stored} listed")
    store = ContentStore(client, fresh_grace=0.0, poll_interval=0.05)  # no group: all
    found = store.put(data, "bin")
    assert found.file_id == stored and found.is_duplicate
    fresh = os.urandom(2048)
    first = store.put(fresh, "bin")
    assert store.put(fresh, "bin").file_id == first.file_id
    client.delete(stored)
    store.delete(first)
