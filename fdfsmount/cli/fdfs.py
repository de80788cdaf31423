"""``fdfs``: upload, download and inspect FastDFS files from the shell.

Every subcommand is a thin wrapper over one `fdfsmount.proto.client.Client`
call. Errors become one ``fdfs: error: ...`` line on stderr (exit 1; 2 for
usage mistakes); tracebacks only with ``--debug``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TextIO

import trio

from fdfsmount.proto import FdfsError, FileId, InvalidFileId, ServerAddr, StorageStatus
from fdfsmount.proto.client import Client
from fdfsmount.proto.clientconf import parse_server_addr
from fdfsmount.proto.errors import ConnectError, NoStorage, ProtocolError, Timeout
from fdfsmount.proto.fileid import FileType, decode_file_id, parse_file_id, split_ext
from fdfsmount.proto.pool import ConnectFn

from ..errors import sole_error
from ..options import human_size
from ..urls import DEFAULT_SERVER_TTL, read_http_conf, url_for
from .progress import PROGRESS_THRESHOLD, ProgressBar

log = logging.getLogger(__name__)

PROG = "fdfs"
DEFAULT_CONF = "/etc/fdfs/client.conf"
_CHUNK = 1 << 20

DESCRIPTION = """\
Upload, download and inspect files in a FastDFS cluster.

Trackers come from the first of: --tracker HOST:PORT (repeatable), --conf FILE
(a FastDFS client.conf: tracker_server, connect_timeout, network_timeout), the
FDFS_TRACKERS environment variable (comma-separated HOST:PORT list), and
/etc/fdfs/client.conf. An error reaching a server names the trackers and where
they came from. Options may come before or after the subcommand.
"""

EPILOG = """\
examples:
  export FDFS_TRACKERS=10.0.0.5:22122,10.0.0.6:22122
  fdfs upload photo.jpg                      # prints the new file ID
  fdfs upload --group group1 --meta width=160 --meta height=80 photo.jpg
  fdfs upload --slave-of group1/M00/00/2A/wKgB...jpg --prefix _150x150 thumb.jpg
  fdfs download group1/M00/00/2A/wKgB...jpg            # to ./wKgB...jpg
  fdfs download group1/M00/00/2A/wKgB...jpg - | file -
  fdfs download --offset 1M --length 4K ID part.bin
  fdfs info --json group1/M00/00/2A/wKgB...jpg
  ID=$(fdfs upload --appender app.log); tail -f app.log | fdfs append "$ID" -
  fdfs meta set ID author=alice; fdfs meta get ID
  fdfs exists ID && echo present
  fdfs --conf /etc/fdfs/client.conf ls group1 | wc -l
  fdfs url --base-url http://img.example.com ID   # the nginx URL (signed: see url --help)

