"""The write side's slot: appender writes, creation, deletion, metadata edits (not built yet).

What the read side already provides for it:

- `fs.Operations` routes ``write``, ``create``, ``unlink``, ``setattr``,
  ``setxattr``, ``removexattr``, ``rename``, ``mkdir``... through one helper,
  ``Operations._refuse``; replace each call with a call into a `WritePath`.
  ``open`` with a write access mode is refused the same way.
- `namespace.InodeTable.add_alias` / ``remove_alias``: names in ``/<group>/``
  that resolve to the inode of their file ID.
- `listing.Listing.note_file` / ``forget_file``: show a created file and hide a
  deleted one before the next listing pass.
- `attrs.FileStats.note` / ``invalidate``, `readpath.ReadPath.invalidate` and
  `xattrs.Xattrs.invalidate`: keep this host's reads in step with its writes.
- `mount.Mount` awaits `WritePath.flush_all` after the FUSE loop ends and
  before unmounting (SIGTERM/SIGINT included), so pending writes are flushed.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class WritePath:
    """Pending writes of the mount. Read-only for now: there is never anything to flush."""

    async def flush_all(self) -> None:
        """Send every buffered write; called once before the mount goes away."""
        return None

    def pending_files(self) -> int:
        """Open files with unflushed data (for status reports)."""
        return 0
