"""The builtin storage's name resolution: what each remote name maps to, remembered."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

from fdfsmount.proto.fileid import make_remote_name
from harness import store as store_module
from harness.serverutil import Memo, RequestError
from harness.store import Store

NAME = "M00/0A/FF/wKgBAWdHlZqAAAAAAAAQAAAAAAAAAAA.txt"


def test_a_name_resolves_to_its_file_the_same_way_each_time(tmp_path: Path) -> None:
    store = Store(tmp_path, store_path_count=2)
    first = store.resolve(NAME)
    assert first.file == f"{tmp_path}/store0/data/0A/FF/wKgBAWdHlZqAAAAAAAAQAAAAAAAAAAA.txt"
    assert (first.store_path_index, first.subdirs) == (0, (10, 255))
    assert store.resolve(NAME) is first  # remembered, not worked out again
    second_path = store.resolve("M01" + NAME[3:])
    assert second_path.file.startswith(f"{tmp_path}/store1/data/0A/FF/")


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("M02/00/00/abc.txt", errno.EINVAL),  # no third store path
        ("M00/0a/00/abc.txt", errno.EINVAL),  # lower-case subdirectory
        ("M00/00/00/a/b.txt", errno.EINVAL),
        ("X00/00/00/abc.txt", errno.EINVAL),
        ("M00/00/00/..", errno.ENOENT),
        ("M00/00/00/.0.tmp", errno.ENOENT),  # an upload's temp file: no file ID names it
        ("M00/00/00/a b", errno.ENOENT),
    ],
)
def test_refused_names_are_refused_every_time(tmp_path: Path, name: str, status: int) -> None:
    store = Store(tmp_path, store_path_count=2)
    for _ in range(2):  # a refusal is not remembered as a file
        with pytest.raises(RequestError) as refused:
            store.resolve(name)
        assert refused.value.status == status


def test_the_remembered_names_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "RESOLVED_NAMES", 4)
    store = Store(tmp_path)
    names = [f"M00/00/{i:02X}/file{i}.txt" for i in range(10)]
    for i, name in enumerate(names):
        assert store.resolve(name).subdirs == (0, i)
        assert len(store._resolved) <= 4  # noqa: SLF001
    assert store.resolve(names[0]).file.endswith("/00/00/file0.txt")


def test_memo_starts_over_when_full() -> None:
    memo: Memo[str, int] = Memo(2)
    assert memo.put("a", 1) == 1
    memo.put("b", 2)
    memo.put("c", 3)  # full: forgets the rest, keeps the new entry
    assert memo == {"c": 3}


def test_a_name_the_storage_made_lives_where_resolve_puts_it(tmp_path: Path) -> None:
    """`Store.made` skips parsing a fresh name back: it must land where `resolve` would."""
    rng = random.Random(7)
    store = Store(tmp_path, store_path_count=3)
    for appender, ext in [(False, "txt"), (True, ""), (False, "tar.gz"), (False, "abcdef")]:
        for index in range(3):
            subdirs = (rng.randrange(256), rng.randrange(256))
            name = make_remote_name(
                source="127.0.0.10" if index % 2 else 100001, create_time=1_795_000_000,
                size=rng.randrange(1 << 40), crc32=rng.getrandbits(32), ext=ext,
                appender=appender, store_path_index=index, subdirs=subdirs, rng=rng,
            )  # fmt: skip
            made = store.made(name, index, subdirs)
            assert made == Store(tmp_path, store_path_count=3).resolve(name)
            assert store.resolve(name) is made  # remembered for the requests that follow


def test_uploads_go_by_the_usage_last_reported(tmp_path: Path) -> None:
    """Like upstream's, the space check uses the last heartbeat's free space."""
    store = Store(tmp_path)
    store.check_space(1)  # no report yet: looked up
    (tmp_path / "DISK_FULL").write_text("full\n")
    store.check_space(1)  # not reported yet
    assert store.usage().free_mb == 0  # the next heartbeat's report
    with pytest.raises(RequestError) as refused:
        store.check_space(1)
    assert refused.value.status == errno.ENOSPC
    (tmp_path / "DISK_FULL").unlink()
    assert store.usage().free_mb > 0
    store.check_space(1)