exit status: 0 success; 1 error (for exists: the file does not exist);
2 usage error (a bad option or argument, no tracker given); 130 interrupted.
"""


class UsageError(Exception):
    """A mistake in how the command was called (exit status 2)."""


# ---------------------------------------------------------------- argument types


def file_id_arg(text: str) -> FileId:
    try:
        return parse_file_id(text)
    except InvalidFileId:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a FastDFS file ID (group/Mxx/xx/xx/name)"
        ) from None


def size_arg(text: str) -> int:
    """A byte count: 4096, 64K, 1M, 2G (binary multiples)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in units else (raw, "")
    try:
        value = int(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a byte count (e.g. 4096, 64K, 1M)"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def pair_arg(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def timeout_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


# ---------------------------------------------------------------- parser


def _add_common(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    # Subcommands repeat the common options so they may follow the subcommand;
    # there they must not overwrite values given before it with defaults.
    def default(value: object) -> object:
        return argparse.SUPPRESS if in_subcommand else value

    group = parser.add_argument_group("connection")
    group.add_argument(
        "--tracker",
        metavar="HOST:PORT",
        action="append",
        default=default(None),
        help="a tracker server (repeat for several; port defaults to 22122)",
    )
    group.add_argument(
        "--conf",
        metavar="FILE",
        default=default(None),
        help="a FastDFS client.conf to read trackers and timeouts from",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=timeout_arg,
        default=default(None),
        help="give up on a server silent for this long (default 30, or the conf's)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="log failovers (-v) and every request (-vv) to stderr",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show a traceback for errors",
    )


class _ArgumentParser(argparse.ArgumentParser):
    """A usage mistake is one line naming the command, not argparse's usage block.

    `commands` holds the subcommands' parsers by name (the man page shows each)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, in_subcommand=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, epilog: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common(sub, in_subcommand=True)
        parser.commands[name] = sub
        return sub

    p = command(
        "upload",
        "upload a local file (or - for stdin) and print its file ID",
        "examples:\n  fdfs upload report.pdf\n  fdfs upload --appender --ext log -\n"
        "  fdfs upload --slave-of group1/M00/00/2A/wKgB...jpg --prefix _small small.jpg",
    )
    p.add_argument("file", metavar="FILE", help="the file to upload; - reads stdin")
    p.add_argument("--group", help="upload into this group (default: the tracker chooses)")
    p.add_argument(
        "--appender", action="store_true", help="create an appender file (can grow later)"
    )
    p.add_argument(
        "--meta",
        metavar="NAME=VALUE",
        type=pair_arg,
        action="append",
        default=[],
        help="set metadata on the new file (repeatable)",
    )
    p.add_argument(
        "--ext", help="extension stored in the file ID (default: the file's, up to 6 chars)"
    )
    p.add_argument(
        "--slave-of",
        metavar="ID",
        type=file_id_arg,
        help="upload as a slave file of this master (needs --prefix)",
    )
    p.add_argument("--prefix", help="slave name suffix added to the master's name, e.g. _150x150")

    p = command(
        "download",
        "download a file to DEST (default: its name in the current directory; - for stdout)",
        "examples:\n  fdfs download ID\n  fdfs download ID /tmp/\n  fdfs download ID - | less\n"
        "  fdfs download --offset 1M --length 64K ID chunk.bin",
    )
    p.add_argument("file_id", metavar="ID", type=file_id_arg)
    p.add_argument("dest", metavar="DEST", nargs="?", help="file or directory; - for stdout")
    p.add_argument("--offset", type=size_arg, default=0, help="start at this byte (64K, 1M...)")
    p.add_argument("--length", type=size_arg, help="at most this many bytes (default: to the end)")

    p = command("info", "show what the file ID says and what the storage server reports")
    p.add_argument("file_id", metavar="ID", type=file_id_arg)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = command("exists", "exit 0 if the file exists, 1 if it does not")
    p.add_argument("file_id", metavar="ID", type=file_id_arg)
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing; only exit status")

    p = command("delete", "delete a file")
    p.add_argument("file_id", metavar="ID", type=file_id_arg)

    p = command("append", "append a local file (or - for stdin) to an appender file")
    p.add_argument("file_id", metavar="ID", type=file_id_arg)
    p.add_argument("file", metavar="FILE", help="data to append; - reads stdin")

    p = command(
        "modify", "overwrite an appender file from OFFSET (OFFSET = size appends) with FILE or -"
    )
    p.add_argument("file_id", metavar="ID", type=file_id_arg)
    p.add_argument("offset", metavar="OFFSET", type=size_arg)
    p.add_argument("file", metavar="FILE", help="data to write; - reads stdin")

    p = command("truncate", "shrink an appender file to SIZE, or grow it with NUL bytes")
    p.add_argument("file_id", metavar="ID", type=file_id_arg)
    p.add_argument("size", metavar="SIZE", type=size_arg)

    p = command("regenerate", "turn an appender file into a normal file; prints the new file ID")
    p.add_argument("file_id", metavar="ID", type=file_id_arg)

    p = command("meta", "get or set a file's metadata (NAME=VALUE pairs)")
    meta = p.add_subparsers(dest="meta_command", metavar="get|set", required=True)
    mp = meta.add_parser("get", help="print NAME=VALUE lines", description="print NAME=VALUE lines")
    _add_common(mp, in_subcommand=True)
    parser.commands["meta get"] = mp
    mp.add_argument("file_id", metavar="ID", type=file_id_arg)
    mp.add_argument("--json", action="store_true", help="print one JSON object")
    mp = meta.add_parser(
        "set",
        help="merge NAME=VALUE pairs into the metadata (--overwrite replaces it all)",
        description="merge NAME=VALUE pairs into the metadata (--overwrite replaces it all)",
    )
    _add_common(mp, in_subcommand=True)
    parser.commands["meta set"] = mp
    mp.add_argument("file_id", metavar="ID", type=file_id_arg)
    mp.add_argument("pairs", metavar="NAME=VALUE", type=pair_arg, nargs="+")
    mp.add_argument("--overwrite", action="store_true", help="drop names not given")

    p = command("groups", "list the groups with their space and storage counts")
    p.add_argument("--json", action="store_true", help="print a JSON array")

    p = command("storages", "list the storage servers of GROUP")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("--json", action="store_true", help="print a JSON array")

    p = command(
        "ls",
        "list the file IDs of GROUP (from the storages' binlogs; can take a while)",
    )
    p.add_argument("group", metavar="GROUP")

    parser.commands["url"] = _add_url_command(commands)
    return parser


URL_EPILOG = """\
The URL is the one fastdfs-nginx-module serves. With a secret key (from
--http-conf, --secret-file or FDFS_HTTP_SECRET) it carries the anti-steal token
(?token=...&ts=...) that http.anti_steal.check_token demands. Nothing is sent
to any server.

examples:
  fdfs url --base-url http://img.example.com ID
  fdfs url --base-url http://10.0.0.5:8080 --http-conf /etc/fdfs/http.conf --ttl 300 ID
  FDFS_HTTP_SECRET=FastDFS1234567890 fdfs url --base-url http://cdn ID1 ID2
"""


def _add_url_command(commands: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = commands.add_parser(
        "url",
        help="print the HTTP URL of files (with an anti-steal token when a secret is given)",
        description="print the HTTP URL of files, one per line",
        epilog=URL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(p, in_subcommand=True)
    p.add_argument("file_ids", metavar="ID", type=file_id_arg, nargs="+", help="file IDs")
    p.add_argument(
        "--base-url",
        default=os.environ.get("FDFS_HTTP_BASE_URL"),
        help="scheme://host[:port][/prefix] of the nginx serving the files "
        "(default: $FDFS_HTTP_BASE_URL)",
    )
    p.add_argument(
        "--http-conf",
        metavar="FILE",
        help="an upstream http.conf: take http.anti_steal.secret_key and token_ttl from it",
    )
    p.add_argument(
        "--secret-file",
        metavar="FILE",
        help="read the secret key from FILE (default: $FDFS_HTTP_SECRET)",
    )
    p.add_argument(
        "--ttl",
        type=timeout_arg,
        metavar="SECONDS",
        help="how long the link should stay valid (default: the server's token_ttl)",
    )
    p.add_argument(
        "--server-ttl",
        type=int,
        metavar="SECONDS",
        help="the server's http.anti_steal.token_ttl (default: the http.conf's, else 600)",
    )
    p.add_argument("--no-group", action="store_true", help="leave the group out of the path")
    p.add_argument(
        "--token-over",
        choices=["remote_name", "file_id"],
        default="remote_name",
        help="hash the ID without its group (nginx module, default) or the whole ID "
        "(upstream's sample programs)",
    )
    p.add_argument("--download-name", metavar="NAME", help="add filename=NAME (attachment name)")
    return p


# ---------------------------------------------------------------- running


def client_from_args(args: argparse.Namespace, connect: ConnectFn | None = None) -> Client:
    """The client the options ask for; `args.tracker_source` says where its trackers came from."""
    overrides: dict[str, Any] = {}
    if connect is not None:
        overrides["connect"] = connect
    if args.tracker:
        try:
            overrides["trackers"] = [parse_server_addr(t) for t in args.tracker]
        except ValueError as exc:
            raise UsageError(f"--tracker: {exc}") from None
        args.tracker_source = "--tracker"
    conf = args.conf
    if conf is not None:
        args.tracker_source = args.tracker_source if args.tracker else f"--conf {conf}"
    if conf is None and "trackers" not in overrides:
        env = os.environ.get("FDFS_TRACKERS", "").strip()
        if env:
            try:
                overrides["trackers"] = [parse_server_addr(t) for t in env.split(",") if t.strip()]
            except ValueError as exc:
                raise UsageError(f"FDFS_TRACKERS: {exc}") from None
            args.tracker_source = "FDFS_TRACKERS"
        elif os.path.exists(DEFAULT_CONF):
            conf = DEFAULT_CONF
            args.tracker_source = (
                f"{DEFAULT_CONF}, read because no --tracker, --conf or FDFS_TRACKERS was given"
            )
        else:
            raise UsageError(
                "no tracker given: use --tracker HOST:PORT, --conf client.conf "
                "or FDFS_TRACKERS=HOST:PORT"
            )
    if conf is not None:
        try:
            client = Client.from_conf(conf, **overrides)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--conf {conf}: {_os_reason(exc)}") from None
    else:
        client = Client(overrides.pop("trackers"), **overrides)
    if args.timeout is not None:
        client.network_timeout = args.timeout
        client.connect_timeout = min(client.connect_timeout, args.timeout)
        client.pool.connect_timeout = client.connect_timeout
    return client


def main(argv: Sequence[str] | None = None, *, connect: ConnectFn | None = None) -> int:
    """Run the ``fdfs`` command; returns the exit status.

    ``connect`` replaces how connections are opened (tests use memory streams).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level={0: logging.ERROR, 1: logging.INFO}.get(args.verbose, logging.DEBUG),
        format=f"{PROG}: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    client: Client | None = None
    try:
        if args.command == "url":  # builds URLs only: no tracker needed
            return cmd_url(args)
        client = client_from_args(args, connect)
        return trio.run(run_command, client, args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc} (see '{PROG} --help')", file=sys.stderr)
        return 2
    except BaseException as exc:  # the one place errors become exit codes
        if _interrupted(exc):
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        error = sole_error(exc)
        if isinstance(error, SystemExit):
            raise
        if isinstance(error, BrokenPipeError):
            # The reader went away (e.g. `fdfs ls | head`): not worth a message.
            _silence_stdout()
            return 1
        if args.debug or not isinstance(error, FdfsError | OSError | ValueError):
            log.error("unexpected error", exc_info=error)
        message = describe_error(error)
        if _is_connection_error(error) and client is not None:
            trackers = ",".join(str(t) for t in client.trackers)
            source = getattr(args, "tracker_source", "")
            message += f" [trackers {trackers} from {source}]" if source else ""
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


def _is_connection_error(exc: BaseException) -> bool:
    """Could not reach, lost or could not understand a server: the trackers may be wrong."""
    if isinstance(exc, ConnectError | Timeout | ProtocolError | NoStorage):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, FdfsError) and exc.filename is None


def _interrupted(exc: BaseException) -> bool:
    """A Ctrl-C, also when it surfaced inside a nursery's exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, FdfsError):
        text = _os_reason(exc)
    else:
        text = str(exc) or type(exc).__name__
    notes = getattr(exc, "__notes__", None)
    if notes:
        text += " (" + "; ".join(notes) + ")"
    return text


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


async def run_command(client: Client, args: argparse.Namespace) -> int:
    async with client:
        handler = COMMANDS[args.command]
        return await handler(client, args)


# ---------------------------------------------------------------- helpers


def _stdout() -> TextIO:
    return sys.stdout


def _binary_stdout() -> BinaryIO:
    return sys.stdout.buffer


def _stdin() -> BinaryIO:
    return sys.stdin.buffer


def _show_progress(size: int | None) -> bool:
    return size is not None and size > PROGRESS_THRESHOLD and sys.stderr.isatty()


class _FileChunks:
    """A local file as async chunks, reporting progress (a class, not a generator,
    so nothing is left to finalize if the upload stops early)."""

    def __init__(self, file: BinaryIO, progress: Callable[[int], None]) -> None:
        self._file = file
        self._progress = progress
        self._done = 0

    def __aiter__(self) -> _FileChunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = self._file.read(_CHUNK)
        if not chunk:
            raise StopAsyncIteration
        self._done += len(chunk)
        self._progress(self._done)
        return chunk


async def _with_source(path: str, label: str, send: Callable[[Any, int | None], Any]) -> Any:
    """Call ``send(data, size)`` with the file at ``path`` (- = stdin), drawing progress."""
    if path == "-":
        return await send(_stdin(), None)
    # Opening may block (a FIFO waits for its writer): not on the event loop.
    with await trio.to_thread.run_sync(open, path, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            return await send(file, None)  # a pipe or device: size learnt by spooling
        if not _show_progress(info.st_size):
            return await send(Path(path), info.st_size)
        bar = ProgressBar(sys.stderr, label, info.st_size)
        try:
            return await send(_FileChunks(file, bar.update), info.st_size)
        finally:
            bar.finish()


# ---------------------------------------------------------------- commands


async def cmd_upload(client: Client, args: argparse.Namespace) -> int:
    if (args.slave_of is None) != (args.prefix is None):
        raise UsageError("--slave-of and --prefix go together")
    if args.slave_of is not None and (args.appender or args.group):
        raise UsageError("a slave file goes with its master: no --appender or --group")
    ext = args.ext if args.ext is not None else split_ext(os.path.basename(args.file))
    meta = dict(args.meta) or None

    async def send(data: Any, size: int | None) -> FileId:
        if args.slave_of is not None:
            return await client.upload_slave(
                args.slave_of, data, prefix=args.prefix, ext=ext, size=size, meta=meta
            )
        return await client.upload(
            data, size=size, ext=ext, group=args.group, meta=meta, appender=args.appender
        )

    fid = await _with_source(args.file, f"upload {os.path.basename(args.file)}", send)
    print(fid, file=_stdout())
    return 0


async def cmd_download(client: Client, args: argparse.Namespace) -> int:
    fid: FileId = args.file_id
    dest = args.dest if args.dest is not None else fid.name
    if dest != "-" and await trio.Path(dest).is_dir():
        dest = os.path.join(dest, fid.name)
    bar: ProgressBar | None = None
    if sys.stderr.isatty():
        size = await _expected_size(client, fid, args.offset, args.length)
        if _show_progress(size):
            bar = ProgressBar(sys.stderr, f"download {fid.name}", size)
    target: str | BinaryIO = _binary_stdout() if dest == "-" else dest
    try:
        await client.download_to(
            fid,
            target,
            offset=args.offset,
            length=args.length,
            progress=bar.update if bar else None,
        )
    finally:
        if bar is not None:
            bar.finish()
    if dest == "-":
        _binary_stdout().flush()
    return 0


async def _expected_size(client: Client, fid: FileId, offset: int, length: int | None) -> int:
    size = decode_file_id(fid).size
    if size is None:
        size = (await client.info(fid, calc_crc32=False)).size
    available = max(size - offset, 0)
    return available if length is None else min(length, available)


def _local_time(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


async def cmd_info(client: Client, args: argparse.Namespace) -> int:
    fid: FileId = args.file_id
    local = decode_file_id(fid)
    remote = await client.info(fid)
    record: dict[str, Any] = {
        "file_id": str(fid),
        "group": fid.group,
        "store_path": fid.store_path_index,
        "file_type": local.file_type.value,
        "source_storage_id": local.source_id,
        "source_ip": remote.source_ip or local.source_ip,
        "create_time": local.create_time,
        "modify_time": remote.create_time,
        "size": remote.size,
        "crc32": remote.crc32,
    }
    if local.size is not None and local.size != remote.size:
        log.warning("%s: the ID says %d bytes, the server %d", fid, local.size, remote.size)
    out = _stdout()
    if args.json:
        print(json.dumps(record, indent=2), file=out)
        return 0
    lines = [
        ("file id", str(fid)),
        ("file type", local.file_type.value),
        ("source storage id", str(local.source_id) if local.source_id is not None else "-"),
        ("source ip address", record["source_ip"] or "-"),
        ("file create timestamp", _local_time(local.create_time)),
        ("file modify timestamp", _local_time(remote.create_time)),
        ("file size", str(remote.size)),
        ("file crc32", f"{remote.crc32} (0x{remote.crc32:08x})"),
    ]
    if local.file_type is not FileType.NORMAL and remote.crc32 == 0:
        lines[-1] = ("file crc32", "0 (not computed)")
    for name, value in lines:
        print(f"{name + ':':<23}{value}", file=out)
    return 0


async def cmd_exists(client: Client, args: argparse.Namespace) -> int:
    found = await client.exists(args.file_id)
    if not args.quiet:
        print(f"{args.file_id}: {'exists' if found else 'not found'}", file=_stdout())
    return 0 if found else 1


async def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    await client.delete(args.file_id)
    return 0


async def cmd_append(client: Client, args: argparse.Namespace) -> int:
    async def send(data: Any, size: int | None) -> None:
        await client.append(args.file_id, data, size=size)

    await _with_source(args.file, f"append {os.path.basename(args.file)}", send)
    return 0


async def cmd_modify(client: Client, args: argparse.Namespace) -> int:
    async def send(data: Any, size: int | None) -> None:
        await client.modify(args.file_id, args.offset, data, size=size)

    await _with_source(args.file, f"modify {os.path.basename(args.file)}", send)
    return 0


async def cmd_truncate(client: Client, args: argparse.Namespace) -> int:
    await client.truncate(args.file_id, args.size)
    return 0


async def cmd_regenerate(client: Client, args: argparse.Namespace) -> int:
    print(await client.regenerate_appender_name(args.file_id), file=_stdout())
    return 0


async def cmd_meta(client: Client, args: argparse.Namespace) -> int:
    out = _stdout()
    if args.meta_command == "get":
        meta = await client.get_metadata(args.file_id)
        if args.json:
            print(json.dumps(meta, indent=2, sort_keys=True), file=out)
        else:
            for name, value in sorted(meta.items()):
                print(f"{name}={value}", file=out)
        return 0
    await client.set_metadata(args.file_id, dict(args.pairs), overwrite=args.overwrite)
    return 0


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )


def _mb(value: int) -> str:
    return human_size(value * 1024 * 1024)


async def cmd_groups(client: Client, args: argparse.Namespace) -> int:
    groups = await client.list_groups()
    out = _stdout()
    if args.json:
        print(json.dumps([dataclasses.asdict(g) for g in groups], indent=2), file=out)
        return 0
    rows = [["GROUP", "STORAGES", "READABLE", "WRITABLE", "TOTAL", "FREE", "PATHS"]]
    for g in groups:
        rows.append(
            [
                g.group_name,
                str(g.storage_count),
                str(g.readable_count),
                str(g.writable_count),
                _mb(g.total_mb),
                _mb(g.free_mb),
                str(g.store_path_count),
            ]
        )
    _table(rows, out)
    return 0


def _status_name(status: int) -> str:
    try:
        return StorageStatus(status).name
    except ValueError:
        return str(status)


async def cmd_storages(client: Client, args: argparse.Namespace) -> int:
    storages = await client.list_storages(args.group)
    out = _stdout()
    if args.json:
        records = []
        for s in storages:
            record = dataclasses.asdict(s)
            record["status_name"] = _status_name(s.status)
            records.append(record)
        print(json.dumps(records, indent=2), file=out)
        return 0
    rows = [["ID", "ADDRESS", "STATUS", "VERSION", "TOTAL", "FREE", "UPLOADS", "DOWNLOADS"]]
    for s in storages:
        rows.append(
            [
                s.storage_id,
                str(ServerAddr(s.ip_addr, s.storage_port)),
                _status_name(s.status),
                s.version or "-",
                _mb(s.total_mb),
                _mb(s.free_mb),
                str(s.counters.get("success_upload_count", 0)),
                str(s.counters.get("success_download_count", 0)),
            ]
        )
    _table(rows, out)
    return 0


async def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    out = _stdout()
    async with client.list_files(args.group) as files:
        async for fid in files:
            print(fid, file=out)
    return 0


def cmd_url(args: argparse.Namespace) -> int:
    if not args.base_url:
        raise UsageError("url: give --base-url URL (or set FDFS_HTTP_BASE_URL)")
    secret: str | None = None
    server_ttl = args.server_ttl
    if args.http_conf:
        try:
            settings = read_http_conf(args.http_conf)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--http-conf {args.http_conf}: {_os_reason(exc)}") from None
        secret = settings.secret
        if server_ttl is None:
            server_ttl = settings.token_ttl
        if secret is None:
            raise UsageError(f"--http-conf {args.http_conf}: no http.anti_steal.secret_key")
    if args.secret_file:
        try:
            secret = Path(args.secret_file).read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise UsageError(f"--secret-file: {_os_reason(exc)}") from None
    elif secret is None:
        secret = os.environ.get("FDFS_HTTP_SECRET") or None
    if args.ttl is not None and secret is None:
        raise UsageError(
            "--ttl needs a secret key (--http-conf, --secret-file or FDFS_HTTP_SECRET)"
        )
    out = _stdout()
    for fid in args.file_ids:
        try:
            url = url_for(
                fid,
                args.base_url,
                secret=secret,
                ttl=args.ttl,
                server_ttl=server_ttl if server_ttl is not None else DEFAULT_SERVER_TTL,
                with_group=not args.no_group,
                token_over=args.token_over,
                download_name=args.download_name,
            )
        except ValueError as exc:
            raise UsageError(f"url: {exc}") from None
        print(url, file=out)
    return 0


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], Awaitable[int]]] = {
    "upload": cmd_upload,
    "download": cmd_download,
    "info": cmd_info,
    "exists": cmd_exists,
    "delete": cmd_delete,
    "append": cmd_append,
    "modify": cmd_modify,
    "truncate": cmd_truncate,
    "regenerate": cmd_regenerate,
    "meta": cmd_meta,
    "groups": cmd_groups,
    "storages": cmd_storages,
    "ls": cmd_ls,
}


if __name__ == "__main__":
    sys.exit(main())
