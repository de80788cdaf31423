"""An unattended mount: `mount.serve` plus readiness, the status socket, state file and metrics.

What systemd, fstab and monitoring need beyond serving files:

- readiness only once the mount *answers* (a stat through it from a thread, see
  `sdnotify.when_mount_answers`): then ``READY=1`` goes to ``$NOTIFY_SOCKET``
  and the daemonizing parent is told to exit 0;
- the status socket and state file `fdfsmount status` reads (`status`);
- Prometheus metrics on the ``-o metrics=`` address (`metrics`);
- systemd's watchdog: ``WATCHDOG=1`` from the event loop itself, from the
  moment the mount answers until it is unmounted, so a wedged loop (one that
  serves no request) stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from .metrics import MetricsServer, MountCollector, Snapshot, take_snapshot
from .mount import MountError, MountParts, end_fuse_loop, serve
from .options import MountOptions
from .proto.errors import FdfsError
from .sdnotify import notify, watchdog_interval, when_mount_answers
from .status import (
    Action,
    ControlError,
    StatePaths,
    remove_state,
    runtime_dir,
    serve_status,
    sweep_stale,
    write_state,
)

log = logging.getLogger(__name__)


class ManagedMount:
    """State shared by the trio side and the threads (readiness, metrics) of one mount."""

    def __init__(self, opts: MountOptions, on_live: Callable[[], None] | None) -> None:
        self.opts = opts
        self.on_live = on_live
        self.pid = os.getpid()
        self.parts: MountParts | None = None
        self.paths = StatePaths.for_mount(opts.mountpoint, runtime_dir())
        self.info: dict[str, Any] = {
            "pid": self.pid,
            "mountpoint": opts.mountpoint,
            "source": opts.source.replace("\\,", ","),  # as given, without libfuse's escaping
            "started": time.time(),
            "socket": os.fspath(self.paths.socket),
            "metrics": None,
        }
        self.not_answering: str | None = None
        self.interrupted = ""  # the signal that ended the start, if one did
        self.serving = trio.Event()  # set once the mount answers requests
        self._token = trio.lowlevel.current_trio_token()

    def snapshot(self) -> Snapshot:
        return take_snapshot(self.parts, self.info)

    def actions(self) -> dict[str, Action]:
        """The control actions of `fdfsmount ctl`, served on the status socket."""

        def mounted() -> MountParts:
            if self.parts is None:
                raise ControlError("the mount is still starting")
            return self.parts

        async def refresh(request: dict[str, Any]) -> str:
            group = request.get("group")
            if group is not None and not isinstance(group, str):
                raise ControlError("refresh: GROUP must be a string")
            try:
                return await mounted().refresh(group)
            except (MountError, FdfsError) as exc:
                raise ControlError(f"refresh: {exc}") from None

        async def drop_caches(request: dict[str, Any]) -> str:
            return mounted().drop_caches()

        return {"refresh": refresh, "drop-caches": drop_caches}

    def on_ready(self, parts: MountParts) -> None:
        """The kernel has the mount (the FUSE loop starts right after this returns)."""
        self.parts = parts
        try:
            write_state(self.paths, self.info)
        except OSError as exc:
            log.warning("cannot write %s (%s): `fdfsmount status` will not find this mount",
                        self.paths.state, exc.strerror or exc)  # fmt: skip
        when_mount_answers(self.opts.mountpoint, self._answered, on_failure=self._failed)

    def _answered(self) -> None:  # in the readiness thread
        log.debug("the mount at %s answers", self.opts.mountpoint)
        notify(f"READY=1\nSTATUS=Mounted {self.info['source']} at {self.opts.mountpoint}")
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self.serving.set, trio_token=self._token)
        if self.on_live is not None:
            self.on_live()

    def _failed(self, reason: str) -> None:  # in the readiness thread
        ended = False
        with contextlib.suppress(trio.RunFinishedError):
            ended = trio.from_thread.run_sync(end_fuse_loop, trio_token=self._token)
        if ended:
            log.error("%s", reason)
            self.not_answering = reason
        else:  # a signal unmounted it first: the check failed because of that
            log.debug("%s (while unmounting)", reason)


async def _signals_outside_the_mount(
    managed: ManagedMount,
    startup: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """SIGTERM/SIGINT/SIGHUP while `mount.serve` does not listen for them itself.

    Before the mount is up, a signal gives up the start. Once `serve` is done
    with its own receiver (it is unmounting), the default action would kill
    the process halfway through its cleanup: the signal is only noted.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP and managed.parts is None:
                log.info("SIGHUP received before the mount was up: nothing to refresh yet")
            elif managed.parts is None:
                log.info("%s received before the mount was up: giving up", name)
                managed.interrupted = name
                startup.cancel()
            else:
                log.info("%s received: already unmounting", name)


