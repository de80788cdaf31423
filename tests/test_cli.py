"""The ``fdfs`` command: against the scripted golden peer, then against a harness cluster."""

from __future__ import annotations

import io
import json
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scripted_peer import Hang, Reply, ScriptedNetwork, ScriptedServer, load_golden, reply
from waiting import wait_until

import fdfsmount.cli
from fdfsmount.cli import fdfs
from fdfsmount.cli.fdfs import main, size_arg
from fdfsmount.cli.progress import ProgressBar, human_size
from fdfsmount.proto import ServerAddr
from fdfsmount.proto.constants import Cmd
from fdfsmount.proto.fileid import parse_file_id

G = load_golden("storage-id-mode")
TRACKER = "127.0.0.1:22122"
HELLO = "group1/M00/00/46/ooYBAGsC84mAaQSoAAAAEIZVgyU123.txt"
MISSING = "group1/M00/00/46/oYYBAGsC84qASNMpAAAAFT6cIgk0171326"
APPENDER = "group1/M00/00/46/oYYBAGsC87CETlZmAAAAAKaEx8Y099.log"
S1 = ServerAddr("127.0.0.1", 23001)


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FDFS_TRACKERS", raising=False)
    monkeypatch.setattr(fdfs, "DEFAULT_CONF", str(tmp_path / "no-such-client.conf"))
    monkeypatch.chdir(tmp_path)


def fetch_one(server: ServerAddr) -> Reply:
    from fdfsmount.proto import tracker as tr

    return Reply(reply(0, tr.encode_fetch_reply(tr.FetchTarget("group1", (server,)))))


def run(
    capsys: pytest.CaptureFixture[str], net: ScriptedNetwork | None, *argv: str
) -> tuple[int, str, str]:
    code = main(list(argv), connect=net.connect if net else None)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fdfs: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err


# ================================================================ scripted peer


def test_upload_prints_the_file_id(
    capsys: pytest.CaptureFixture[str],
    net: ScriptedNetwork,
    tracker: ScriptedServer,
    s1: ScriptedServer,
    tmp_path: Path,
) -> None:
    tracker.add_golden(G["query_store_without_group_one"])
    s1.add_golden(G["upload_file_with_ext"])
    (tmp_path / "hello.txt").write_bytes(b"Hello, FastDFS!\n")
    code, out, err = run(capsys, net, "--tracker", TRACKER, "upload", "hello.txt")
    assert (code, out, err) == (0, HELLO + "\n", "")


@pytest.mark.expect_log_warnings
def test_options_after_the_subcommand_and_env_trackers(
    capsys: pytest.CaptureFixture[str],
    net: ScriptedNetwork,
    tracker: ScriptedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracker.add_golden(G["list_all_groups"])
    code, out, _ = run(capsys, net, "groups", "--tracker", TRACKER, "--json")
    assert code == 0 and [g["group_name"] for g in json.loads(out)] == ["group1", "group2"]
    monkeypatch.setenv("FDFS_TRACKERS", f"127.0.0.9:1,{TRACKER}")
    code, out, _ = run(capsys, net, "groups")
    assert code == 0 and out.splitlines()[0].split()[:2] == ["GROUP", "STORAGES"]


def test_conf_file(
    capsys: pytest.CaptureFixture[str],
    net: ScriptedNetwork,
    tracker: ScriptedServer,
    tmp_path: Path,
) -> None:
    tracker.add_golden(G["list_storage_group1"])
    conf = tmp_path / "client.conf"
    conf.write_text(f"network_timeout = 10\ntracker_server = {TRACKER}\n")
    code, out, _ = run(capsys, net, "--conf", str(conf), "storages", "group1")
    assert code == 0
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [
        ["100001", "127.0.0.1:23000", "ACTIVE"],
        ["100002", "127.0.0.1:23001", "ACTIVE"],
    ]


def test_download_to_a_file_and_to_stdout(
    capsysbinary: pytest.CaptureFixture[bytes],
    net: ScriptedNetwork,
    tracker: ScriptedServer,
    s1: ScriptedServer,
    tmp_path: Path,
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1), fetch_one(S1))
    s1.add_golden(G["download_file_whole"], G["download_file_offset_length"])
    assert main(["--tracker", TRACKER, "download", HELLO], connect=net.connect) == 0
    name = HELLO.rsplit("/", 1)[1]
    assert (tmp_path / name).read_bytes() == b"Hello, FastDFS!\n"
    argv = ["--tracker", TRACKER, "download", HELLO, "-", "--offset", "7", "--length", "6"]
    assert main(argv, connect=net.connect) == 0
    assert capsysbinary.readouterr().out == b"FastDF"


