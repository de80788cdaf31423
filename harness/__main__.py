"""``python -m harness up``: run a FastDFS test cluster until interrupted.

Once every storage is ACTIVE, exactly one JSON line goes to stdout; progress
and errors go to stderr. SIGINT or SIGTERM (also during start-up) tears the
cluster down, leaving no process or port behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from .cluster import BACKENDS, BackendUnavailable, Cluster, ClusterError, parse_groups
from .process import ProcessError

log = logging.getLogger("harness")

DESCRIPTION = """\
Start a FastDFS cluster of real processes on loopback for tests, demos and
benchmarks, print where it is, and keep it running until interrupted.

Every tracker and storage is its own OS process with its own port and
directory: trackers listen on 127.0.0.2 and up, storages on 127.0.0.10 and up.
"""

UP_EPILOG = """\
output:
  Once the trackers list every storage as ACTIVE, one JSON line is printed on
  stdout, e.g.
    {"trackers": ["127.0.0.2:23817"], "client_conf": "/tmp/fdfs-cluster-x/client.conf",
     "storages": [{"name": "group1-storage1", "group": "group1", "host": "127.0.0.10",
                   "port": 18211, "storage_id": "100001", ...}, ...], ...}
  client_conf is a FastDFS client.conf (tracker_server lines) usable by any
  FastDFS client. Progress goes to stderr. Stop with Ctrl-C or SIGTERM: every
  process is killed and the directory removed (unless --dir was given).

examples:
  python -m harness up
  python -m harness up --groups group1:3 --trackers 2
  python -m harness up --backend native --dir /tmp/fdfs     # upstream servers
  python -m harness up > cluster.json &     # the line appears once it is ready
  fdfs_upload_file "$(jq -r .client_conf cluster.json)" photo.jpg
  kill %1                                   # SIGTERM: tear down

backends:
  builtin  this project's trio servers (always available)
  native   upstream fdfs_trackerd / fdfs_storaged from $FDFS_BIN_DIR or PATH

exit status: 0 after a clean shutdown, 1 if the cluster could not start,
2 for bad arguments.
"""


class _ArgumentParser(argparse.ArgumentParser):
    """Argument errors as one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _groups(text: str) -> dict[str, int]:
    try:
        return parse_groups(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="python -m harness",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up = commands.add_parser(
        "up",
        help="start a cluster and run until interrupted",
        description=DESCRIPTION,
        epilog=UP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument(
        "--groups",
        type=_groups,
        default="group1:2,group2:1",
        metavar="GROUP:N,...",
        help="groups and their number of storages (default: %(default)s)",
    )
    up.add_argument(
        "--trackers", type=_positive, default=1, metavar="N", help="trackers (default: 1)"
    )
    up.add_argument(
        "--backend",
        choices=BACKENDS,
        default="builtin",
        help="which servers to run (default: %(default)s)",
    )
    up.add_argument(
        "--dir",
        metavar="D",
        help="keep configs, logs and data in D, a new or empty directory, and leave it"
        " there at exit (default: a temporary directory, removed at exit)",
    )
    up.add_argument(
        "--ip-mode",
        action="store_true",
        help="name storages by IP instead of numeric storage ids (file IDs then carry the IP)",
    )
    up.add_argument(
        "--share-ip",
        action="store_true",
        help="storages of a group share one IP, told apart by port (storage-id mode only)",
    )
    up.add_argument(
        "--ip-size",
        type=int,
        choices=(16, 46),
        default=16,
        help="IP field size in tracker replies; 46 mimics response_ip_addr_size = IPv6",
    )
    up.add_argument(
        "--store-paths",
        type=_positive,
        default=1,
        metavar="N",
        help="store paths (M00, M01, ...) per storage (default: 1)",
    )
    up.add_argument(
        "--subdirs",
        type=_positive,
        default=256,
        metavar="N",
        help="subdir_count_per_path, 1..256 (default: 256)",
    )
    up.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds to wait for all storages to be ACTIVE (default: 60)",
    )
    up.add_argument(
        "--disk-mb",
        type=_positive,
        default=None,
        metavar="MB",
        help="native backend, as root: put each store path on a tmpfs of MB megabytes "
        "(4..4096) so the cluster's fill_disk can really fill it",
    )
    up.add_argument(
        "--synthetic-files",
        type=int,
        default=0,
        metavar="N",
        help="builtin backend: each storage also lists N made-up files on M00 (they list but "
        "cannot be read), to try listings of big groups (default: 0)",
    )
    up.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser


class _Shutdown(Exception):
    """SIGINT/SIGTERM arrived; raised only at points where the cluster can unwind."""


def run_up(args: argparse.Namespace) -> int:
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not signals:
            log.info("%s received, tearing down", signal.Signals(signum).name)
        signals.append(signum)

    def check_signals() -> None:
        if signals:
            raise _Shutdown

    # Handlers only set a flag: raising from inside one could interrupt teardown.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            cluster = Cluster(
                groups=args.groups,
                trackers=args.trackers,
                backend=args.backend,
                base_dir=args.dir,
                storage_id_mode=not args.ip_mode,
                share_ip=args.share_ip,
                ip_size=args.ip_size,
                store_paths=args.store_paths,
                subdirs=args.subdirs,
                ready_timeout=args.timeout,
                disk_mb=args.disk_mb,
                synthetic_files=args.synthetic_files,
            )
        except ValueError as exc:
            log.error("error: %s", exc)
            return 2
        try:
            log.info("starting a %s cluster %s", args.backend, args.groups)
            cluster.start(poll_hook=check_signals)
        except _Shutdown:
            return 0
        except BackendUnavailable as exc:
            log.error("error: %s", exc)
            return 1
        except (ClusterError, ProcessError, OSError) as exc:
            log.error("error: the cluster did not start: %s", exc)
            return 1
        try:
            sys.stdout.write(json.dumps(cluster.describe()) + "\n")
            sys.stdout.flush()
            log.info("cluster running in %s; Ctrl-C or SIGTERM to stop", cluster.base_dir)
            _run_until_signal(cluster, signals)
        finally:
            cluster.close()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_until_signal(cluster: Cluster, signals: list[int]) -> None:
    reported: set[str] = set()
    while not signals:
        time.sleep(0.2)
        for node in cluster.nodes:
            if not node.running and node.name not in reported:
                reported.add(node.name)
                status = node.process.returncode if node.process else None
                log.warning("%s exited unexpectedly (status %s)", node.name, status)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="harness: %(message)s",
    )
    if args.command == "up":
        return run_up(args)
    raise AssertionError(args.command)  # argparse allows no other command


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # stdout closed early, e.g. piped into `head -1`
        sys.exit(1)
