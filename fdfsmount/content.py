"""Content addresses: put bytes once, get an address; identical bytes are stored once.

# Strategy
Every normal file's ID carries its size and CRC32 (`proto.fileid`), so the
group's listing (cmd 26, the storages' binlogs) is a cluster-wide index of
(size, crc32) that every host can read with no extra server. A put hashes
its bytes (size, CRC32, SHA-256), lists the group, and confirms each file of
the same size, CRC32 and extension by the SHA-256 kept in its metadata (or,
for files stored by others without one, by hashing their bytes).

Concurrent puts of the same bytes converge on one file by this protocol.
Each put uploads its copy marked ``fdfs-put=pending`` and waits until the
copy shows in the listing, so that anyone who lists afterwards sees it.
Then, repeatedly, from the latest listing:
  * a copy marked ``kept`` (or an unmarked copy older than `fresh_grace`:
    stored by someone else) exists: delete our copy, return that one;
  * a pending copy with a smaller ID exists: delete our copy (its owner will
    keep it) and wait for a kept one;
  * a pending copy with a larger ID exists: wait (its owner either saw ours
    and deletes its copy, or did not and keeps its own);
  * otherwise ours is the smallest and nobody else is deciding: mark it
    ``kept`` and return it.
A put deletes only its own unmarked copy and returns only a kept one, so an
address once returned is never deleted by another put. Of two puts, the one
whose upload showed last sees the other; so at most one of them marks its
copy kept and the other returns that copy. The waits are bounded by
`settle_timeout`: a peer that stalls longer (or crashed) can leave a second
copy (never a lost one); pending copies older than `abandon_after` are
ignored as the leftovers of crashed puts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from .proto import FileId, FileNotFound, InvalidFileId, parse_file_id
from .proto.fileid import BASE64_LEN, FileType, decode_file_id
from .proto.sync import Client
from .urls import url_for

log = logging.getLogger(__name__)

META_SHA256 = "sha256"
META_STATE = "fdfs-put"
PENDING = "pending"
KEPT = "kept"
_CHUNK = 1 << 20
_SPOOL_MEMORY = 8 << 20

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]


@dataclass(frozen=True, slots=True)
class Address:
    """Where content is stored: its file ID, size, CRC32 and (when known) SHA-256."""

    file_id: FileId
    size: int
    crc32: int
    sha256: str | None = None
    mount_point: Path | None = None
    is_duplicate: bool = False  # put found the bytes already stored

    @property
    def id(self) -> str:
        return str(self.file_id)

    @property
    def relpath(self) -> str:
        """The path under a mount point: ``group/Mxx/xx/xx/name``."""
        return str(self.file_id)

    @property
    def abspath(self) -> Path | None:
        """The file in the fdfsmount mount at `mount_point`, if one was given."""
        return None if self.mount_point is None else self.mount_point / self.relpath

    path = abspath


@dataclass(frozen=True, slots=True)
class _Digest:
    size: int
    crc32: int
    sha256: str


@dataclass(frozen=True, slots=True)
class _Copy:
    file_id: FileId
    state: str  # PENDING or KEPT


class ContentStore:
    """HashFS-like storage over a blocking `Client`: put, get, open, delete, url_for.

    ``group``: store into (and look for duplicates in) this group; None lets
    the tracker choose and searches every group. ``mount_point``: where
    fdfsmount mounts the cluster, for `Address.abspath` and for paths given
    to get/open/delete. ``base_url``/``secret``/``server_ttl``: defaults for
    `url_for`.
    """

    def __init__(
        self,
        client: Client,
        *,
        group: str | None = None,
        mount_point: str | os.PathLike[str] | None = None,
        base_url: str | None = None,
        secret: str | bytes | None = None,
        server_ttl: int | None = None,
        settle_timeout: float = 30.0,
        poll_interval: float = 0.2,
        fresh_grace: float = 10.0,
        abandon_after: float = 600.0,
    ) -> None:
        self.client = client
        self.group = group
        self.mount_point = Path(mount_point) if mount_point is not None else None
        self.base_url = base_url
        self.secret = secret
        self.server_ttl = server_ttl
        self.settle_timeout = settle_timeout
        self.poll_interval = poll_interval
        self.fresh_grace = fresh_grace
        self.abandon_after = abandon_after
        self._confirmed: dict[FileId, bool] = {}  # byte-compared files, by ID

    # ------------------------------------------------------------ put

    def put(
        self,
        source: Source,
        ext: str = "",
        *,
        dedupe: bool = True,
        meta: Mapping[str, str] | None = None,
    ) -> Address:
        """Store ``source`` (bytes, a path, or a binary file) and return its address.

        With ``dedupe`` the bytes are stored once per group: an existing copy
        with the same extension is returned instead (``is_duplicate``).
        """
        ext = ext[1:] if ext.startswith(".") else ext
        with _opened(source) as (file, digest):
            extra = dict(meta or {})
            if not dedupe:
                extra.update({META_SHA256: digest.sha256, META_STATE: KEPT})
                fid = self._upload(file, digest, ext, extra)
                return self._address(fid, digest)
            existing = self._kept_copies(self._copies(digest, ext, mine=None))
            if existing:
                return self._address(min(existing, key=str), digest, duplicate=True)
            return self._settle(file, ext, extra, digest)

    def _upload(self, file: BinaryIO, digest: _Digest, ext: str, meta: Mapping[str, str]) -> FileId:
        data: BinaryIO | bytes = file.getvalue() if isinstance(file, io.BytesIO) else file
        file.seek(0)
        return self.client.upload(data, size=digest.size, ext=ext, group=self.group, meta=meta)

    def _settle(self, file: BinaryIO, ext: str, extra: dict[str, str], digest: _Digest) -> Address:
        pending = {**extra, META_SHA256: digest.sha256, META_STATE: PENDING}
        mine: FileId | None = self._upload(file, digest, ext, pending)
        log.debug("put %s: uploaded as pending %s", digest.sha256[:12], mine)
        deadline = time.monotonic() + self.settle_timeout
        while time.monotonic() < deadline:
            copies = self._copies(digest, ext, mine=mine)
            listed = {c.file_id for c in copies}
            kept = self._kept_copies(copies, exclude=mine)
            if kept:
                if mine is not None:
                    self._delete_own(mine)
                return self._address(min(kept, key=str), digest, duplicate=True)
            if mine is not None and mine not in listed:
                time.sleep(self.poll_interval)  # not yet visible to others: decide nothing
                continue
            others = [c.file_id for c in copies if c.file_id != mine]
            if mine is not None and any(str(o) < str(mine) for o in others):
                self._delete_own(mine)  # a smaller copy's owner keeps it
                mine = None
            elif mine is not None and not others:
                self.client.set_metadata(mine, {META_STATE: KEPT})
                return self._address(mine, digest)
            elif mine is None and not others:
                # The copies we deferred to vanished (their puts deferred elsewhere
                # and that one is gone too): store ours again.
                mine = self._upload(file, digest, ext, pending)
            time.sleep(self.poll_interval)
        log.info(
            "put %s: other puts of the same bytes did not settle within %gs; keeping a copy",
            digest.sha256[:12],
            self.settle_timeout,
        )
        if mine is None:
            mine = self._upload(file, digest, ext, pending)
        self.client.set_metadata(mine, {META_STATE: KEPT})
        return self._address(mine, digest)

    def _delete_own(self, fid: FileId) -> None:
        log.debug("put: deleting own copy %s (another copy wins)", fid)
        with contextlib.suppress(FileNotFound):
            self.client.delete(fid)

    # ------------------------------------------------------------ finding copies

    def _groups(self) -> list[str]:
        if self.group is not None:
            return [self.group]
        return [g.group_name for g in self.client.list_groups()]

    def _copies(self, digest: _Digest, ext: str, *, mine: FileId | None) -> list[_Copy]:
        """Files of the same size, CRC32, extension and bytes, with their put state."""
        copies: list[_Copy] = []
        for group in self._groups():
            for fid in self.client.list_files(group):
                if not _id_matches(fid, digest, ext):
                    continue
                state = self._state_if_same(fid, digest, mine)
                if state is not None:
                    copies.append(_Copy(fid, state))
        return copies

    def _state_if_same(self, fid: FileId, digest: _Digest, mine: FileId | None) -> str | None:
        """The copy's put state if it holds our bytes; None if not (or gone)."""
        if fid == mine:
            return PENDING
        try:
            source = [self.client.update_server(fid)]
            meta = self.client.get_metadata(fid, servers=source)
        except FileNotFound:
            return None  # deleted (listings keep deleted files' lines)
        age = time.time() - decode_file_id(fid).create_time
        sha = meta.get(META_SHA256)
        if sha is not None:
            if sha != digest.sha256:
                return None
        elif not self._same_bytes(fid, digest):
            return None
        state = meta.get(META_STATE)
        if state == PENDING:
            return None if age > self.abandon_after else PENDING
        if state is None and age < self.fresh_grace:
            return PENDING  # maybe a put whose metadata is not written yet
        return KEPT

    def _same_bytes(self, fid: FileId, digest: _Digest) -> bool:
        known = self._confirmed.get(fid)
        if known is None:
            hasher = hashlib.sha256()
            try:
                for chunk in self.client.iter_download(fid):
                    hasher.update(chunk)
            except FileNotFound:
                return False
            known = hasher.hexdigest() == digest.sha256
            self._confirmed[fid] = known
        return known

    @staticmethod
    def _kept_copies(copies: Sequence[_Copy], exclude: FileId | None = None) -> list[FileId]:
        return [c.file_id for c in copies if c.state == KEPT and c.file_id != exclude]

    # ------------------------------------------------------------ by address

    def _address(self, fid: FileId, digest: _Digest, *, duplicate: bool = False) -> Address:
        return Address(
            fid, digest.size, digest.crc32, digest.sha256, self.mount_point, is_duplicate=duplicate
        )

    def file_id(self, address: Address | FileId | str | os.PathLike[str]) -> FileId:
        """The file ID of an address, a file ID, or a path under the mount point."""
        if isinstance(address, Address):
            return address.file_id
        if isinstance(address, FileId):
            return address
        text = os.fspath(address)
        if self.mount_point is not None:
            with contextlib.suppress(ValueError):
                text = str(Path(text).relative_to(self.mount_point))
        try:
            return parse_file_id(text.strip("/"))
        except InvalidFileId:
            raise InvalidFileId(f"not a file ID or a path under the mount: {text!r}") from None

    def get(self, address: Address | FileId | str | os.PathLike[str]) -> Address | None:
        """The address of a stored file, or None when it does not exist."""
        fid = self.file_id(address)
        info = decode_file_id(fid)
        try:
            meta = self.client.get_metadata(fid)
            if info.size is None or info.crc32 is None or info.file_type is not FileType.NORMAL:
                stat = self.client.info(fid)
                size, crc = stat.size, stat.crc32
            else:
                size, crc = info.size, info.crc32
        except FileNotFound:
            return None
        return Address(fid, size, crc, meta.get(META_SHA256), self.mount_point)

    def exists(self, address: Address | FileId | str | os.PathLike[str]) -> bool:
        return self.client.exists(self.file_id(address))

    def __contains__(self, address: Address | FileId | str | os.PathLike[str]) -> bool:
        return self.exists(address)

    def open(self, address: Address | FileId | str | os.PathLike[str]) -> io.BufferedReader:
        """A read-only, seekable binary file over the stored bytes."""
        return self.client.open(self.file_id(address))

    def read(self, address: Address | FileId | str | os.PathLike[str]) -> bytes:
        return self.client.download(self.file_id(address))

    def delete(self, address: Address | FileId | str | os.PathLike[str]) -> None:
        """Delete the stored file (every put that returned this address loses it too)."""
        self.client.delete(self.file_id(address))

    def url_for(self, address: Address | FileId | str | os.PathLike[str], **options: Any) -> str:
        """The file's HTTP URL (see `fdfsmount.urls.url_for`); store defaults apply."""
        base_url = options.pop("base_url", self.base_url)
        if base_url is None:
            raise ValueError("no base_url: give one here or to the ContentStore")
        options.setdefault("secret", self.secret)
        if self.server_ttl is not None:
            options.setdefault("server_ttl", self.server_ttl)
        return url_for(self.file_id(address), base_url, **options)