def test_info(
    capsys: pytest.CaptureFixture[str],
    net: ScriptedNetwork,
    tracker: ScriptedServer,
    s1: ScriptedServer,
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1), fetch_one(S1))
    s1.add_golden(G["query_file_info_normal"])
    code, out, _ = run(capsys, net, "--tracker", TRACKER, "info", HELLO)
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["file type"].strip() == "normal"
    assert fields["source storage id"].strip() == "100002"
    assert fields["file size"].strip() == "16"
    assert fields["file crc32"].strip() == "2253751077 (0x86558325)"
    code, out, _ = run(capsys, net, "--tracker", TRACKER, "info", "--json", HELLO)
    record = json.loads(out)
    assert record["crc32"] == 0x86558325 and record["create_time"] == 1795355529


def test_exists_exit_status(
    capsys: pytest.CaptureFixture[str],
    net: ScriptedNetwork,
    tracker: ScriptedServer,
    s1: ScriptedServer,
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1), fetch_one(S1))
    tracker.queue(Cmd.QUERY_FETCH_ALL, fetch_one(S1))
    s1.queue(
        Cmd.QUERY_FILE_INFO,
        Reply(G["query_file_info_normal"].response),
        Reply(reply(2)),
    )
    assert run(capsys, net, "--tracker", TRACKER, "exists", HELLO)[:2] == (0, f"{HELLO}: exists\n")
    assert run(capsys, net, "--tracker", TRACKER, "exists", "-q", MISSING)[:2] == (1, "")


def test_server_error_is_one_line(
    capsys: pytest.CaptureFixture[str],
    net: ScriptedNetwork,
    tracker: ScriptedServer,
    s1: ScriptedServer,
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1))
    tracker.queue(Cmd.QUERY_FETCH_ALL, fetch_one(S1))
    s1.add_golden(G["download_file_missing"])
    code, out, err = run(capsys, net, "--tracker", TRACKER, "download", MISSING, "-")
    assert code == 1 and out == ""
    assert_one_error_line(err, MISSING, "127.0.0.1:23001", "ENOENT")


def test_einval_from_an_appender_op(
    capsys: pytest.CaptureFixture[str],
    net: ScriptedNetwork,
    tracker: ScriptedServer,
    s1: ScriptedServer,
) -> None:
    tracker.queue(Cmd.QUERY_UPDATE, fetch_one(S1))
    s1.add_golden(G["truncate_file_shrink"])
    s1.queue(Cmd.TRUNCATE_FILE, Reply(reply(22), close=True))
    code, _, err = run(capsys, net, "--tracker", TRACKER, "truncate", APPENDER, "8")
    assert code == 1
    assert_one_error_line(err, "truncate_file", APPENDER, "127.0.0.1:23001", "EINVAL")
    code, _, err = run(capsys, net, "--tracker", TRACKER, "append", HELLO, "-")
    assert code == 1
    assert_one_error_line(err, HELLO, "not an appender file")


def test_unreachable_tracker(capsys: pytest.CaptureFixture[str], net: ScriptedNetwork) -> None:
    code, _, err = run(capsys, net, "--tracker", "127.0.0.9:22122", "groups")
    assert code == 1
    assert_one_error_line(err, "127.0.0.9:22122", "Connection refused")


