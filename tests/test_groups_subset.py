"""``-o groups=g1,g2``: only those groups are mounted; the others are not listed and a lookup
of one fails with ENOENT, also for a file ID inside it."""

from __future__ import annotations

import errno

import pytest
import trio
from opshelp import CTX, ROOT, expect_errno, listdir, make_env, walk

from fdfsmount.mount_cli import parse_command_line
from fdfsmount.options import OptionError
from harness.cluster import Cluster


def test_groups_option_keeps_its_commas_and_other_options_follow() -> None:
    opts = parse_command_line(
        ["127.0.0.1:22122", "/mnt/x", "-o", "ro,groups=group1,group3,ro,allow_other"]
    )
    assert opts.groups == ("group1", "group3") and opts.read_only and opts.allow_other
    opts = parse_command_line(["127.0.0.1:22122", "/mnt/x", "-o", "groups=g2", "-o", "timeout=5"])
    assert opts.groups == ("g2",) and opts.timeout == 5
    assert parse_command_line(["127.0.0.1:22122", "/mnt/x"]).groups == ()
    with pytest.raises(OptionError, match="not a FastDFS group name"):
        parse_command_line(["127.0.0.1:22122", "/mnt/x", "-o", "groups=a/b"])
    with pytest.raises(OptionError, match="needs a value"):
        parse_command_line(["127.0.0.1:22122", "/mnt/x", "-o", "groups="])


async def test_only_the_named_groups_are_mounted(
    cluster: Cluster, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for env in make_env(cluster, nursery, groups=("group2",)):
        with trio.fail_after(30):
            assert sorted(await listdir(env.ops, ROOT, monkeypatch)) == ["group2"]
            assert (await walk(env.ops, "group2")).st_ino != ROOT
            await expect_errno(errno.ENOENT, env.ops.lookup(ROOT, b"group1", CTX))
            await expect_errno(errno.ENOENT, walk(env.ops, "group1/M00/00/00"))
            # statfs counts only what is mounted.
            mounted = await env.ops.statfs(CTX)
    async for env in make_env(cluster, nursery):
        with trio.fail_after(30):
            assert sorted(await listdir(env.ops, ROOT, monkeypatch)) == ["group1", "group2"]
            everything = await env.ops.statfs(CTX)
    assert mounted.f_blocks < everything.f_blocks