def _id_ext(fid: FileId) -> str:
    suffix = fid.name[BASE64_LEN:]
    dot = suffix.find(".")
    return suffix[dot + 1 :] if dot >= 0 else ""


def _id_matches(fid: FileId, digest: _Digest, ext: str) -> bool:
    try:
        info = decode_file_id(fid)
    except InvalidFileId:
        return False
    if info.file_type not in (FileType.NORMAL, FileType.TRUNK):
        return False
    return info.size == digest.size and info.crc32 == digest.crc32 and _id_ext(fid) == ext


@contextlib.contextmanager
def _opened(source: Source) -> Iterator[tuple[BinaryIO, _Digest]]:
    """A seekable file over ``source`` and its digest (one pass; pipes are spooled)."""
    with contextlib.ExitStack() as stack:
        file: IO[bytes]
        if isinstance(source, bytes | bytearray | memoryview):
            file = io.BytesIO(bytes(source))
        elif isinstance(source, str | os.PathLike):
            file = stack.enter_context(open(os.fspath(source), "rb"))
        elif _seekable(source):
            file = source
        else:
            file = stack.enter_context(tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY))
            while chunk := source.read(_CHUNK):
                file.write(chunk)
        start = file.seek(0) if file is not source else file.tell()
        crc, size, hasher = 0, 0, hashlib.sha256()
        while chunk := file.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            hasher.update(chunk)
        file.seek(start)
        # Upload from the current position: a window that starts there at 0.
        result = cast(BinaryIO, _Window(file, start, size) if start else file)
        yield result, _Digest(size, crc, hasher.hexdigest())


def _seekable(file: IO[bytes]) -> bool:
    try:
        return bool(file.seekable())
    except (AttributeError, ValueError):
        return False


class _Window(io.RawIOBase):
    """``size`` bytes of ``file`` from ``start``, seekable from 0 (for a mid-file source)."""

    def __init__(self, file: IO[bytes], start: int, size: int) -> None:
        super().__init__()
        self._file, self._start, self._size, self._pos = file, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._pos)
        if want <= 0:
            return 0
        self._file.seek(self._start + self._pos)
        data = self._file.read(want)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


__all__ = ["Address", "ContentStore"]