def test_silent_tracker_times_out(
    capsys: pytest.CaptureFixture[str], net: ScriptedNetwork, tracker: ScriptedServer
) -> None:
    tracker.queue(Cmd.SERVER_LIST_ALL_GROUPS, Hang())
    code, _, err = run(capsys, net, "--tracker", TRACKER, "--timeout", "0.2", "groups")
    assert code == 1
    assert_one_error_line(err, TRACKER, "no answer within 0.2s")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["download", "not-an-id"], "is not a FastDFS file ID"),
        (["truncate", HELLO, "ten"], "is not a byte count"),
        (["meta", "set", HELLO, "novalue"], "is not NAME=VALUE"),
        (["upload", "x", "--prefix", "_s"], "--slave-of and --prefix go together"),
        (["--tracker", "host:notaport", "groups"], "bad port"),
        (["--tracker", "host:", "groups"], "a port must follow ':'"),
        (["--timeout", "-3", "groups"], "not a positive number of seconds"),
        (["meta"], "required: get|set"),
        (["--conf", "missing.conf", "groups"], "missing.conf: No such file"),
        (["frobnicate"], "invalid choice"),
        (["groups"], "no tracker given"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str, tmp_path: Path
) -> None:
    (tmp_path / "x").write_bytes(b"x")
    if argv[0] != "--tracker" and argv != ["groups"]:
        argv = ["--tracker", TRACKER, *argv]
    code, out, err = run(capsys, None, *argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1, err
    assert fragment in err and "--help" in err and "Traceback" not in err


def test_ctrl_c_while_loading_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console script imports the command late: ^C during the import is no traceback."""

    class InterruptedImport:
        def find_spec(self, name: str, *args: object) -> None:
            if name == "fdfsmount.cli.fdfs":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "fdfsmount.cli.fdfs")
    monkeypatch.delattr(fdfsmount.cli, "fdfs")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    assert fdfsmount.cli.main() == 130
    assert capsys.readouterr().err == "fdfs: interrupted\n"


def test_ctrl_c_during_a_request_is_one_line(tmp_path: Path) -> None:
    """SIGINT while the (silent) tracker is being waited for: exit 130, one line, no traceback."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        command = [
            sys.executable,
            "-c",
            "import sys, fdfsmount.cli; sys.exit(fdfsmount.cli.main())",
        ]
        child = subprocess.Popen(
            [*command, "--tracker", address, "groups"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Background jobs of a shell may inherit SIGINT ignored; a terminal's ^C is not.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            silent.settimeout(60)
            accepted, _ = silent.accept()  # the request is under way
            with accepted:
                child.send_signal(signal.SIGINT)
                out, err = child.communicate(timeout=60)
        finally:
            child.kill()
            child.wait()
    assert (child.returncode, out, err) == (130, b"", b"fdfs: interrupted\n")


def test_local_file_errors(capsys: pytest.CaptureFixture[str], net: ScriptedNetwork) -> None:
    code, _, err = run(capsys, net, "--tracker", TRACKER, "upload", "missing.bin")
    assert code == 1
    assert_one_error_line(err, "missing.bin", "No such file or directory")


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "FDFS_TRACKERS" in out and "examples:" in out and "exit status" in out
    assert main(["download", "--help"]) == 0
    assert "fdfs download ID - | less" in capsys.readouterr().out


def test_size_arg() -> None:
    assert [size_arg(t) for t in ("0", "4096", "64K", "1M", "2g", "1MiB")] == [
        0,
        4096,
        65536,
        1 << 20,
        2 << 30,
        1 << 20,
    ]


def test_progress_bar_render() -> None:
    bar = ProgressBar(io.StringIO(), "download x", 10 << 20)
    bar.done = 5 << 20
    line = bar.render(bar.started + 1, 80)
    assert line.startswith("download x [") and " 50%" in line and "5.0 MiB / 10.0 MiB" in line
    assert len(line) <= 80
    assert human_size(1536) == "1.5 KiB"


# ================================================================ harness cluster


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("builtin", True), id="builtin-storage-id"),
        pytest.param(("builtin", False), id="builtin-ip"),
        pytest.param(("native", True), id="native-storage-id", marks=pytest.mark.native),
        pytest.param(("native", False), id="native-ip", marks=pytest.mark.native),
    ],
)
def cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """group1 with two storages, on our servers and upstream's, in both file-ID modes.

    Upstream storages create subdirs**2 directories before they listen, and the
    teardown removes them again: 16 instead of 256 saves most of a minute.
    """
    cluster_module = pytest.importorskip("harness.cluster")
    backend, storage_id_mode = request.param
    with cluster_module.Cluster(
        {"group1": 2},
        backend=backend,
        storage_id_mode=storage_id_mode,
        subdirs=16 if backend == "native" else 256,
    ) as running:
        yield running


