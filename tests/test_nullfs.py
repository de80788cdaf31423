"""The null filesystem the benchmarks compare with: reads from memory, and with
``--writable`` files that take writes and discard them."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from bench.run_all import null_mount
from fdfsmount.mountproc import fuse_available, is_mounted

pytestmark = [
    pytest.mark.processes,
    pytest.mark.mount,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3"),
]

MIB = 1024 * 1024


def test_reads_come_from_memory_and_writes_are_refused(tmp_path: Path) -> None:
    with null_mount(tmp_path / "null", {"group1/M00/00/00/a.bin": 3 * MIB + 5}) as root:
        path = root / "group1/M00/00/00/a.bin"
        assert len(path.read_bytes()) == 3 * MIB + 5
        with pytest.raises(OSError) as info:
            (root / "new.bin").write_bytes(b"x")
        assert info.value.errno == errno.EROFS
    assert not is_mounted(tmp_path / "null")


def test_writable_files_take_writes_and_keep_only_their_size(tmp_path: Path) -> None:
    with null_mount(tmp_path / "sink", {}, writable=True) as root:
        target = root / "sink-0.bin"
        with open(target, "wb") as f:
            for _ in range(3):
                f.write(b"\x01" * MIB)
            f.flush()
            os.fsync(f.fileno())
        assert target.stat().st_size == 3 * MIB
        with pytest.raises(OSError) as info:
            os.getxattr(target, "security.capability")
        assert info.value.errno == errno.ENODATA
    assert not is_mounted(tmp_path / "sink")
