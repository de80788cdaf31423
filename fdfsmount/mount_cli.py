"""The ``fdfsmount`` command: command line, daemonizing until the mount is live, one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence

import trio

from . import __version__
from .errors import sole_error
from .logsetup import setup_logging
from .mount import MountError
from .options import MountOptions, OptionError, build_options
from .usage import EXIT_FAIL, UsageParser

log = logging.getLogger(__name__)

PROG = "fdfsmount"

DESCRIPTION = """\
Mount a FastDFS cluster as a directory tree.

  /MOUNTPOINT/<group>/M<xx>/<HH>/<HH>/<name>  is the file with ID  <group>/M<xx>/<HH>/<HH>/<name>

Any file ID path the cluster confirms can be opened, listed or not (a name no
storage could have generated is ENOENT at once); `ls` of the last level shows the
files the storages report (see -o nolist). Normal files are 0444, appender
files 0644, directories 0755. FastDFS metadata appears as extended attributes
user.<key> (try: getfattr -d FILE), plus read-only user.fdfs.file_id, user.fdfs.type,
user.fdfs.crc32 and user.fdfs.source, read by name (getfattr -n user.fdfs.type FILE).

Appender files take ordinary writes (append, overwrite, truncate). A file created
in /MOUNTPOINT/<group>/ is a new appender file there, shown under the name given
(an alias kept in the cache directory) and under its file ID; a name next to a
master file of the form <master name without ext><prefix>.<ext> is a slave file.
rm deletes, mv renames aliases, setfattr edits metadata.

Without -f the command returns once the mount is live and the file system keeps
running in the background; unmount with `fusermount3 -u MOUNTPOINT` (or `umount`),
or send the process SIGTERM. SIGHUP reopens the log file and refreshes the listings.
"""

EPILOG = """\
SOURCE:
  host:port[,host:port...]   tracker servers, e.g. 10.0.0.5:22122,10.0.0.6:22122
  anything (e.g. fdfs)       with -o conf=FILE: trackers come from that client.conf

mount options (-o name[=value],...; may be repeated):
  conf=FILE            FastDFS client.conf (tracker_server, connect_timeout, network_timeout)
  ro                   refuse every change with EROFS
  groups=G1[,G2...]    mount only these groups (the others are not listed: ENOENT)
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
  exists_ttl=SECS      a file the cluster confirmed is trusted this long; a deletion
                       elsewhere shows within it (default: 10)
  trust_ids            take a well-formed normal-file ID as existing without asking
                       (no round trip; a deleted or made-up ID then fails on read)
  timeout=SECS         deadline of every file operation; EIO after it (default: 30)
  write_buffer=SIZE    writes to one file are sent in requests of up to this (default: 8M)
  write_idle=SECS      buffered writes are sent after this long without a new one (default: 1)
  write_buffers=N      the whole mount buffers at most write_buffer x N bytes; writers
                       wait for room beyond that (default: 16, i.e. 128M)
  cache_dir=DIR        where the names created here and the listing index are kept
                       (default: $XDG_CACHE_HOME/fdfsmount, /var/cache/fdfsmount for root)
  disk_cache=DIR       keep normal and slave files read here on local disk, across remounts
                       (default: off); see also: fdfsmount warmup
  disk_cache_size=SIZE largest size of the disk cache (default: 1G)
  disk_cache_min_free=SIZE  free space the disk cache always leaves (default: 1G)
  log_file=FILE        log here (also logfile=; default: stderr with -f, syslog otherwise)
  debug                log every file system request and every server request
  metrics=HOST:PORT    serve Prometheus metrics at http://HOST:PORT/metrics (default: none)
  Sizes take K, M or G; durations take ms, s, m or h. Options of mount(8) and fstab
  (_netdev, nofail, x-systemd.*, rw, auto, noauto, user, defaults, dev, suid, exec...)
  are accepted and ignored.

examples:
  fdfsmount 127.0.0.1:22122 /mnt/fdfs
  fdfsmount fdfs /mnt/fdfs -o conf=/etc/fdfs/client.conf,allow_other,readahead=32M
  fdfsmount 10.0.0.5:22122,10.0.0.6:22122 /mnt/fdfs -f -o debug
  /etc/fstab:
    10.0.0.5:22122 /mnt/fdfs fuse.fdfsmount _netdev,nofail,allow_other 0 0

