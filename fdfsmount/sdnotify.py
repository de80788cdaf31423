"""systemd's readiness protocol (sd_notify) and the check that a new mount answers.

`notify` sends one datagram of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket
named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace), as
libsystemd's ``sd_notify`` does; without that variable it does nothing. Under
``Type=notify`` the daemon says ``READY=1`` once the mount answers and
``STOPPING=1`` when it starts to unmount. With ``WatchdogSec=`` systemd sets
``$WATCHDOG_USEC``; `watchdog_interval` reads it and the mount's event loop
sends ``WATCHDOG=1`` (see `managed.feed_watchdog`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 60.0  # give up waiting for a stat of the new mount after this long


def notify(state: str, *, environ: dict[str, str] | None = None) -> bool:
    """Send `state` (e.g. ``"READY=1"``) to the service manager; False if there is none.

    Never raises: a service manager that went away must not take the mount with it.
    """
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address[0] == "@":
        target: str | bytes = b"\0" + address[1:].encode()
    elif address[0] == "/":
        target = address
    else:
        log.warning("ignoring NOTIFY_SOCKET=%r: not a unix socket path", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify the service manager at %s (%s): %s", address, state, exc)
        return False
    log.debug("notified the service manager: %s", state.replace("\n", " "))
    return True


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds within which systemd wants ``WATCHDOG=1`` (``$WATCHDOG_USEC``); None: no watchdog.

    As ``sd_watchdog_enabled``: a ``$WATCHDOG_PID`` naming another process
    (a forked child of the service's main process) means the watchdog is not ours.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number", usec)
        return None
    return value / 1e6 if value > 0 else None


def mount_answers(mountpoint: str) -> bool:
    """True once `mountpoint` is a different file system from its parent and answers a stat.

    The stat goes through the new mount, so it returns only after the FUSE
    loop has done the INIT handshake and answered GETATTR of the root.
    """
    parent = os.path.dirname(mountpoint.rstrip("/")) or "/"
    return os.stat(mountpoint).st_dev != os.stat(parent).st_dev


def when_mount_answers(
    mountpoint: str,
    callback: Callable[[], None],
    *,
    on_failure: Callable[[str], None] | None = None,
    timeout: float = ANSWER_TIMEOUT,
) -> threading.Thread:
    """Call `callback` from a thread once `mountpoint` answers (see `mount_answers`).

    Start it right after the kernel has the mount: the stat blocks until the
    FUSE loop (in the calling thread) serves it, which is the point.
    `on_failure` gets a one-line reason if the mount stops existing or does
    not answer within `timeout` (without it, the reason is logged as an error).
    """

    def check() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if mount_answers(mountpoint):
                    break
            except OSError as exc:
                reason = f"the mount at {mountpoint} does not answer: {exc.strerror or exc}"
                break_with_failure(reason)
                return
            if time.monotonic() > deadline:
                break_with_failure(f"the mount at {mountpoint} did not appear within {timeout:g}s")
                return
            time.sleep(0.02)
        try:
            callback()
        except Exception:
            log.exception("readiness callback failed")

    def break_with_failure(reason: str) -> None:
        if on_failure is None:
            log.error("%s", reason)
        else:
            on_failure(reason)  # it says whether this is an error (not during an unmount)

    thread = threading.Thread(target=check, name="fdfsmount-ready", daemon=True)
    thread.start()
    return thread
