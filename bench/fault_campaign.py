"""The long fault campaign: random operations through two real mounts, with faults.

Starts a builtin cluster (group1 with two storages), mounts it twice, and runs
``--seeds`` seeded random-operation runs of ``--ops`` operations each (the model
of ``tests/fault_model.py``): writes, appends, truncates and fsyncs through several
descriptors of mount A, reads at random offsets through A and at the next open
through B, each compared with a local model; with ``--faults`` (the default)
storages are frozen, killed and restarted meanwhile. After each run every byte
acknowledged by fsync/close must be in the file on every storage.

Prints one line per seed and a summary: runs that lost acknowledged bytes or
returned wrong reads (with the seed to replay: ``--first-seed N --seeds 1``), and
the slowest single call against ``timeout`` + 1 s.

Usage: .venv/bin/python bench/fault_campaign.py [--seeds 20] [--ops 5000]
       [--first-seed 1] [--no-faults | --short-faults] [--one-mount] [--timeout 5] [--json]
       [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fault_model import ModelFailure, ModelReport, run_model

from fdfsmount.mountproc import MountProcess, mounted
from harness.cluster import Cluster


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    # A campaign in the background is stopped with SIGTERM: unmount and stop the
    # cluster on the way out, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupted)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="runs, one seed each")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--ops", type=int, default=5000, help="operations per run")
    parser.add_argument("--no-faults", action="store_true", help="no frozen or killed storages")
    parser.add_argument(
        "--short-faults",
        action="store_true",
        help="as the tests: freezes shorter than a request's timeout, kills of replicas only",
    )
    parser.add_argument("--one-mount", action="store_true", help="no reads through mount B")
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="the mounts' -o timeout; long freezes last from it to 4 s more",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="keep the mounts' logs here (mount-a.log, mount-b.log); default: deleted",
    )
    args = parser.parse_args()
    options = [f"timeout={args.timeout:g}", "attr_timeout=1", "entry_timeout=1"]
    reports: list[ModelReport] = []
    failures: list[str] = []
    started = time.monotonic()
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)

    def mount(cluster: Cluster, tmp: str, name: str) -> AbstractContextManager[MountProcess]:
        """Mount `name` ("a" or "b") with a cache of its own; its log kept with --log-dir."""
        log = None if args.log_dir is None else args.log_dir / f"mount-{name}.log"
        options_here = [*options, f"cache_dir={tmp}/c{name}"]
        return mounted(cluster.trackers, Path(tmp) / name, options_here, log_path=log)

    with (
        tempfile.TemporaryDirectory(prefix="fdfs-campaign-") as tmp,
        Cluster(groups={"group1": 2}) as cluster,
        mount(cluster, tmp, "a") as a,
        mount(cluster, tmp, "b") as b,
    ):
        print(
            f"builtin cluster {cluster.trackers[0]}, group1 with 2 storages; "
            f"mounts with {','.join(options)}; faults: {not args.no_faults}",
            flush=True,
        )
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            try:
                report = run_model(
                    seed,
                    cluster,
                    a.mountpoint,
                    None if args.one_mount else b.mountpoint,
                    ops=args.ops,
                    faults=not args.no_faults,
                    long_faults=not args.short_faults,
                    mount_timeout=args.timeout,
                )
            except ModelFailure as exc:
                failures.append(str(exc))
                print(f"FAILED {exc}", flush=True)
                continue
            reports.append(report)
            print(report.line(), flush=True)
            print(f"  time: {report.time_line()}", flush=True)
    slowest = max((r.slowest_call for r in reports), default=0.0)
    summary = {
        "runs": args.seeds,
        "ops_per_run": args.ops,
        "passed": len(reports),
        "failed": len(failures),
        "faults": sum(r.faults for r in reports),
        "reads_checked": sum(r.reads_checked for r in reports),
        "failed_calls": sum(r.failed_calls for r in reports),
        "slowest_call_s": round(slowest, 2),
        "call_bound_s": args.timeout + 1,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    print(
        f"{summary['passed']}/{args.seeds} runs kept every acknowledged byte and read right; "
        f"{summary['reads_checked']} reads checked, {summary['faults']} faults, "
        f"{summary['failed_calls']} calls failed during faults; slowest call "
        f"{slowest:.2f}s (bound {args.timeout + 1:g}s); {summary['minutes']} min"
    )
    if args.json:
        print(json.dumps(summary))
    return 1 if failures or slowest > args.timeout + 1 else 0


if __name__ == "__main__":
    sys.exit(main())
