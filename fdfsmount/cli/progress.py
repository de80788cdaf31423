"""A one-line progress bar on stderr for long transfers."""

from __future__ import annotations

import shutil
import time
from typing import TextIO

from ..options import human_size

#: Transfers smaller than this finish before a bar would be worth drawing.
PROGRESS_THRESHOLD = 4 << 20
_REDRAW_INTERVAL = 0.1


class ProgressBar:
    """``label [#####.....] 45%  12.3 MiB / 27.0 MiB  85.1 MiB/s``, redrawn at most 10x/s."""

    def __init__(self, stream: TextIO, label: str, total: int | None) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._drawn_at = 0.0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self._drawn_at >= _REDRAW_INTERVAL:
            self._drawn_at = now
            self._draw(now)

    def finish(self) -> None:
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()

    def render(self, now: float, width: int) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = f"{human_size(self.done / elapsed)}/s"
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            amounts = f"{human_size(self.done)} / {human_size(self.total)}"
            tail = f" {fraction:4.0%}  {amounts}  {rate}"
            bar_width = max(width - len(self.label) - len(tail) - 4, 10)
            filled = round(bar_width * fraction)
            bar = "#" * filled + "." * (bar_width - filled)
            return f"{self.label} [{bar}]{tail}"[:width]
        return f"{self.label}  {human_size(self.done)}  {rate}"[:width]

    def _draw(self, now: float) -> None:
        width = shutil.get_terminal_size((80, 24)).columns - 1
        self.stream.write("\r" + self.render(now, width).ljust(width))
        self.stream.flush()
