"""On-disk layout of the builtin storage: FastDFS store paths and their files.

``<base>/store<i>/data/HH/HH/<name>`` holds the file with remote name
``M<i>/HH/HH/<name>``; its metadata, when it has any, is the sibling file
``<name>-m`` in upstream's text format (records sorted by name). Subdirectories
are created when a file first lands in them. New content is written to a
temp file and renamed into place only when complete, so a half-received
upload is never visible. An upload's temp file is ``.<n>.tmp`` in the data
subdirectory it will be placed in, as upstream writes uploads (a rename within
one directory costs the file system far less than a move from another); no
file ID names a file that starts with a dot. Other content (synced files,
metadata) is written to ``<base>/store<i>/tmp/``, emptied at start.

Disk-full simulation: while ``<base>/.full`` (or ``<base>/DISK_FULL``) exists
the storage reports 0 MB free and refuses appends with ENOSPC, and uploads
from its next report on (`Store.check_space` goes by the last `Store.usage`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import re
import stat
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from fdfsmount.proto.fileid import (
    FileIdInfo,
    decode_file_id,
)

from .serverutil import Memo, RequestError

log = logging.getLogger(__name__)

#: crc32 of the file-name checksum; ISA-L's is several times faster than zlib's
#: and gives the same values, so it is used when the isal package is there.
crc32: Callable[[Any, int], int]
try:
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - depends on the environment
    crc32 = zlib.crc32

META_SUFFIX = "-m"
#: Flag files that make the storage behave as if its disk were full.
FULL_FLAGS = (".full", "DISK_FULL")
#: Reserved space, as a fraction of the store path's size (upstream sample: 1%).
RESERVED_RATIO = 0.01
LOGIC_PATH_LEN = 10  # "M00/HH/HH/"
_UPPER_HEX = re.compile(r"[0-9A-F]{2}")
_ANY_HEX = re.compile(r"[0-9A-Fa-f]{2}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
CRC_CHUNK = 1 << 20
#: Resolved names a store remembers (the cache starts over when full).
RESOLVED_NAMES = 8192


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A remote name resolved to its place on disk."""

    remote_name: str
    store_path_index: int
    subdirs: tuple[int, int]
    #: The file's path as a string (what the hot paths hand to `os`).
    file: str

    @property
    def path(self) -> Path:
        return Path(self.file)

    @property
    def meta_file(self) -> str:
        return self.file + META_SUFFIX

    @property
    def meta_path(self) -> Path:
        return Path(self.file + META_SUFFIX)


class DiskUsage(NamedTuple):  # a named tuple: every upload reads the last one
    total_mb: int
    free_mb: int
    reserved_mb: int


@functools.lru_cache(maxsize=8192)
def decoded_name(group: str, remote_name: str) -> FileIdInfo:
    """`decode_file_id` of a file ID, remembered: a name always decodes the same.

    The servers decode the name of every request they route or answer (the
    tracker to find a file's source, the storage for file info and fencing);
    a client usually names a file several times in a row.
    """
    return decode_file_id(f"{group}/{remote_name}")


