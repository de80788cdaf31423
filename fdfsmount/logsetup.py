"""Where the mount logs (stderr or journald, syslog, a file) and the filter that stops log floods.

# Strategy
A server that is down makes every read that touches it fail, and each failure
is worth a line -- until there are thousands a second. `RateLimitFilter` sits
on the one handler: per (logger, level, format string) it lets the same text
through once and at most `burst` different texts per `interval`, and counts the
rest; when such an interval closes with something suppressed, one summary line
says how many and shows the last one. DEBUG records are never limited:
``-o debug`` is asked for to see every request.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from .options import MountOptions

PROG = "fdfsmount"
RATE_INTERVAL = 10.0  # seconds per rate-limiting window
RATE_BURST = 5  # different messages of one kind per window

#: Set on a record (``extra={EXEMPT: True}``) to bypass the rate limit.
EXEMPT = "rate_limit_exempt"

_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}

_Key = tuple[str, int, str]


@dataclass(slots=True)
class _Window:
    start: float
    passed: set[str] = field(default_factory=set)  # texts let through in this window
    suppressed: int = 0
    last: str = ""  # the last suppressed text


@dataclass(frozen=True, slots=True)
class Summary:
    logger: str
    level: int
    text: str


class RateLimitFilter(logging.Filter):
    """Suppress repeats of one kind of message beyond a burst per interval (see module doc)."""

    def __init__(
        self,
        interval: float = RATE_INTERVAL,
        burst: int = RATE_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.burst = burst
        self.clock = clock
        self.suppressed_total = 0
        self._windows: dict[_Key, _Window] = {}
        self._closed: list[Summary] = []
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO or getattr(record, EXEMPT, False):
            return True
        key = (record.name, record.levelno, str(record.msg))
        text = record.getMessage()
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.start >= self.interval:
                if window is not None:
                    self._close(key, window)
                window = self._windows[key] = _Window(now)
            if text in window.passed or len(window.passed) >= self.burst:
                window.suppressed += 1
                window.last = text
                self.suppressed_total += 1
                return False
            window.passed.add(text)
            return True

    def _close(self, key: _Key, window: _Window) -> None:
        if window.suppressed:
            name, level, _ = key
            text = (
                f"... repeated {window.suppressed} times in the last {self.interval:g}s "
                f"(similar messages suppressed); the last: {window.last}"
            )
            self._closed.append(Summary(name, level, text))

    def summaries(self, *, everything: bool = False) -> list[Summary]:
        """Summaries of the windows that have closed (all of them with `everything`)."""
        now = self.clock()
        with self._lock:
            for key, window in list(self._windows.items()):
                if everything or now - window.start >= self.interval:
                    self._close(key, window)
                    del self._windows[key]
            closed, self._closed = self._closed, []
        return closed


class LogControl:
    """The mount's logging once set up: reports suppressed messages until `close`."""

    def __init__(self, rate_filter: RateLimitFilter) -> None:
        self.rate_filter = rate_filter
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report, name="fdfsmount-log", daemon=True)
        self._thread.start()

    def _report(self) -> None:
        while not self._stop.wait(self.rate_filter.interval / 2):
            self.emit_summaries()

    def emit_summaries(self, *, everything: bool = False) -> None:
        for summary in self.rate_filter.summaries(everything=everything):
            logging.getLogger(summary.logger).log(
                summary.level, "%s", summary.text, extra={EXEMPT: True}
            )

    def close(self) -> None:
        """Report what is still suppressed and flush every handler."""
        self._stop.set()
        self.emit_summaries(everything=True)
        logging.shutdown()


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``: journald reads the level from the prefix and adds the time."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6 if record.levelno < logging.ERROR else 3)
        return f"<{priority}>{super().format(record)}"


def stderr_is_journal() -> bool:
    """True when stderr is systemd's journal stream (``$JOURNAL_STREAM`` names it)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = stream.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def make_handler(opts: MountOptions, *, daemon: bool) -> logging.Handler:
    """stderr in the foreground (journald-aware), else syslog; `-o log_file=` wins over both."""
    handler: logging.Handler
    if opts.logfile:
        # Reopened when logrotate moves the file away.
        handler = logging.handlers.WatchedFileHandler(opts.logfile)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
        )
    elif daemon:
        # A daemon's stderr goes nowhere; without syslog only log_file= keeps its log.
        if os.path.exists("/dev/log"):
            handler = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
        else:
            handler = logging.NullHandler()
        handler.setFormatter(
            logging.Formatter(f"{PROG}[%(process)d]: %(levelname)s %(name)s: %(message)s")
        )
    elif stderr_is_journal():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def setup_logging(opts: MountOptions, *, daemon: bool) -> LogControl:
    """Route every log record of the process to one rate-limited handler."""
    handler = make_handler(opts, daemon=daemon)
    if daemon:
        logging.raiseExceptions = False  # a syslog that goes away must not print tracebacks
    rate_filter = RateLimitFilter()
    handler.addFilter(rate_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if opts.debug else logging.INFO)
    if not opts.debug:
        # pyfuse3 logs every unmount-time detail at INFO; keep ours readable.
        logging.getLogger("pyfuse3").setLevel(logging.WARNING)
    return LogControl(rate_filter)


def reopen_log_files() -> int:
    """Reopen every log file the process writes to (after logrotate moved it); how many.

    SIGHUP does this, as daemons conventionally do, so a `copytruncate`-free
    logrotate needs no restart.
    """
    reopened = 0
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            continue
        stream = open(handler.baseFilename, handler.mode, encoding=handler.encoding)  # noqa: SIM115
        old = handler.setStream(cast(io.TextIOWrapper, stream))
        if old is not None:
            old.close()
        reopened += 1
    return reopened
