"""Live numbers of a running mount: one snapshot, served as Prometheus metrics and to `status`.

`take_snapshot` reads the counters the mount already keeps (`MountParts`,
the FUSE boundary's `OpStats`, the client's `ClientStats`) into a plain,
JSON-able dict; it must run in the mount's trio thread. `MountCollector`
turns a snapshot into Prometheus metric families at scrape time -- nothing is
counted twice -- and `start_metrics_server` serves them over HTTP from a
thread on exactly the address given with ``-o metrics=``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import trio
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from . import __version__
from .mount import MountError, MountParts
from .proto.stats import LATENCY_BOUNDS

log = logging.getLogger(__name__)

Snapshot = dict[str, Any]

SCRAPE_TIMEOUT = 10.0  # a scrape waits at most this long for the mount's event loop


def take_snapshot(parts: MountParts | None, info: dict[str, Any]) -> Snapshot:
    """Everything `status` shows and Prometheus scrapes; call from the trio thread.

    `info` is the mount's identity (mountpoint, source, pid, started, metrics
    address); `parts` is None while the mount is still starting.
    """
    snap: Snapshot = {**info, "version": __version__, "time": time.time()}
    if parts is None:
        snap["state"] = "starting"
        return snap
    snap["state"] = "mounted"
    snap["counters"] = parts.counters()
    snap["cache_capacity"] = parts.cache.capacity
    snap["readahead_max"] = parts.readpath.max_window
    ops = parts.ops.op_stats
    snap["fuse"] = {
        "requests": dict(ops.requests),
        "errors": {op: dict(by_errno) for op, by_errno in ops.errors.items()},
        "latency": {op: hist.as_dict() for op, hist in ops.latency.items()},
    }
    stats = getattr(parts.client, "stats", None)
    if stats is not None:
        snap["client"] = {
            "requests": dict(stats.requests),
            "errors": dict(stats.errors),
            "latency": {
                server: [count, total]
                for server, (count, total) in stats.latency_by_server().items()
            },
            "latency_histograms": _by_server_and_op(stats.latency),
            "connections_opened": stats.connections_opened,
            "connections_reused": stats.connections_reused,
        }
    return snap


def _by_server_and_op(histograms: dict[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for (server, op), hist in histograms.items():
        out.setdefault(server, {})[op] = hist.as_dict()
    return out


def _histogram_buckets(hist: dict[str, Any]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs, +Inf last, from an `as_dict` histogram."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(LATENCY_BOUNDS, hist["buckets"], strict=False):
        running += n
        out.append((repr(bound), running))
    out.append(("+Inf", hist["count"]))
    return out


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _disk_cache_and_listing(counters: dict[str, int]) -> Iterator[Metric]:
    if "disk_cache_hits" in counters:  # -o disk_cache=DIR
        for name, doc in (
            ("hits", "Reads served from the local disk cache"),
            ("misses", "Reads of immutable files the disk cache did not have"),
            ("fills", "Files stored in the disk cache"),
            ("corrupt", "Disk cache files that failed their crc32 check and were discarded"),
            ("evictions", "Files evicted from the disk cache (least recently used)"),
            ("fill_failures", "Files the disk cache could not store"),
        ):
            yield _counter(f"fdfsmount_disk_cache_{name}", doc, counters[f"disk_cache_{name}"])
        for name, doc in (("bytes", "Bytes held by the disk cache"),
                          ("files", "Files held by the disk cache")):  # fmt: skip
            yield _gauge(f"fdfsmount_disk_cache_{name}", doc, counters[f"disk_cache_{name}"])
    if "list_refreshes" in counters:
        yield _counter(
            "fdfsmount_listing_refreshes", "Listing refreshes started", counters["list_refreshes"]
        )
        yield _counter(
            "fdfsmount_listing_storages_read",
            "Storage file lists streamed into the listing index",
            counters["list_storages_read"],
        )
        yield _counter(
            "fdfsmount_listing_storages_skipped",
            "Storages a refresh left alone because nothing changed on them",
            counters["list_storages_skipped"],
        )
        yield _gauge(
            "fdfsmount_listing_indexed_files",
            "Files in the listing indexes of the groups listed so far",
            counters["list_indexed_files"],
        )


def metric_families(snap: Snapshot) -> Iterator[Metric]:
    """Prometheus metric families for a snapshot (names as in docs/operations.md)."""
    info = InfoMetricFamily("fdfsmount", "The mount: version, source and mount point")
    info.add_metric(
        [],
        {
            "version": str(snap.get("version", "")),
            "source": str(snap.get("source", "")),
            "mountpoint": str(snap.get("mountpoint", "")),
        },
    )
    yield info
    yield _gauge(
        "fdfsmount_up", "1 once the mount answers requests", snap.get("state") == "mounted"
    )
    counters: dict[str, int] = snap.get("counters") or {}
    if not counters:
        return
    fuse = snap.get("fuse", {})
    requests = CounterMetricFamily(
        "fdfsmount_fuse_requests", "FUSE requests by operation", labels=["op"]
    )
    for op, n in sorted(fuse.get("requests", {}).items()):
        requests.add_metric([op], n)
    yield requests
    errors = CounterMetricFamily(
        "fdfsmount_fuse_errors",
        "Failed FUSE requests by operation and errno",
        labels=["op", "errno"],
    )
    for op, by_errno in sorted(fuse.get("errors", {}).items()):
        for name, n in sorted(by_errno.items()):
            errors.add_metric([op, name], n)
    yield errors
    fuse_latency = HistogramMetricFamily(
        "fdfsmount_fuse_request_seconds",
        "Time to answer a FUSE request, by operation",
        labels=["op"],
    )
    for op, hist in sorted(fuse.get("latency", {}).items()):
        fuse_latency.add_metric([op], _histogram_buckets(hist), hist["sum"])
    yield fuse_latency
    yield _counter(
        "fdfsmount_read_bytes", "Bytes returned to read requests", counters["fuse_bytes_read"]
    )
    yield _counter(
        "fdfsmount_written_bytes", "Bytes taken by write requests", counters["fuse_bytes_written"]
    )
    yield _counter("fdfsmount_cache_hits", "Block cache hits", counters["cache_hits"])
    yield _counter("fdfsmount_cache_misses", "Block cache misses", counters["cache_misses"])
    yield _counter(
        "fdfsmount_cache_evictions", "Blocks evicted from the cache", counters["cache_evictions"]
    )
    yield _gauge("fdfsmount_cache_bytes", "Bytes held by the block cache", counters["cache_bytes"])
    yield _gauge(
        "fdfsmount_cache_capacity_bytes", "Block cache size (cache_size)", snap["cache_capacity"]
    )
    yield _counter(
        "fdfsmount_downloads", "Ranged downloads made for reads", counters["read_downloads"]
    )
    yield _counter(
        "fdfsmount_page_cache_stores",
        "Small files handed to the kernel's page cache at their first open",
        counters["page_cache_stores"],
    )
    yield _counter(
        "fdfsmount_downloaded_bytes",
        "Bytes downloaded for reads and readahead",
        counters["read_bytes_downloaded"],
    )
    yield _counter(
        "fdfsmount_readahead_chunks", "Readahead chunks started", counters["read_prefetch_chunks"]
    )
    yield _counter(
        "fdfsmount_readahead_failures",
        "Readahead chunks that failed",
        counters["read_prefetch_failures"],
    )
    yield _gauge(
        "fdfsmount_readahead_window_bytes",
        "Largest current readahead window among open files",
        counters["readahead_window"],
    )
    yield _gauge(
        "fdfsmount_readahead_max_bytes", "Largest readahead window allowed", snap["readahead_max"]
    )
    yield _gauge("fdfsmount_open_files", "Open file handles", counters["open_files"])
    yield _gauge(
        "fdfsmount_pending_write_files",
        "Open files with writes not yet sent",
        counters["pending_write_files"],
    )
    yield _gauge("fdfsmount_inodes", "Inodes the kernel knows of", counters["inodes"])
    if "write_requests" in counters:  # the write side's own numbers
        yield _counter(
            "fdfsmount_write_requests",
            "Appends, modifies, truncates and uploads sent by write-back",
            counters["write_requests"],
        )
        yield _counter(
            "fdfsmount_write_sent_bytes",
            "Bytes write-back sent to storages",
            counters.get("write_bytes_sent", 0),
        )
        yield _counter(
            "fdfsmount_write_failures",
            "Write-back requests that failed",
            counters.get("write_failures", 0),
        )
        yield _gauge(
            "fdfsmount_write_files", "Files being written here", counters.get("write_files", 0)
        )
    yield from _disk_cache_and_listing(counters)
    client = snap.get("client")
    if client is None:
        return
    proto_requests = CounterMetricFamily(
        "fdfsmount_client_requests", "Requests sent to FastDFS servers by command", labels=["op"]
    )
    for op, n in sorted(client["requests"].items()):
        proto_requests.add_metric([op], n)
    yield proto_requests
    proto_errors = CounterMetricFamily(
        "fdfsmount_client_errors", "Failed FastDFS requests by command", labels=["op"]
    )
    for op, n in sorted(client["errors"].items()):
        proto_errors.add_metric([op], n)
    yield proto_errors
    latency = HistogramMetricFamily(
        "fdfsmount_server_request_seconds",
        "Time from sending a request to having its whole reply, by server and command",
        labels=["server", "op"],
    )
    for server, by_op in sorted(client.get("latency_histograms", {}).items()):
        for op, hist in sorted(by_op.items()):
            latency.add_metric([server, op], _histogram_buckets(hist), hist["sum"])
    yield latency
    yield _counter(
        "fdfsmount_client_sent_bytes", "Bytes sent to servers", counters["client_bytes_sent"]
    )
    yield _counter(
        "fdfsmount_client_received_bytes",
        "Bytes received from servers",
        counters["client_bytes_received"],
    )
    yield _counter(
        "fdfsmount_client_connections_opened",
        "Connections opened to servers",
        client["connections_opened"],
    )
    yield _counter(
        "fdfsmount_client_connections_reused",
        "Requests sent on a pooled connection",
        client["connections_reused"],
    )


class MountCollector:
    """A custom collector: each scrape takes a fresh snapshot in the mount's event loop."""

    def __init__(self, snapshot: Callable[[], Snapshot], trio_token: trio.lowlevel.TrioToken):
        self._snapshot = snapshot
        self._token = trio_token

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration time: the loop may not run yet

    def collect(self) -> Iterator[Metric]:
        try:
            snap = trio.from_thread.run_sync(self._snapshot, trio_token=self._token)
        except trio.RunFinishedError:
            return  # the mount is gone; the server is about to stop too
        yield from metric_families(snap)


class MetricsServer:
    """Prometheus' HTTP server on one address, in a daemon thread."""

    def __init__(self, address: tuple[str, int], collector: MountCollector) -> None:
        host, port = address
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.registry.register(ProcessCollector(registry=None))
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise MountError(
                f"metrics={host}:{port}: cannot listen there: {exc.strerror or exc}"
            ) from None
        self.port = self._server.server_port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}/metrics"
        log.info("serving metrics at %s", self.url)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