class Store:
    """The store paths of one storage server."""

    def __init__(self, base_dir: Path, store_path_count: int = 1, subdir_count: int = 256) -> None:
        if not 1 <= store_path_count <= 256:
            raise ValueError("store path count must be 1..256")
        if not 1 <= subdir_count <= 256:
            raise ValueError("subdir count must be 1..256")
        self.base_dir = base_dir
        self.store_path_count = store_path_count
        self.subdir_count = subdir_count
        self.paths = [base_dir / f"store{i}" for i in range(store_path_count)]
        self._data_dirs = [str(path / "data") for path in self.paths]
        self._temp_dirs = [str(path / "tmp") for path in self.paths]
        # Temp names: unique within this process; stale ones are removed below.
        self._temp_names = itertools.count()
        self._full_flags = [str(base_dir / flag) for flag in FULL_FLAGS]
        self._base = str(base_dir)
        #: The usage `check_space` goes by: the last heartbeat's (see `usage`).
        self._usage: DiskUsage | None = None
        for path in self.paths:
            (path / "data").mkdir(parents=True, exist_ok=True)
            tmp = path / "tmp"
            tmp.mkdir(exist_ok=True)
            for stale in tmp.iterdir():
                stale.unlink(missing_ok=True)
        self._next_path = 0
        self._resolved: Memo[str, LocalFile] = Memo(RESOLVED_NAMES)
        # Round-robin subdirectory placement as upstream's default
        # (file_distribute_path_mode 0, rotate every 100 files).
        self._subdir_high = 0
        self._subdir_low = 0
        self._files_in_subdir = 0
        self._placing = threading.Lock()

    # ------------------------------------------------------------ names

    def resolve(self, remote_name: str) -> LocalFile:
        """Map a remote name to a path; EINVAL for names upstream rejects.

        Well-formed names carrying characters no FastDFS name has resolve to
        a path that cannot exist, so they answer ENOENT without touching
        anything outside the store.
        """
        local = self._resolved.get(remote_name)
        if local is None:
            # A name resolves the same way for the store's life, and clients
            # name a file several times in a row (route, info, download).
            local = self._resolved.put(remote_name, self._resolve(remote_name))
        return local

    def _resolve(self, remote_name: str) -> LocalFile:
        if len(remote_name) <= LOGIC_PATH_LEN or remote_name[0] != "M" or remote_name[3] != "/":
            raise RequestError(errno.EINVAL, f"invalid file name {remote_name!r}")
        index_hex = remote_name[1:3]
        if not _ANY_HEX.fullmatch(index_hex):
            raise RequestError(errno.EINVAL, f"invalid store path in {remote_name!r}")
        index = int(index_hex, 16)
        if index >= self.store_path_count:
            raise RequestError(errno.EINVAL, f"invalid store path index {index}")
        rest = remote_name[4:]
        high, low, name = rest[0:2], rest[3:5], rest[6:]
        if (
            len(rest) < 6
            or rest[2] != "/"
            or rest[5] != "/"
            or not _UPPER_HEX.fullmatch(high)
            or not _UPPER_HEX.fullmatch(low)
            or "/" in name
        ):
            raise RequestError(errno.EINVAL, f"invalid data file name {remote_name!r}")
        if not _SAFE_NAME.fullmatch(name) or name[0] == ".":  # ".", "..", a temp file
            raise RequestError(errno.ENOENT, f"no such file {remote_name!r}", close=False)
        file = f"{self._data_dirs[index]}/{high}/{low}/{name}"
        return LocalFile(remote_name, index, (int(high, 16), int(low, 16)), file)

    def made(self, remote_name: str, store_path_index: int, subdirs: tuple[int, int]) -> LocalFile:
        """Where a name this storage just made for a new file lives: it passes
        `resolve`'s checks by construction, so it is not parsed back (and it is
        remembered for the requests that name it next)."""
        local = LocalFile(
            remote_name, store_path_index, subdirs,
            f"{self._data_dirs[store_path_index]}/{remote_name[4:]}",
        )  # fmt: skip
        return self._resolved.put(remote_name, local)

    def try_resolve(self, remote_name: str) -> LocalFile | None:
        try:
            return self.resolve(remote_name)
        except RequestError:
            return None

    def choose_store_path(self) -> int:
        """Round-robin over the store paths (index byte 0xFF in an upload)."""
        index = self._next_path % self.store_path_count
        self._next_path = index + 1
        return index

    def next_subdirs(self) -> tuple[int, int]:
        """The data subdirectory of the next new file (connection threads ask at once)."""
        with self._placing:
            placed = (self._subdir_high, self._subdir_low)
            self._files_in_subdir += 1
            if self._files_in_subdir >= 100:
                self._files_in_subdir = 0
                self._subdir_low += 1
                if self._subdir_low >= self.subdir_count:
                    self._subdir_low = 0
                    self._subdir_high = (self._subdir_high + 1) % self.subdir_count
        return placed

    # ------------------------------------------------------------ files

    def new_temp_path(
        self, store_path_index: int, subdirs: tuple[int, int] | None = None
    ) -> str:
        """A fresh temp file name: in the data subdirectory ``subdirs`` (an upload's,
        see the module's text), else in the store path's ``tmp/``. A str: a Path
        costs a dozen calls per upload."""
        number = next(self._temp_names)
        if subdirs is None:
            return f"{self._temp_dirs[store_path_index]}/{number}"
        high, low = subdirs
        return f"{self._data_dirs[store_path_index]}/{high:02X}/{low:02X}/.{number}.tmp"

    @staticmethod
    def discard(temp: str) -> None:
        """Remove a temp file that will not be placed, if it is there."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)

    def place(self, temp: str, target: LocalFile) -> None:
        """Move a completed temp file to its final name."""
        try:
            os.replace(temp, target.file)
        except FileNotFoundError:
            if not os.path.exists(temp):
                raise
            target.path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target.file)

    def exists(self, remote_name: str) -> bool:
        local = self.try_resolve(remote_name)
        return local is not None and os.path.isfile(local.file)

    def stat(self, local: LocalFile) -> os.stat_result:
        """lstat of a regular file; ENOENT if missing, EINVAL if not a file."""
        try:
            info = os.lstat(local.file)
        except (FileNotFoundError, NotADirectoryError):
            raise RequestError(errno.ENOENT, f"no such file {local.remote_name}") from None
        if not stat.S_ISREG(info.st_mode):
            raise RequestError(errno.EINVAL, f"{local.remote_name} is not a regular file")
        return info

    def read_metadata(self, local: LocalFile) -> bytes | None:
        try:
            with open(local.meta_file, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write_whole(self, local: LocalFile, data: bytes) -> None:
        """Replace a small file (metadata) atomically."""
        temp = self.new_temp_path(local.store_path_index)
        with open(temp, "wb") as f:
            f.write(data)
        self.place(temp, local)

    # ------------------------------------------------------------ space

    def is_full(self) -> bool:
        """Whether a full-disk flag is there (each heartbeat and append looks)."""
        return any(os.access(flag, os.F_OK) for flag in self._full_flags)

    def usage(self) -> DiskUsage:
        """The disk's usage now, which uploads go by from then on (`check_space`).

        The heartbeat asks for it every beat, so uploads are checked against the
        free space the trackers were last told of, as upstream checks them
        against its last disk report (not a statvfs per upload).
        """
        vfs = os.statvfs(self._base)
        total = vfs.f_blocks * vfs.f_frsize // (1 << 20) * self.store_path_count
        free = vfs.f_bavail * vfs.f_frsize // (1 << 20) * self.store_path_count
        if self.is_full():
            free = 0
        usage = self._usage = DiskUsage(total, free, int(total * RESERVED_RATIO))
        return usage

    def check_space(self, size: int) -> None:
        """ENOSPC when an upload of ``size`` bytes would eat into the reserve."""
        usage = self._usage or self.usage()  # free_mb is 0 while a full flag exists
        if usage.free_mb - size // (1 << 20) <= usage.reserved_mb:
            raise RequestError(errno.ENOSPC, "no space left for the upload")


def file_crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(CRC_CHUNK):
            crc = crc32(chunk, crc)
    return crc
