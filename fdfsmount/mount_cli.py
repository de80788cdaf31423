"""The ``fdfsmount`` command: command line, daemonizing until the mount is live, one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import logging
import logging.handlers
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence

import trio

from . import __version__
from .mount import MountError, MountParts, serve
from .options import MountOptions, OptionError, build_options

log = logging.getLogger(__name__)

PROG = "fdfsmount"

DESCRIPTION = """\
Mount a FastDFS cluster as a read-only directory tree.

  /MOUNTPOINT/<group>/M<xx>/<HH>/<HH>/<name>  is the file with ID  <group>/M<xx>/<HH>/<HH>/<name>

Any valid file ID path can be opened, listed or not; `ls` of the last level shows
the files the storages report (see -o nolist). Normal files are 0444, appender
files 0644, directories 0755. FastDFS metadata appears as extended attributes
user.<key>, plus read-only user.fdfs.file_id, user.fdfs.type, user.fdfs.crc32 and
user.fdfs.source (try: getfattr -d FILE).

Without -f the command returns once the mount is live and the file system keeps
running in the background; unmount with `fusermount3 -u MOUNTPOINT` (or `umount`),
or send the process SIGTERM.
"""

EPILOG = """\
SOURCE:
  host:port[,host:port...]   tracker servers, e.g. 10.0.0.5:22122,10.0.0.6:22122
  anything (e.g. fdfs)       with -o conf=FILE: trackers come from that client.conf

mount options (-o name[=value],...; may be repeated):
  conf=FILE            FastDFS client.conf (tracker_server, connect_timeout, network_timeout)
  ro                   refuse every change with EROFS
  allow_other          let other users see the mount (needs user_allow_other in /etc/fuse.conf)
  default_permissions  let the kernel check file modes
  uid=N, gid=N         owner of every file and directory (default: the mounting user)
  umask=OCTAL          bits cleared from every mode (default: 022)
  attr_timeout=SECS    how long the kernel caches attributes (default: 10)
  entry_timeout=SECS   how long the kernel caches names (default: 10)
  readahead=SIZE       largest readahead window per open file (default: 64M)
  cache_size=SIZE      block cache shared by all open files (default: 256M)
  nolist               do not list files (directories show only names used here)
  list_ttl=SECS        how long a group's file listing is served before a refresh (default: 60)
  sparse               hide Mxx/HH directories the listing shows to be empty
  verify_exists        confirm with the storage that unlisted normal files exist on lookup
  timeout=SECS         deadline of every file operation; EIO after it (default: 30)
  logfile=FILE         log here (default: stderr with -f, syslog otherwise)
  debug                log every file system request
  Sizes take K, M or G; durations take ms, s, m or h. Options of mount(8) and fstab
  (_netdev, nofail, x-systemd.*, rw, auto, noauto, user, defaults, dev, suid, exec...)
  are accepted and ignored.

examples:
  fdfsmount 127.0.0.1:22122 /mnt/fdfs
  fdfsmount fdfs /mnt/fdfs -o conf=/etc/fdfs/client.conf,allow_other,readahead=32M
  fdfsmount 10.0.0.5:22122,10.0.0.6:22122 /mnt/fdfs -f -o debug
  /etc/fstab:
    10.0.0.5:22122 /mnt/fdfs fuse.fdfsmount _netdev,nofail,allow_other 0 0

