"""Mount command line: SOURCE, `-o` lists, sizes, durations, ignored mount(8) options."""

from __future__ import annotations

import os

import pytest

from fdfsmount.mount_cli import parse_command_line
from fdfsmount.options import (
    MIB,
    MountOptions,
    OptionError,
    apply_options,
    build_options,
    parse_duration,
    parse_size,
    parse_trackers,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("65536", 65536), ("64K", 65536), ("64M", 64 * MIB), ("1G", 1 << 30), ("1GiB", 1 << 30),
     ("2m", 2 * MIB), ("1.5M", 3 * MIB // 2), ("0", 0)],
)  # fmt: skip
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text, "readahead") == expected


@pytest.mark.parametrize("text", ["", "M", "-1", "12X", "1.2.3"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(OptionError, match="readahead"):
        parse_size(text, "readahead")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30", 30.0), ("1.5", 1.5), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("7s", 7.0)],
)
def test_durations(text: str, expected: float) -> None:
    assert parse_duration(text, "timeout") == expected


def test_trackers() -> None:
    assert parse_trackers("10.0.0.5:22122") == ("10.0.0.5:22122",)
    assert parse_trackers("a:1, b.example:22122") == ("a:1", "b.example:22122")
    assert parse_trackers("[::1]:22122") == ("[::1]:22122",)


@pytest.mark.parametrize("source", ["fdfs", "host:", ":22122", "host:0", "host:70000", "a b:1", ""])
def test_bad_source_names_the_problem(source: str) -> None:
    with pytest.raises(OptionError, match="SOURCE"):
        parse_trackers(source)


def test_every_documented_option() -> None:
    opts = build_options(
        "127.0.0.1:22122",
        "/mnt",
        [
            "ro,allow_other,default_permissions,uid=1000,gid=100,umask=027",
            "attr_timeout=2,entry_timeout=3,readahead=32M,cache_size=1G",
            "nolist,list_ttl=5m,timeout=7,debug,sparse,verify_exists",
        ],
    )
    assert opts.read_only and opts.allow_other and opts.default_permissions
    assert (opts.uid, opts.gid, opts.umask) == (1000, 100, 0o027)
    assert (opts.attr_timeout, opts.entry_timeout) == (2.0, 3.0)
    assert (opts.readahead, opts.cache_size) == (32 * MIB, 1 << 30)
    assert opts.no_list and opts.list_ttl == 300.0 and opts.timeout == 7.0
    assert opts.debug and opts.sparse and opts.verify_exists
    assert {"ro", "allow_other", "default_permissions", "subtype=fdfsmount"} <= opts.fuse_options


def test_existence_options() -> None:
    default = build_options("h:1", "/mnt", [])
    assert (default.trust_ids, default.exists_ttl) == (False, 10.0)
    opts = build_options("h:1", "/mnt", ["exists_ttl=1m,trust_ids"])
    assert (opts.trust_ids, opts.exists_ttl) == (True, 60.0)
    assert build_options("h:1", "/mnt", ["exists_ttl=0"]).exists_ttl == 0.0
    with pytest.raises(OptionError, match="contradict"):
        build_options("h:1", "/mnt", ["trust_ids,verify_exists"])
    with pytest.raises(OptionError, match="exists_ttl='soon'"):
        build_options("h:1", "/mnt", ["exists_ttl=soon"])
    with pytest.raises(OptionError, match="takes no value"):
        build_options("h:1", "/mnt", ["trust_ids=yes"])


def test_write_side_options() -> None:
    opts = build_options("h:1", "/mnt", ["write_buffer=4M,write_idle=250ms,cache_dir=rel/cache"])
    assert (opts.write_buffer, opts.write_idle) == (4 * MIB, 0.25)
    # Absolute: the daemon changes to / before it opens the cache directory.
    assert opts.cache_dir == os.path.abspath("rel/cache")
    defaults = build_options("h:1", "/mnt", [])
    assert (defaults.write_buffer, defaults.write_idle, defaults.cache_dir) == (8 * MIB, 1.0, None)
    for item, message in [("write_buffer=1K", "write_buffer"), ("write_idle=0", "write_idle"),
                          ("cache_dir", "needs a value")]:  # fmt: skip
        with pytest.raises(OptionError, match=message):
            build_options("h:1", "/mnt", [item])


def test_defaults_are_the_mounting_user() -> None:
    opts = build_options("h:1", "/mnt", [])
    assert (opts.uid, opts.gid) == (os.getuid(), os.getgid())
    assert not opts.read_only and not opts.no_list
    assert opts.fuse_options == {"fsname=h:1", "subtype=fdfsmount"}


def test_mount8_and_fstab_options_are_ignored() -> None:
    opts = build_options(
        "h:1",
        "/mnt",
        ["_netdev,nofail,x-systemd.automount,x-systemd.requires=network-online.target",
         "rw,auto,noauto,user,nouser,defaults,dev,suid,exec,nosuid,nodev,comment=x"],
    )  # fmt: skip
    assert opts == build_options("h:1", "/mnt", [])


def test_generic_flags_pass_to_fuse() -> None:
    assert "noatime" in build_options("h:1", "/m", ["noatime,noexec"]).fuse_options


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("bogus", "unknown mount option 'bogus'"),
        ("readahead", "needs a value"),
        ("readahead=lots", "readahead="),
        ("ro=1", "takes no value"),
        ("uid=me", "uid="),
        ("umask=999", "umask="),
        ("timeout=0", "timeout must be"),
    ],
)
def test_bad_options_say_what_is_wrong(item: str, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        apply_options(MountOptions(), [item])


def test_conf_makes_source_a_placeholder(tmp_path: os.PathLike[str]) -> None:
    conf = os.path.join(tmp_path, "client.conf")
    with open(conf, "w") as f:
        f.write("tracker_server = 127.0.0.1:22122\n")
    opts = build_options("fdfs", "/mnt", [f"conf={conf}"])
    assert opts.trackers == () and opts.conf == conf and opts.source == "fdfs"
    # A tracker list next to conf= wins over the conf's tracker_server lines.
    assert build_options("h:2", "/mnt", [f"conf={conf}"]).trackers == ("h:2",)
    with pytest.raises(OptionError, match="no such file"):
        build_options("fdfs", "/mnt", [f"conf={conf}.missing"])


def test_fsname_escapes_commas() -> None:
    assert build_options("a:1,b:2", "/m", []).source == "a:1\\,b:2"


def test_command_line_in_mount8_order() -> None:
    opts = parse_command_line(["h:1", "relative/dir", "-o", "ro", "-o", "nolist", "-f"])
    assert opts.mountpoint == os.path.abspath("relative/dir")
    assert opts.read_only and opts.no_list and opts.foreground
    opts = parse_command_line(["-o", "debug", "h:1", "/mnt", "-n", "-s"])
    assert opts.debug and not opts.foreground


def test_usage_errors_exit_1_as_help_says(tmp_path: os.PathLike[str]) -> None:
    """`fdfsmount --help` documents exit status 1 for every error; a usage error is one too."""
    import subprocess
    import sys

    help_text = subprocess.run(
        [sys.executable, "-m", "fdfsmount", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "1 on any error" in help_text
    for argv in (
        ["--bogus", "127.0.0.1:22122", os.fspath(tmp_path)], [], ["status"], ["ctl", "/mnt"],
        ["install-helper", "--bogus"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "fdfsmount", *argv], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1, (argv, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "--help" in done.stderr, done.stderr


def test_write_back_bound_for_the_whole_mount() -> None:
    assert build_options("h:1", "/mnt", []).write_buffers == 16
    opts = build_options("h:1", "/mnt", ["write_buffer=2M,write_buffers=4"])
    assert opts.write_buffer * opts.write_buffers == 8 * MIB
    for item in ("write_buffers=0", "write_buffers=5000", "write_buffers=many"):
        with pytest.raises(OptionError, match="write_buffers"):
            build_options("h:1", "/mnt", [item])
