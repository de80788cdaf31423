"""Synthetic binlog lines: a storage that lists a million files without storing them.

``python -m harness.storage --synthetic-files N`` adds N made-up files to what
FETCH_ONE_PATH_BINLOG (cmd 26) streams for store path 0: valid normal-file
names whose ID carries this storage as source, spread evenly over the
``HH/HH`` directories, in the order a real binlog would list them. Nothing
exists on disk, so the files list but cannot be read: enough to test and
measure listing at scale without uploading a million files.

The lines are generated once into a file next to the storage's binlog and
streamed from there, so every listing after the first costs no generation.
"""

from __future__ import annotations

import base64
import ipaddress
import struct
from collections.abc import Iterator
from pathlib import Path

_FIELDS = struct.Struct(">4sIQI")  # source, create time, size field, crc32
BASE_TIME = 1_700_000_000
SIZE_MARK = 0x80000000 << 32  # upstream pads sizes below 4 GiB with a marked high half


def source_bytes(source: int | str) -> bytes:
    """The 4 bytes a file name holds for its source (server id, or IPv4 address)."""
    if isinstance(source, int):
        return source.to_bytes(4, "little")
    return ipaddress.IPv4Address(source).packed


def synthetic_name(index: int, source: bytes, subdirs: int = 256) -> str:
    """The remote name of synthetic file number `index` (unique per index)."""
    hi, lo = (index // subdirs) % subdirs, index % subdirs
    raw = _FIELDS.pack(source, BASE_TIME + index // 1000, SIZE_MARK | (1000 + index % 4000), index)
    encoded = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    return f"M00/{hi:02X}/{lo:02X}/{encoded}{index % 10_000_000:07d}"


def synthetic_lines(count: int, source: bytes, subdirs: int = 256) -> Iterator[bytes]:
    """Binlog lines ``<time> C <name>`` of `count` synthetic files, in batches."""
    batch: list[str] = []
    for index in range(count):
        ts = BASE_TIME + index // 1000
        batch.append(f"{ts} C {synthetic_name(index, source, subdirs)}\n")
        if len(batch) == 4096:
            yield "".join(batch).encode("ascii")
            batch = []
    if batch:
        yield "".join(batch).encode("ascii")


def ensure_synthetic_file(path: Path, count: int, source: bytes, subdirs: int = 256) -> Path:
    """Write the lines to `path` once (kept while the count and source are the same)."""
    stamp = path.with_suffix(".stamp")
    want = f"{count} {source.hex()} {subdirs}"
    if path.exists() and stamp.exists() and stamp.read_text() == want:
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for chunk in synthetic_lines(count, source, subdirs):
            out.write(chunk)
    tmp.replace(path)
    stamp.write_text(want)
    return path