def cli(capsys: pytest.CaptureFixture[str], cluster: Any, *argv: str) -> str:
    code = main(["--tracker", cluster.trackers[0], "--timeout", "10", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    wait_until(check, timeout=timeout, interval=0.1)


def test_cluster_upload_download_info_meta(
    capsys: pytest.CaptureFixture[str], cluster: Any, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 20000  # 5 MB: several chunks
    (tmp_path / "photo.jpg").write_bytes(data)
    fid = cli(capsys, cluster, "upload", "photo.jpg", "--meta", "width=160", "--meta", "h=80")
    fid = fid.strip()
    assert parse_file_id(fid).name.endswith(".jpg")
    info = json.loads(cli(capsys, cluster, "info", "--json", fid))
    assert (info["size"], info["file_type"]) == (len(data), "normal")
    cli(capsys, cluster, "download", fid, "copy.jpg")
    assert (tmp_path / "copy.jpg").read_bytes() == data
    cli(capsys, cluster, "download", fid, str(tmp_path), "--offset", "1K", "--length", "1K")
    assert (tmp_path / parse_file_id(fid).name).read_bytes() == data[1024:2048]
    assert cli(capsys, cluster, "meta", "get", fid) == "h=80\nwidth=160\n"
    cli(capsys, cluster, "meta", "set", fid, "width=1024", "color=blue")
    assert cli(capsys, cluster, "meta", "get", fid) == "color=blue\nh=80\nwidth=1024\n"
    cli(capsys, cluster, "meta", "set", "--overwrite", fid, "author=alice")
    assert json.loads(cli(capsys, cluster, "meta", "get", "--json", fid)) == {"author": "alice"}

    slave = cli(capsys, cluster, "upload", "--slave-of", fid, "--prefix", "_s", "photo.jpg")
    assert slave.strip() == fid.replace(".jpg", "_s.jpg")
    assert json.loads(cli(capsys, cluster, "info", "--json", slave.strip()))["file_type"] == "slave"

    # Storages write their binlog through a buffer flushed about once a second.
    eventually(lambda: fid in cli(capsys, cluster, "ls", "group1").splitlines())
    assert cli(capsys, cluster, "exists", fid) == f"{fid}: exists\n"
    cli(capsys, cluster, "delete", slave.strip())
    cli(capsys, cluster, "delete", fid)
    eventually(lambda: main(["--tracker", cluster.trackers[0], "exists", "-q", fid]) == 1)


def test_cluster_appender_file(
    capsys: pytest.CaptureFixture[str],
    cluster: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "app.log").write_bytes(b"0123456789")
    (tmp_path / "more").write_bytes(b"ABCDE")
    (tmp_path / "patch").write_bytes(b"xyz")
    fid = cli(capsys, cluster, "upload", "--appender", "app.log").strip()
    cli(capsys, cluster, "append", fid, "more")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"FGH")))
    cli(capsys, cluster, "append", fid, "-")
    cli(capsys, cluster, "modify", fid, "2", "patch")
    cli(capsys, cluster, "truncate", fid, "14")
    cli(capsys, cluster, "download", fid, "out")
    assert (tmp_path / "out").read_bytes() == b"01xyz56789ABCD"
    info = json.loads(cli(capsys, cluster, "info", "--json", fid))
    assert (info["file_type"], info["size"]) == ("appender", 14)
    new = cli(capsys, cluster, "regenerate", fid).strip()
    assert json.loads(cli(capsys, cluster, "info", "--json", new))["file_type"] == "normal"
    cli(capsys, cluster, "download", new, "-")
    cli(capsys, cluster, "delete", new)


def test_cluster_groups_and_storages(capsys: pytest.CaptureFixture[str], cluster: Any) -> None:
    groups = json.loads(cli(capsys, cluster, "groups", "--json"))
    assert [(g["group_name"], g["storage_count"]) for g in groups] == [("group1", 2)]
    storages = json.loads(cli(capsys, cluster, "storages", "--json", "group1"))
    assert [s["status_name"] for s in storages] == ["ACTIVE", "ACTIVE"]