other commands:
  fdfsmount status MOUNTPOINT [--json]         live counters of a running mount
  fdfsmount ctl MOUNTPOINT refresh [GROUP]     list the groups again now
  fdfsmount ctl MOUNTPOINT drop-caches         forget cached blocks and attributes
  fdfsmount warmup MOUNTPOINT PATH...          read files (or whole directories) into the
                                               mount's disk cache ahead of time
  fdfsmount install-helper [--prefix DIR]      link fdfsmount into /usr/local/bin for
                                               fstab and .mount units (mount(8) runs
                                               helpers without the caller's PATH)

exit status: 0 once mounted (or, with -f, after a clean unmount); 1 on any error,
a usage error included.
"""

#: Exit codes of the daemon child, read by the waiting parent only as a fallback.
EXIT_OK = 0


def parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog=PROG,
        usage="%(prog)s SOURCE MOUNTPOINT [-o opt[,opt...]] [-f]\n"
        "       %(prog)s status MOUNTPOINT | ctl MOUNTPOINT ACTION | install-helper\n"
        "       %(prog)s warmup MOUNTPOINT PATH...",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source", metavar="SOURCE", help="tracker list host:port[,...], or a name with -o conf="
    )
    p.add_argument(
        "mountpoint",
        metavar="MOUNTPOINT",
        help="an existing directory (a non-empty one is hidden while mounted)",
    )
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


def fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return EXIT_FAIL


def run_mount(opts: MountOptions, on_live: Callable[[], None] | None) -> str | None:
    """Run the mount to the end; the error line if it could not start, else None.

    `on_live` is called (from a thread) once the mount answers requests.
    """
    from . import managed

    try:
        trio.run(managed.run, opts, on_live)
    except BaseException as exc:  # report, never a traceback on the terminal
        leaf = sole_error(exc)
        if isinstance(leaf, MountError):
            return str(leaf)
        if isinstance(leaf, KeyboardInterrupt):
            return "interrupted"
        log.error("fdfsmount failed: %s", "".join(traceback.format_exception(exc)))
        return f"internal error: {type(leaf).__name__}: {leaf}"
    return None


SUBCOMMANDS = ("status", "ctl", "install-helper", "warmup")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # SOURCE comes first in the mount form, so a subcommand is the first word.
    if argv and argv[0] == "status":
        from .status import status_main

        return status_main(argv[1:])
    if argv and argv[0] == "ctl":
        from .status import ctl_main

        return ctl_main(argv[1:])
    if argv and argv[0] == "warmup":
        from .warmup import warmup_main

        return warmup_main(argv[1:])
    if argv and argv[0] == "install-helper":
        from .helper import helper_main

        return helper_main(argv[1:])
    try:
        opts = parse_command_line(argv)
    except OptionError as exc:
        return fail(str(exc))
    if opts.logfile:
        try:
            with open(opts.logfile, "a"):
                pass
        except OSError as exc:
            return fail(f"log_file={opts.logfile}: {exc.strerror}")
    # Quick checks first, so that most mistakes fail before any fork.
    from .mount import check_mountpoint

    try:
        check_mountpoint(opts.mountpoint)
    except MountError as exc:
        return fail(str(exc))
    if opts.foreground:
        logs = setup_logging(opts, daemon=False)
        try:
            error = run_mount(opts, None)
        finally:
            logs.close()
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
    code = EXIT_FAIL
    try:
        os.setsid()
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        logs = setup_logging(opts, daemon=True)
        reported = False
        report_lock = threading.Lock()

        def report(line: str) -> None:
            nonlocal reported
            with report_lock:
                if reported:
                    return
                reported = True
                os.write(write_end, f"{line}\n".encode())
                os.close(write_end)

        def on_live() -> None:  # from the readiness thread, once the mount answers
            report("ok")
            # Detach from the caller's terminal or pipes: mount(8) may wait for EOF on them.
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)

        try:
            error = run_mount(opts, on_live)
            report(error or "the mount process ended before the mount answered")
            code = EXIT_FAIL if error else EXIT_OK
        finally:
            logs.close()
    except BaseException:  # never unwind into the parent's code in the child
        code = EXIT_FAIL
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
