"""Counters kept by the client: requests, errors, bytes and per-server latency."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field


@dataclass
class ClientStats:
    """Plain counters, cheap to update and easy to export as metrics.

    ``requests`` and ``errors`` are keyed by wire operation (the command name in
    lower case: ``download_file``, ``query_fetch_one``, ...), because one client
    call may send several requests. Latency is the time from sending a request
    to having its whole reply, summed per server (``host:port``).
    """

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    latency_sum: dict[str, float] = field(default_factory=dict)
    latency_count: dict[str, int] = field(default_factory=dict)
    connections_opened: int = 0
    connections_reused: int = 0

    def count_request(self, op: str) -> None:
        self.requests[op] = self.requests.get(op, 0) + 1

    def count_error(self, op: str) -> None:
        self.errors[op] = self.errors.get(op, 0) + 1

    def observe_latency(self, server: str, seconds: float) -> None:
        self.latency_sum[server] = self.latency_sum.get(server, 0.0) + seconds
        self.latency_count[server] = self.latency_count.get(server, 0) + 1

    def snapshot(self) -> ClientStats:
        """A copy that later updates do not change."""
        return copy.deepcopy(self)
