"""Counters kept by the client: requests, errors, bytes and latency histograms."""

from __future__ import annotations

import bisect
import copy
from dataclasses import dataclass, field
from typing import Any

#: Upper bounds (seconds) of the latency histograms' buckets, as Prometheus' ``le``.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass(slots=True)
class LatencyHistogram:
    """Observations counted into `LATENCY_BOUNDS` buckets (the last one is +Inf)."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: per-bucket (not cumulative) counts, sum and count."""
        return {"buckets": list(self.buckets), "sum": self.total, "count": self.count}

    @staticmethod
    def quantile(hist: dict[str, Any], q: float) -> float | None:
        """The upper bound of the bucket holding quantile `q` of an `as_dict` histogram
        (None if empty; inf if it lies beyond the last bound)."""
        count = hist.get("count", 0)
        if not count:
            return None
        rank = q * count
        seen = 0
        for bound, n in zip((*LATENCY_BOUNDS, float("inf")), hist["buckets"], strict=True):
            seen += n
            if seen >= rank:
                return bound
        return float("inf")


@dataclass
class ClientStats:
    """Plain counters, cheap to update and easy to export as metrics.

    ``requests`` and ``errors`` are keyed by wire operation (the command name in
    lower case: ``download_file``, ``query_fetch_one``, ...), because one client
    call may send several requests. Latency is the time from sending a request
    to having its whole reply, counted into a histogram per server (``host:port``)
    and operation (`latency`); `latency_by_server` sums them per server.
    """

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    latency: dict[tuple[str, str], LatencyHistogram] = field(default_factory=dict)
    connections_opened: int = 0
    connections_reused: int = 0

    def count_request(self, op: str) -> None:
        self.requests[op] = self.requests.get(op, 0) + 1

    def count_error(self, op: str) -> None:
        self.errors[op] = self.errors.get(op, 0) + 1

    def observe_latency(self, server: str, seconds: float, op: str = "other") -> None:
        hist = self.latency.get((server, op))
        if hist is None:
            hist = self.latency[(server, op)] = LatencyHistogram()
        hist.observe(seconds)

    def latency_by_server(self) -> dict[str, tuple[int, float]]:
        """Per server (``host:port``): requests timed and their summed seconds, all ops."""
        out: dict[str, tuple[int, float]] = {}
        for (server, _), hist in self.latency.items():
            count, total = out.get(server, (0, 0.0))
            out[server] = (count + hist.count, total + hist.total)
        return out

    def snapshot(self) -> ClientStats:
        """A copy that later updates do not change."""
        return copy.deepcopy(self)