exit status: 0 once mounted (or, with -f, after a clean unmount); 1 on any error.
"""

#: Exit codes of the daemon child, read by the waiting parent only as a fallback.
EXIT_OK = 0
EXIT_FAIL = 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        usage="%(prog)s SOURCE MOUNTPOINT [-o opt[,opt...]] [-f]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source", metavar="SOURCE", help="tracker list host:port[,...], or a name with -o conf="
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing, empty directory")
    p.add_argument(
        "-o", dest="options", action="append", default=[], metavar="OPTS",
        help="comma-separated mount options (see below)",
    )  # fmt: skip
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("-d", "--debug", action="store_true", help="foreground with debug logging")
    # Flags mount(8) hands to helpers (sloppy, fake, no-mtab, verbose, type): accepted, ignored.
    for flag in ("-s", "-n", "-v"):
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-t", dest="fstype", help=argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse_command_line(argv: Sequence[str]) -> MountOptions:
    args = parser().parse_args(argv)
    option_lists = list(args.options)
    if args.debug:
        option_lists.append("debug")
    mountpoint = os.path.abspath(args.mountpoint)
    return build_options(
        args.source, mountpoint, option_lists, foreground=args.foreground or args.debug
    )


def setup_logging(opts: MountOptions, *, daemon: bool) -> None:
    level = logging.DEBUG if opts.debug else logging.INFO
    handler: logging.Handler
    if opts.logfile:
        handler = logging.FileHandler(opts.logfile)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
        )
    elif daemon and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(
            logging.Formatter(f"{PROG}[%(process)d]: %(levelname)s %(name)s: %(message)s")
        )
    elif daemon:
        handler = logging.NullHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if not opts.debug:
        # pyfuse3 logs every unmount-time detail at INFO; keep ours readable.
        logging.getLogger("pyfuse3").setLevel(logging.WARNING)


def fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return EXIT_FAIL


def run_mount(opts: MountOptions, on_ready: Callable[[MountParts], None] | None) -> str | None:
    """Run the mount to the end; the error line if it could not start, else None."""
    try:
        trio.run(lambda: serve(opts, on_ready=on_ready))
    except MountError as exc:
        return str(exc)
    except KeyboardInterrupt:
        return "interrupted"
    except BaseException as exc:  # report, never a traceback on the terminal
        log.error("fdfsmount failed: %s", "".join(traceback.format_exception(exc)))
        if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return f"internal error: {type(exc).__name__}: {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_command_line(argv)
    except OptionError as exc:
        return fail(str(exc))
    # Quick checks first, so that most mistakes fail before any fork.
    from .mount import check_mountpoint

    try:
        check_mountpoint(opts.mountpoint)
    except MountError as exc:
        return fail(str(exc))
    if opts.foreground:
        setup_logging(opts, daemon=False)
        error = run_mount(opts, None)
        return fail(error) if error else EXIT_OK
    return daemonize(opts)


def daemonize(opts: MountOptions) -> int:
    """Fork; the child mounts and reports "ok" or its error line through a pipe.

    The parent exits 0 only after the child has the mount live, as mount(8) and
    fstab expect of a mount helper.
    """
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(write_end)
        return wait_for_child(pid, read_end, opts)
    os.close(read_end)
    try:
        os.setsid()
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        setup_logging(opts, daemon=True)
        reported = False

        def on_ready(parts: MountParts) -> None:
            nonlocal reported
            os.write(write_end, b"ok\n")
            os.close(write_end)
            reported = True
            # Detach from the caller's terminal or pipes: mount(8) may wait for EOF on them.
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)

        error = run_mount(opts, on_ready)
        if not reported:
            os.write(write_end, f"{error or 'the mount process ended before mounting'}\n".encode())
        code = EXIT_FAIL if error else EXIT_OK
    except BaseException:  # never unwind into the parent's code in the child
        code = EXIT_FAIL
    finally:
        logging.shutdown()
    os._exit(code)


def wait_for_child(pid: int, read_end: int, opts: MountOptions) -> int:
    # The child checks the cluster (bounded by `timeout`) and then mounts.
    deadline = time.monotonic() + 2 * opts.timeout + 30
    received = b""
    while b"\n" not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            os.kill(pid, signal.SIGTERM)
            return fail("timed out waiting for the mount to come up")
        ready, _, _ = select.select([read_end], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        received += chunk
    os.close(read_end)
    line = received.decode(errors="replace").strip()
    if line == "ok":
        return EXIT_OK
    # The child exits after reporting; reap it so no zombie outlives us.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return fail(line or "the mount process died before the mount was ready")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
