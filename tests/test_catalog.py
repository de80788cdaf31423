"""The alias catalog keeps SQLite off the event loop: a change made while another mount holds
the file's lock returns at once and is written once the lock is free, in order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from fdfsmount.catalog import AliasCatalog
from fdfsmount.proto import parse_file_id

FID = parse_file_id("group1/M00/00/00/oYYBAGsDA7aEXyT5AAAAAAAAAAA332.log")
OTHER = parse_file_id("group1/M00/00/01/oYYBAGsDA7aEXyT5AAAAAAAAAAA333.log")


def rows(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT grp, name, file_id FROM aliases ORDER BY grp, name"))


async def test_changes_wait_for_a_locked_catalog_in_a_thread_not_in_the_loop(
    tmp_path: Path,
) -> None:
    catalog = AliasCatalog.for_cluster(tmp_path, ["127.0.0.2:22122"])
    catalog.add("group1", "first.log", FID)
    catalog.flush()
    assert catalog.path is not None
    # Another mount of the same cluster holds the write lock.
    other_mount = sqlite3.connect(catalog.path, isolation_level=None)
    try:
        other_mount.execute("BEGIN IMMEDIATE")
        with trio.fail_after(10):
            catalog.add("group1", "second.log", OTHER)
            catalog.rename("group1", "first.log", "renamed.log")
            await trio.lowlevel.checkpoint()  # the loop goes on while the writes wait
        # Nothing was written yet: the changes are queued behind the lock...
        assert [r[0] for r in other_mount.execute("SELECT name FROM aliases")] == ["first.log"]
        other_mount.execute("COMMIT")
    finally:
        other_mount.close()
    # ...and land, in order, once it is free.
    await trio.to_thread.run_sync(catalog.flush)
    assert rows(catalog.path) == [
        ("group1", "renamed.log", str(FID)),
        ("group1", "second.log", str(OTHER)),
    ]
    await trio.to_thread.run_sync(catalog.close)


@pytest.mark.expect_log_warnings
def test_a_failed_write_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache directory should be")
    catalog = AliasCatalog(blocked / "aliases.sqlite")
    catalog.add("group1", "lost.log", FID)  # returns; the writer thread reports
    catalog.close()
    assert any(
        "lost.log" in r.getMessage() and "until unmount" in r.getMessage() for r in caplog.records
    )