def test_cluster_errors(capsys: pytest.CaptureFixture[str], cluster: Any) -> None:
    missing = "group1/M00/00/00/oYYBAGsC84qASNMpAAAAFT6cIgk0171326"
    tracker = cluster.trackers[0]
    assert main(["--tracker", tracker, "exists", missing]) == 1
    capsys.readouterr()
    assert main(["--tracker", tracker, "download", missing, "-"]) == 1
    assert_one_error_line(capsys.readouterr().err, missing, "ENOENT")
    assert main(["--tracker", tracker, "storages", "nosuchgroup"]) == 1
    assert_one_error_line(capsys.readouterr().err, "nosuchgroup")


def upstream_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def c_tool(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def test_cluster_agrees_with_upstream_tools(
    capsys: pytest.CaptureFixture[str], cluster: Any, tmp_path: Path
) -> None:
    """Files written by either client read the same through the other (native only)."""
    if cluster.backend_name != "native":
        pytest.skip("compares with the upstream C tools, which run with the native servers")
    conf = str(cluster.client_conf)
    data = bytes(range(256)) * 4000 + b"tail\n"
    (tmp_path / "data.bin").write_bytes(data)

    ours = cli(capsys, cluster, "upload", "data.bin").strip()
    c_tool(upstream_tool("fdfs_download_file"), conf, ours, str(tmp_path / "by_c.bin"))
    assert (tmp_path / "by_c.bin").read_bytes() == data

    theirs = c_tool(upstream_tool("fdfs_upload_file"), conf, str(tmp_path / "data.bin")).strip()
    cli(capsys, cluster, "download", theirs, "by_us.bin")
    assert (tmp_path / "by_us.bin").read_bytes() == data

    upstream_info = dict(
        (k.strip(), v.strip())
        for k, _, v in (
            line.partition(":")
            for line in c_tool(upstream_tool("fdfs_file_info"), conf, theirs).splitlines()
        )
        if v
    )
    info = json.loads(cli(capsys, cluster, "info", "--json", theirs))
    assert int(upstream_info["file size"]) == info["size"] == len(data)
    assert upstream_info["file type"] == info["file_type"]
    assert upstream_info["source ip address"] == info["source_ip"]
    assert upstream_info["file crc32"].endswith(f"(0x{info['crc32']:08x})")

    appender = cli(capsys, cluster, "upload", "--appender", "data.bin").strip()
    c_tool(upstream_tool("fdfs_append_file"), conf, appender, str(tmp_path / "data.bin"))
    cli(capsys, cluster, "download", appender, "appended.bin")
    assert (tmp_path / "appended.bin").read_bytes() == data * 2


@pytest.mark.expect_log_warnings
@pytest.mark.parametrize("source", ["--tracker", "--conf", "FDFS_TRACKERS", "default"])
def test_connection_errors_say_where_the_trackers_came_from(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    source: str,
) -> None:
    """A client.conf nobody asked for (e.g. an upstream sample in /etc/fdfs) is named."""
    dead = "127.0.0.2:1"  # nothing listens there: connection refused
    conf = tmp_path / "client.conf"
    conf.write_text(f"tracker_server = {dead}\nconnect_timeout = 2\n")
    argv = ["--timeout", "5", "groups"]
    expected = {
        "--tracker": "from --tracker",
        "--conf": f"from --conf {conf}",
        "FDFS_TRACKERS": "from FDFS_TRACKERS",
        "default": f"from {conf}, read because no --tracker, --conf or FDFS_TRACKERS was given",
    }[source]
    if source == "--tracker":
        argv = ["--tracker", dead, *argv]
    elif source == "--conf":
        argv = ["--conf", str(conf), *argv]
    elif source == "FDFS_TRACKERS":
        monkeypatch.setenv("FDFS_TRACKERS", dead)
    else:
        monkeypatch.setattr(fdfs, "DEFAULT_CONF", str(conf))
    code, out, err = run(capsys, None, *argv)
    assert code == 1 and out == ""
    assert_one_error_line(err, f"[trackers {dead} {expected}]")
