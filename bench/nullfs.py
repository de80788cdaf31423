"""A null pyfuse3 filesystem: read-only files served from memory, the ceiling for a FUSE daemon.

It is the anchor for small-file reads: the same kernel, FUSE, pyfuse3 and trio
as fdfsmount, but no network and no cache logic -- each read is a slice of one
bytes object. Files are given as a JSON object {relative path: size}; the
directories on their paths are made up, so lookups walk the same depth as the
mount's ``group/M00/xx/yy/name``. Entries, attributes and pages are cached by
the kernel like the mount's immutable files (``keep_cache``).

With ``--writable`` the mount is read-write and files created in it take
writes and discard them (sizes are kept): the same ceiling for ``dd`` into a
new file. Its ``getxattr`` answers "no such attribute", as a filesystem with
extended attributes must (the kernel asks for ``security.capability`` before
every write); read-only mounts stay the anchor for reads, since a read-write
mount makes the kernel re-ask attributes after reads.

Usage: python bench/nullfs.py [--writable] MOUNTPOINT FILES.json
       (unmount: fusermount3 -u MOUNTPOINT)
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from dataclasses import dataclass, field

import pyfuse3
import trio

TIMEOUT = 300.0  # seconds the kernel may cache entries and attributes


@dataclass
class Node:
    inode: int
    size: int = 0
    children: dict[bytes, int] = field(default_factory=dict)  # empty for files
    is_dir: bool = False


class NullFs(pyfuse3.Operations):
    def __init__(self, files: dict[str, int]) -> None:
        super().__init__()
        self.nodes: dict[int, Node] = {pyfuse3.ROOT_INODE: Node(pyfuse3.ROOT_INODE, is_dir=True)}
        biggest = max(files.values(), default=0)
        self.data = os.urandom(biggest)
        for path, size in files.items():
            parent = self.nodes[pyfuse3.ROOT_INODE]
            parts = path.strip("/").split("/")
            for name in parts[:-1]:
                key = name.encode()
                if key not in parent.children:
                    node = Node(len(self.nodes) + 1, is_dir=True)
                    self.nodes[node.inode] = node
                    parent.children[key] = node.inode
                parent = self.nodes[parent.children[key]]
            leaf = Node(len(self.nodes) + 1, size=size)
            self.nodes[leaf.inode] = leaf
            parent.children[parts[-1].encode()] = leaf.inode

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = node.inode
        attr.st_mode = (stat.S_IFDIR | 0o755) if node.is_dir else (stat.S_IFREG | 0o444)
        attr.st_nlink = 2 if node.is_dir else 1
        attr.st_size = node.size
        attr.st_blksize = 128 * 1024
        attr.st_blocks = -(-node.size // 512)
        attr.entry_timeout = TIMEOUT
        attr.attr_timeout = TIMEOUT
        return attr

    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        inode = self.nodes[parent_inode].children.get(name)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(self.nodes[inode])

    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(self.nodes[inode])

    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        return pyfuse3.FileHandleT(inode)

    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        entries = list(self.nodes[fh].children.items())
        for index in range(start_id, len(entries)):
            name, inode = entries[index]
            if not pyfuse3.readdir_reply(token, name, self._attrs(self.nodes[inode]), index + 1):
                break

    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(inode), keep_cache=True)

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        end = min(off + size, self.nodes[fh].size)
        if off >= end:
            return b""
        view = memoryview(self.data)[off:end]
        return view  # type: ignore[return-value]  # pyfuse3 takes any buffer

    # -- --writable: created files discard what is written ----------------

    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: int,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = Node(len(self.nodes) + 1)
        self.nodes[node.inode] = node
        self.nodes[parent_inode].children[name] = node.inode
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(node.inode)), self._attrs(node)

    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        node = self.nodes[fh]
        node.size = max(node.size, off + len(buf))
        return len(buf)

    async def getxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes:
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        pass

    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        pass

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        pass


def main() -> int:
    args = sys.argv[1:]
    writable = args[:1] == ["--writable"]
    if writable:
        args = args[1:]
    if len(args) != 2:
        print(__doc__.strip().split("Usage: ")[-1].strip(), file=sys.stderr)
        return 2
    mountpoint, spec = args
    with open(spec, encoding="utf-8") as f:
        files = {str(k): int(v) for k, v in json.load(f).items()}
    ops = NullFs(files)
    options = set(pyfuse3.default_options)
    options.add("fsname=nullfs")
    if not writable:
        options.add("ro")
    pyfuse3.init(ops, mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
