"""``fdfsmount status``: where a running mount reports how it is doing, and the command that asks.

A running mount keeps two entries in its runtime directory (``/run/fdfsmount``
for root, else ``$XDG_RUNTIME_DIR/fdfsmount`` or ``/tmp/fdfsmount-<uid>``;
``$FDFSMOUNT_RUNTIME_DIR`` overrides), named after the mount point escaped as
``systemd-escape -p`` does (``/mnt/fdfs`` -> ``mnt-fdfs``):

- ``<name>.json``: pid, mount point, source, status socket and metrics URL;
- ``<name>.sock``: a unix socket (mode 0600) that takes one request line per
  connection -- ``{"action": "status"}`` (also an empty request) or a control
  action such as ``{"action": "refresh", "group": "group1"}`` -- answers with
  one JSON line and closes.

So ``status`` works whether or not ``-o metrics=`` was given, and shows the
same numbers Prometheus would scrape. Control actions (``fdfsmount ctl``) are
taken only from root and from the user the daemon runs as: the socket's mode
keeps others out, and the daemon checks each caller's ``SO_PEERCRED`` too.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .options import human_size
from .proto.stats import LATENCY_BOUNDS, LatencyHistogram
from .usage import UsageParser

log = logging.getLogger(__name__)

PROG = "fdfsmount status"
CTL_PROG = "fdfsmount ctl"
FSTYPE = "fuse.fdfsmount"
QUERY_TIMEOUT = 10.0
CONTROL_TIMEOUT = 600.0  # a refresh lists whole groups: it may take minutes
REQUEST_LIMIT = 4096
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path, less the terminating NUL


def escape_path(path: str) -> str:
    """The mount point as a unit-name-safe string, like ``systemd-escape -p PATH``."""
    parts = [p for p in path.split("/") if p and p != "."]
    if not parts:
        return "-"
    out: list[str] = []
    for i, byte in enumerate("/".join(parts).encode()):
        ch = chr(byte)
        if ch == "/":
            out.append("-")
        elif (ch.isascii() and ch.isalnum()) or ch in ":_" or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def runtime_dir(uid: int | None = None) -> Path:
    """Where mounts run by `uid` (default: this process) keep their status entries."""
    override = os.environ.get("FDFSMOUNT_RUNTIME_DIR")
    if override:
        return Path(override)
    me = os.geteuid()
    uid = me if uid is None else uid
    if uid == 0:
        return Path("/run/fdfsmount")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if uid == me and xdg:
        return Path(xdg) / "fdfsmount"
    if Path(f"/run/user/{uid}").is_dir():
        return Path(f"/run/user/{uid}/fdfsmount")
    return Path(tempfile.gettempdir()) / f"fdfsmount-{uid}"


@dataclass(frozen=True, slots=True)
class StatePaths:
    state: Path
    socket: Path

    @classmethod
    def for_mount(cls, mountpoint: str, base: Path) -> StatePaths:
        name = escape_path(mountpoint)
        if len(name) > 200:  # file names stop at 255 bytes
            name = hashlib.sha256(mountpoint.encode()).hexdigest()[:32]
        sock = base / f"{name}.sock"
        if len(os.fsencode(sock)) > _SUN_PATH_MAX:
            sock = base / f"{hashlib.sha256(mountpoint.encode()).hexdigest()[:24]}.sock"
        return cls(base / f"{name}.json", sock)


def write_state(paths: StatePaths, info: dict[str, Any]) -> None:
    """Write the state file atomically (readers never see half of it)."""
    paths.state.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=paths.state.parent, prefix=".state-")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(info, out, indent=1)
            out.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, paths.state)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_state(paths: StatePaths, pid: int) -> None:
    """Remove the entries if they are still this process's (a new mount may own them now)."""
    try:
        owner = json.loads(paths.state.read_text()).get("pid")
    except (OSError, ValueError):
        owner = pid
    if owner != pid:
        return
    for path in (paths.state, paths.socket):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def sweep_stale(base: Path) -> int:
    """Remove the entries of daemons that died without cleaning up (SIGKILL); how many."""
    removed = 0
    try:
        states = list(base.glob("*.json"))
    except OSError:
        return 0
    for state in states:
        try:
            info = json.loads(state.read_text())
            pid = info["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not isinstance(pid, int) or pid_alive(pid):
            continue
        for path in (state, Path(info.get("socket") or state.with_suffix(".sock"))):
            if path.parent == base:
                with contextlib.suppress(OSError):
                    path.unlink()
        removed += 1
    # Sockets of daemons killed before they wrote a state file: nobody accepts on them.
    for sock_path in base.glob("*.sock"):
        if sock_path.with_suffix(".json").exists():
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(os.fspath(sock_path))
            except ConnectionRefusedError:
                with contextlib.suppress(OSError):
                    sock_path.unlink()
                removed += 1
            except OSError:
                pass
    return removed


#: A control action: takes the request's arguments, returns one line for the caller;
#: raises `ControlError` with the reason it could not be done.
Action = Callable[[dict[str, Any]], Awaitable[str]]


class ControlError(Exception):
    """A control action could not be done; the message is for the caller."""


def peer_uid(sock: trio.socket.SocketType) -> int:
    """The uid of the process at the other end of a unix socket (``SO_PEERCRED``)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


async def _read_request(stream: trio.SocketStream) -> dict[str, Any]:
    data = b""
    while b"\n" not in data and len(data) < REQUEST_LIMIT:
        chunk = await stream.receive_some(REQUEST_LIMIT)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\n", 1)[0].strip()
    if not line:
        return {"action": "status"}
    request = json.loads(line)
    if not isinstance(request, dict) or not isinstance(request.get("action"), str):
        raise ValueError("a request is a JSON object with an 'action'")
    return request


async def serve_status(
    listener: trio.SocketListener,
    snapshot: Callable[[], dict[str, Any]],
    actions: Mapping[str, Action] | None = None,
    *,
    owner_uid: int | None = None,
) -> None:
    """Answer each connection on the status socket: a snapshot, or the result of an action.

    Actions are run for root and `owner_uid` (default: this process's user) only.
    """
    actions = actions or {}
    owner = os.geteuid() if owner_uid is None else owner_uid

    async def act(stream: trio.SocketStream, request: dict[str, Any]) -> dict[str, Any]:
        name = request["action"]
        action = actions.get(name)
        if action is None:
            known = ", ".join(["status", *actions])
            return {"ok": False, "error": f"unknown action {name!r} (known: {known})"}
        uid = peer_uid(stream.socket)
        if uid not in (0, owner):
            log.warning("refused %s from uid %d (only root and uid %d may)", name, uid, owner)
            return {
                "ok": False,
                "error": f"permission denied: only root and the user who mounted it "
                f"(uid {owner}) may run {name}; you are uid {uid}",
            }
        log.info("%s requested by uid %d", name, uid)
        try:
            with trio.fail_after(CONTROL_TIMEOUT):
                return {"ok": True, "message": await action(request)}
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except trio.TooSlowError:
            return {"ok": False, "error": f"{name} did not finish within {CONTROL_TIMEOUT:g}s"}

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.fail_after(QUERY_TIMEOUT):
                    request = await _read_request(stream)
                if request["action"] == "status":
                    reply: dict[str, Any] = snapshot()
                else:
                    reply = await act(stream, request)
                with trio.move_on_after(QUERY_TIMEOUT):
                    await stream.send_all(json.dumps(reply).encode() + b"\n")
            except (trio.BrokenResourceError, trio.TooSlowError):
                pass
            except ValueError as exc:  # not JSON, or not a request
                with contextlib.suppress(trio.BrokenResourceError):
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                    await stream.send_all(json.dumps(reply).encode() + b"\n")
            except Exception:
                log.exception("status request failed")

    await trio.serve_listeners(answer, [listener])


# -- the command -------------------------------------------------------------


class StatusError(Exception):
    """What is wrong, in one line for the operator."""


@dataclass(frozen=True, slots=True)
class MountEntry:
    mountpoint: str
    fstype: str
    source: str
    options: dict[str, str]


def _unescape_octal(field: str) -> str:
    out = bytearray()
    i = 0
    raw = field.encode()
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def find_mount(mountpoint: str, mountinfo: str = "/proc/self/mountinfo") -> MountEntry | None:
    """The file system mounted at `mountpoint` (the topmost one), if any."""
    found: MountEntry | None = None
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as lines:
        for line in lines:
            fields = line.split()
            if "-" not in fields:
                continue
            sep = fields.index("-")
            if len(fields) < sep + 3 or _unescape_octal(fields[4]) != mountpoint:
                continue
            options = {}
            for item in fields[sep + 3].split(","):
                key, _, value = item.partition("=")
                options[key] = value
            found = MountEntry(
                mountpoint, fields[sep + 1], _unescape_octal(fields[sep + 2]), options
            )
    return found


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def locate(mountpoint: str) -> tuple[MountEntry, dict[str, Any]]:
    """The mount entry and the state file of the fdfsmount mount at `mountpoint`."""
    entry = find_mount(mountpoint)
    if entry is None:
        raise StatusError(f"{mountpoint}: nothing is mounted there")
    if entry.fstype != FSTYPE:
        raise StatusError(
            f"{mountpoint}: not an fdfsmount mount (it is a {entry.fstype} mount of {entry.source})"
        )
    owner = entry.options.get("user_id", "")
    candidates = [runtime_dir(), runtime_dir(0)]
    if owner.isdigit():
        candidates.insert(0, runtime_dir(int(owner)))
    seen: set[Path] = set()
    for base in candidates:
        if base in seen:
            continue
        seen.add(base)
        paths = StatePaths.for_mount(mountpoint, base)
        try:
            state = json.loads(paths.state.read_text())
        except FileNotFoundError:
            continue
        except PermissionError:
            raise StatusError(
                f"{mountpoint}: cannot read {paths.state}: permission denied "
                "(ask as the user that mounted it, or as root)"
            ) from None
        except (OSError, ValueError) as exc:
            raise StatusError(f"{mountpoint}: unreadable state file {paths.state}: {exc}") from None
        if state.get("mountpoint") != mountpoint:
            continue
        state.setdefault("socket", os.fspath(paths.socket))
        return entry, state
    where = ", ".join(os.fspath(b) for b in dict.fromkeys(candidates))
    raise StatusError(
        f"{mountpoint}: an fdfsmount mount, but its daemon left no status in {where} "
        "(started by an older fdfsmount, or with another FDFSMOUNT_RUNTIME_DIR?)"
    )


def query(
    socket_path: str, request: dict[str, Any] | None = None, timeout: float = QUERY_TIMEOUT
) -> dict[str, Any]:
    """Send one request (default: a snapshot) to a running mount's status socket; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(json.dumps(request or {"action": "status"}).encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    result: dict[str, Any] = json.loads(b"".join(chunks))
    return result


def ask(
    mountpoint: str, request: dict[str, Any] | None = None, timeout: float = QUERY_TIMEOUT
) -> dict[str, Any]:
    """The live snapshot of the fdfsmount mount at `mountpoint` (or its answer to `request`);
    `StatusError` says why not."""
    _entry, state = locate(mountpoint)
    pid = state.get("pid")
    if isinstance(pid, int) and not pid_alive(pid):
        raise StatusError(
            f"{mountpoint}: its fdfsmount process ({pid}) is gone; if the mount says "
            f"'Transport endpoint is not connected', clear it with: fusermount3 -u -z {mountpoint}"
        )
    try:
        return query(state["socket"], request, timeout)
    except PermissionError:
        try:
            owner = f"uid {os.stat(state['socket']).st_uid}"
        except OSError:
            owner = "the user that mounted it"
        raise StatusError(
            f"{mountpoint}: permission denied on {state['socket']}: only root and "
            f"{owner} (who mounted it) may ask; you are uid {os.geteuid()}"
        ) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StatusError(f"{mountpoint}: no answer from pid {pid} ({reason})") from None


# -- the human summary ---------------------------------------------------------


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _top(counts: dict[str, int], limit: int = 8) -> str:
    if not counts:
        return "none"
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{name} {n}" for name, n in ranked[:limit])
    if len(ranked) > limit:
        shown += f", ... ({len(ranked) - limit} more)"
    return shown


def _merge(histograms: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One histogram summing several (the operations of one server)."""
    merged: dict[str, Any] = {"buckets": [0] * (len(LATENCY_BOUNDS) + 1), "sum": 0.0, "count": 0}
    for hist in histograms:
        merged["buckets"] = [a + b for a, b in zip(merged["buckets"], hist["buckets"], strict=True)]
        merged["sum"] += hist["sum"]
        merged["count"] += hist["count"]
    return merged


def _ms(bound: float | None) -> str:
    """A quantile read off a histogram: the bucket bound it is under."""
    if bound is None:
        return "-"
    if bound == float("inf"):
        return f"> {LATENCY_BOUNDS[-1]:g} s"
    return f"<= {bound * 1000:g} ms"


def format_status(snap: dict[str, Any]) -> str:
    """A few readable lines about a mount, from a snapshot."""
    lines = [
        f"{snap.get('mountpoint')}: fdfsmount {snap.get('version', '?')}, pid {snap.get('pid')}, "
        f"{snap.get('state', '?')}, up {human_duration(time.time() - snap.get('started', 0))}",
        f"  source      {snap.get('source', '?')}",
        f"  metrics     {snap.get('metrics') or 'off (-o metrics=HOST:PORT to serve them)'}",
    ]
    counters: dict[str, int] = snap.get("counters") or {}
    if not counters:
        return "\n".join(lines)
    fuse = snap.get("fuse", {})
    errors = {
        f"{op} {name}": n
        for op, by_errno in fuse.get("errors", {}).items()
        for name, n in by_errno.items()
    }
    lookups = counters.get("cache_hits", 0) + counters.get("cache_misses", 0)
    hit_rate = f" ({100 * counters.get('cache_hits', 0) / lookups:.1f}% hits)" if lookups else ""
    lines += [
        f"  open files  {counters['open_files']} "
        f"(readahead window {human_size(counters['readahead_window'])}, "
        f"max {human_size(snap.get('readahead_max', 0))}); "
        f"{counters['pending_write_files']} with unsent writes",
        f"  read        {human_size(counters['fuse_bytes_read'])} "
        f"in {fuse.get('requests', {}).get('read', 0)} reads",
        f"  written     {human_size(counters['fuse_bytes_written'])} "
        f"in {fuse.get('requests', {}).get('write', 0)} writes; "
        f"sent {human_size(counters.get('write_bytes_sent', 0))} "
        f"in {counters.get('write_requests', 0)} requests "
        f"({counters.get('write_failures', 0)} failed)",
        f"  downloaded  {human_size(counters['read_bytes_downloaded'])} "
        f"in {counters['read_downloads']} downloads, "
        f"{counters['read_prefetch_chunks']} readahead chunks "
        f"({counters['read_prefetch_failures']} failed)",
        f"  cache       {human_size(counters['cache_bytes'])} of "
        f"{human_size(snap.get('cache_capacity', 0))}, "
        f"{counters['cache_hits']} hits, {counters['cache_misses']} misses{hit_rate}",
        f"  requests    {_top(fuse.get('requests', {}))}",
        f"  failures    {_top(errors)}",
    ]
    if "disk_cache_hits" in counters:
        lines.append(
            f"  disk cache  {human_size(counters['disk_cache_bytes'])} in "
            f"{counters['disk_cache_files']} files; {counters['disk_cache_hits']} hits, "
            f"{counters['disk_cache_misses']} misses, {counters['disk_cache_corrupt']} failed "
            f"their crc32, {counters['disk_cache_evictions']} evicted"
        )
    if "list_refreshes" in counters:
        lines.append(
            f"  listing     {counters['list_indexed_files']} files indexed; "
            f"{counters['list_refreshes']} refreshes read {counters['list_storages_read']} "
            f"storages, skipped {counters['list_storages_skipped']} unchanged"
        )
    client = snap.get("client")
    if client:
        lines += [
            f"  protocol    {_top(client['requests'])}",
            f"  proto errs  {_top(client['errors'])}",
        ]
        histograms = client.get("latency_histograms", {})
        for server, (count, total) in sorted(client["latency"].items()):
            average = 1000 * total / count if count else 0.0
            merged = _merge(histograms.get(server, {}).values())
            lines.append(
                f"  server      {server}: {count} requests, average {average:.1f} ms, "
                f"p50 {_ms(LatencyHistogram.quantile(merged, 0.5))}, "
                f"p99 {_ms(LatencyHistogram.quantile(merged, 0.99))}"
            )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog=PROG,
        description="Show the live counters of a running fdfsmount mount.",
        epilog="exit status: 0 with a report; 1 when MOUNTPOINT is not a live fdfsmount mount",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--json", action="store_true", help="print the raw snapshot as JSON")
    return p


def _ask_or_fail(
    mountpoint: str, request: dict[str, Any] | None = None, timeout: float = QUERY_TIMEOUT
) -> dict[str, Any] | None:
    """`ask`, with every failure printed as one line (None then)."""
    try:
        return ask(mountpoint, request, timeout)
    except StatusError as exc:
        print(f"fdfsmount: {exc}", file=sys.stderr)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        print(f"fdfsmount: {mountpoint}: {exc.strerror}", file=sys.stderr)
    return None


def write_stdout(text: str) -> int:
    """Print `text`; a reader that went away (``| head``) is no error and no traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that is quiet too.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
    return 0


def status_main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    mountpoint = os.path.realpath(args.mountpoint)
    snap = _ask_or_fail(mountpoint)
    if snap is None:
        return 1
    if args.json:
        return write_stdout(json.dumps(snap, indent=1, sort_keys=True) + "\n")
    return write_stdout(format_status(snap) + "\n")


CTL_EPILOG = """\
actions:
  refresh [GROUP]   ask the tracker for the groups and list GROUP (default: every
                    group) again now, instead of after list_ttl; waits for the listing
  drop-caches       forget cached file blocks, attributes and metadata (unsent
                    writes are kept); the next reads ask the storages again

Only root and the user who mounted MOUNTPOINT may run actions. SIGHUP to the
daemon reopens its log file and refreshes every group (systemctl reload).

exit status: 0 when the action was done; 1 otherwise (with one line saying why)
"""


def ctl_parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog=CTL_PROG,
        description="Ask a running fdfsmount mount to do something now.",
        epilog=CTL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    actions = p.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=UsageParser
    )
    refresh = actions.add_parser("refresh", help="list the groups again now")
    refresh.add_argument("group", metavar="GROUP", nargs="?", help="only this group")
    actions.add_parser("drop-caches", help="forget cached blocks, attributes and metadata")
    return p


def ctl_main(argv: Sequence[str]) -> int:
    args = ctl_parser().parse_args(argv)
    mountpoint = os.path.realpath(args.mountpoint)
    request: dict[str, Any] = {"action": args.action}
    if args.action == "refresh" and args.group:
        request["group"] = args.group
    reply = _ask_or_fail(mountpoint, request, CONTROL_TIMEOUT + QUERY_TIMEOUT)
    if reply is None:
        return 1
    if not reply.get("ok"):
        print(f"fdfsmount: {mountpoint}: {reply.get('error', 'failed')}", file=sys.stderr)
        return 1
    return write_stdout(f"{mountpoint}: {reply.get('message', 'done')}\n")