async def feed_watchdog(
    interval: float, serving: trio.Event, *, environ: dict[str, str] | None = None
) -> None:
    """Send ``WATCHDOG=1`` every `interval`/2 seconds once `serving` is set; runs until cancelled.

    It runs as a task of the mount's own event loop, never in a thread: when
    the loop is wedged (a blocking call, a busy loop), no ping goes out.
    """
    await serving.wait()
    log.debug("feeding the systemd watchdog every %.3gs", interval / 2)
    while True:
        notify("WATCHDOG=1", environ=environ)
        await trio.sleep(interval / 2)


async def _status_listener(path: Path) -> trio.SocketListener | None:
    """Bind the status socket; None (and a warning) if that is impossible here."""
    try:
        await trio.Path(path.parent).mkdir(parents=True, exist_ok=True, mode=0o755)
        # left by a daemon that died: a live one would have the mountpoint busy
        await trio.Path(path).unlink(missing_ok=True)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(os.fspath(path))
            os.chmod(path, 0o600)
            sock.listen(16)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        log.warning("no status socket at %s (%s): `fdfsmount status` will not work",
                    path, exc.strerror or exc)  # fmt: skip
        return None
    return trio.SocketListener(sock)


async def run(opts: MountOptions, on_live: Callable[[], None] | None = None) -> None:
    """Serve the mount until it is unmounted; `on_live` runs (in a thread) once it answers.

    Raises `MountError` when the mount cannot start or never answers.
    """
    managed = ManagedMount(opts, on_live)
    metrics: MetricsServer | None = None
    failure: MountError | None = None
    try:
        if opts.metrics is not None:
            token = trio.lowlevel.current_trio_token()
            metrics = MetricsServer(opts.metrics, MountCollector(managed.snapshot, token))
            managed.info["metrics"] = metrics.url
        sweep_stale(managed.paths.state.parent)
        async with trio.open_nursery() as nursery:
            startup = trio.CancelScope()
            # Signals are ours before the status socket shows the daemon to anyone.
            await nursery.start(_signals_outside_the_mount, managed, startup)
            interval = watchdog_interval()
            if interval is not None:
                nursery.start_soon(feed_watchdog, interval, managed.serving)
            listener = await _status_listener(managed.paths.socket)
            if listener is not None:
                nursery.start_soon(serve_status, listener, managed.snapshot, managed.actions())
            try:
                with startup:
                    await serve(opts, on_ready=managed.on_ready)
                if startup.cancelled_caught:
                    failure = MountError(f"interrupted by {managed.interrupted}")
            except MountError as exc:
                failure = exc  # raised below: inside the nursery it would come out in a group
            finally:
                nursery.cancel_scope.cancel()
    finally:
        if metrics is not None:
            metrics.close()
        _remove_entries(managed)
    if failure is not None:
        raise failure
    if managed.not_answering is not None:
        raise MountError(managed.not_answering)


def _remove_entries(managed: ManagedMount) -> None:
    try:
        remove_state(managed.paths, managed.pid)
    except OSError as exc:
        log.warning("cannot remove %s: %s", managed.paths.state, exc)
