"""The long replica-convergence campaign: seeded changes on appender files while storages fail.

Starts a cluster (group1 with two storages) per seed and runs the client-level
campaign of ``tests/replica_campaign.py``: 4 KiB appends, modifies and
truncates through the tracker's routing while storages are killed, frozen
(SIGSTOP) and restarted; each change retried until acknowledged; afterwards
every storage is read directly and must hold every acknowledged byte.

Prints one line per seed and a summary; exits 1 if any acknowledged byte was
lost or a change could not be made. Replay one seed with ``--first-seed N
--seeds 1``.

Usage: .venv/bin/python bench/fault_replication.py [--seeds 20] [--ops 5000]
       [--first-seed 1] [--backend builtin|native] [--no-truncate] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from replica_campaign import CampaignFailure, CampaignResult, run_campaign

from harness.cluster import Cluster


async def one_seed(seed: int, ops: int, backend: str, truncates: bool) -> CampaignResult | str:
    kwargs: dict[str, object] = {"heartbeat_interval": 0.5, "offline_after": 1.5}
    if backend == "native":
        kwargs = {"subdirs": 16}
    async with Cluster(groups={"group1": 2}, backend=backend, **kwargs) as cluster:  # type: ignore[arg-type]
        try:
            return await run_campaign(cluster, seed, ops, truncates=truncates)
        except CampaignFailure as exc:
            return str(exc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="runs, one seed each")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--ops", type=int, default=5000, help="changes per run")
    parser.add_argument("--backend", choices=("builtin", "native"), default="builtin")
    parser.add_argument("--json", action="store_true", help="one JSON object per seed")
    parser.add_argument(
        "--no-truncate",
        action="store_true",
        help="appends and modifies only (upstream's"
        " storages answer some truncates with a body the client refuses)",
    )
    args = parser.parse_args()
    if args.seeds < 1 or args.ops < 1:
        parser.error("--seeds and --ops must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    failures = 0
    lost_total = 0
    started = time.monotonic()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        outcome = trio.run(one_seed, seed, args.ops, args.backend, not args.no_truncate)
        if isinstance(outcome, str):
            failures += 1
            line = {"seed": seed, "error": outcome}
            print(json.dumps(line) if args.json else f"seed {seed}: FAILED: {outcome}", flush=True)
            continue
        lost_total += outcome.lost_bytes
        failures += bool(outcome.lost)
        if args.json:
            print(json.dumps({"seed": seed, **vars(outcome)}), flush=True)
        else:
            print(outcome.summary(), flush=True)
            for where, count in outcome.lost.items():
                print(f"  lost {count} bytes: {where}", flush=True)
    print(
        f"{args.seeds} seeds x {args.ops} changes on {args.backend}:"
        f" {failures} failed, {lost_total} acknowledged bytes lost"
        f" ({time.monotonic() - started:.0f} s)",
        flush=True,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
