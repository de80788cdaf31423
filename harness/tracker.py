"""Builtin FastDFS tracker server, byte-compatible with upstream 6.16.1.

Usage::

    python -m harness.tracker --bind 127.0.0.1 --port P --base-dir DIR \\
        [--store-lookup round_robin|load_balance] [--ip-size 16|46] [--offline-after SECONDS]

Prints ``READY <port>`` on stdout once listening (``--port 0`` picks a free
port), logs to stderr, exits cleanly on SIGTERM/SIGINT. Nothing is persisted:
storages join again after a restart (they retry every half second).

Client commands: 90, 91, 92, 101-107, 111 with upstream's layouts, and 82
(QUIT, closes). Bad body lengths and unknown commands answer EINVAL and keep
the connection open, unknown groups and storage ids ENOENT, as upstream.
``--ip-size 46`` mimics ``response_ip_addr_size = IPv6``: 45-byte IP fields
in 101-107 replies, 46-byte ones in 92 records. Storages talk to the tracker
with the harness's own join/heartbeat messages (`fdfsmount.proto.peer`); routing
rules are in `harness.tracker_state`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import operator
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import trio

from fdfsmount.proto.constants import Cmd
from fdfsmount.proto.errors import ProtocolError
from fdfsmount.proto.peer import MAX_JSON_BODY, PeerCmd, decode_json, encode_json
from fdfsmount.proto.storage import expect_empty
from fdfsmount.proto.tracker import (
    FetchTarget,
    StoreTarget,
    encode_fetch_reply,
    encode_groups_reply,
    encode_storages_reply,
    encode_store_reply,
    parse_fetch_body,
    parse_group_body,
    parse_list_storage_body,
    parse_tracker_cmd,
)
from fdfsmount.proto.wire import Header, encode_header

from . import serverutil
from .serverutil import BlockingFramedSocket, PeerClosed
from .tracker_state import Registry, StorageNode, TrackerError

log = logging.getLogger(__name__)

#: Requests larger than this are not FastDFS requests: the connection is dropped.
MAX_BODY = MAX_JSON_BODY
EXPIRE_INTERVAL = 0.25
#: A request body must arrive within this many seconds (upstream's network_timeout).
NETWORK_TIMEOUT = 60.0
#: What a storage sends on its link (everything else is a client command).
STORAGE_MESSAGES = frozenset((PeerCmd.STORAGE_JOIN, PeerCmd.STORAGE_BEAT))
#: Receive buffer of a connection: requests are small, a storage's beat is the largest.
RECV_BUFFER = 64 * 1024
_QUIT = int(Cmd.QUIT)
_RESP = int(Cmd.RESP)
#: How many fetch query bodies `_query_fetch` remembers decoded.
FETCH_NAMES = 8192
_server_addr = operator.attrgetter("server_addr")


class TrackerServer:
    def __init__(
        self,
        bind: str,
        port: int,
        base_dir: Path,
        *,
        store_lookup: str = "round_robin",
        ip_size: int = 16,
        offline_after: float = 3.0,
    ) -> None:
        if ip_size not in (16, 46):
            raise ValueError("ip size must be 16 or 46")
        self.bind = bind
        self.port = port
        self.base_dir = base_dir
        self.ip_size = ip_size
        self.registry = Registry(store_lookup, offline_after)
        #: Connections are served in threads: every use of the registry holds this.
        self.lock = threading.Lock()
        self._fetch_names: serverutil.Memo[bytes, tuple[str, str]] = serverutil.Memo(FETCH_NAMES)
        #: Whole fetch replies by (command, body), each with the registry version it
        #: holds for: a client routes each read of a file, and usually reads a file
        #: several times while the registry stays as it was (see `_query_fetch`).
        self._fetch_replies: serverutil.Memo[tuple[int, bytes], tuple[int, bytes]] = (
            serverutil.Memo(FETCH_NAMES)
        )
        #: Store replies by what they name (group, storage, store path, one server or
        #: all), each with the registry version it holds for: the pick moves on with
        #: every upload, the few replies it picks among stay.
        self._store_replies: dict[tuple[str, str, int, bool], tuple[int, bytes]] = {}
        #: The client commands served, each with its answer (the reply body).
        self._answers: dict[int, Callable[[int, bytes], bytes]] = {
            Cmd.ACTIVE_TEST: self._active_test,
            Cmd.QUERY_STORE_WITHOUT_GROUP_ONE: self._query_store_any_group,
            Cmd.QUERY_STORE_WITHOUT_GROUP_ALL: self._query_store_any_group,
            Cmd.QUERY_STORE_WITH_GROUP_ONE: self._query_store_in_group,
            Cmd.QUERY_STORE_WITH_GROUP_ALL: self._query_store_in_group,
            Cmd.QUERY_FETCH_ONE: self._query_fetch,
            Cmd.QUERY_FETCH_ALL: self._query_fetch,
            Cmd.QUERY_UPDATE: self._query_fetch,
            Cmd.SERVER_LIST_ONE_GROUP: self._list_one_group,
            Cmd.SERVER_LIST_ALL_GROUPS: self._list_groups,
            Cmd.SERVER_LIST_STORAGE: self._list_storages,
        }

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                serverutil.serve_in_threads, self.handle, self.bind, self.port
            )
            self.port = port
            log.info("tracker listening on %s:%d", self.bind, port)
            nursery.start_soon(self._expire_loop)
            task_status.started(port)

    async def _expire_loop(self) -> None:
        while True:
            await trio.sleep(EXPIRE_INTERVAL)
            with self.lock:
                self.registry.expire()

    def handle(self, sock: socket.socket, peer: str) -> None:
        """Serve one connection, in its own thread (see `serverutil.serve_in_threads`)."""
        reader = BlockingFramedSocket(
            sock, RECV_BUFFER, max_body=MAX_BODY, timeout=NETWORK_TIMEOUT,
            buffer=serverutil.thread_buffer(RECV_BUFFER),
        )  # fmt: skip
        link = object()
        storage: StorageNode | None = None
        try:
            while True:
                message = reader.read_request(MAX_BODY)
                if message is None:
                    return
                header, body = message
                if header.cmd == _QUIT:
                    return
                if body is None:
                    if header.length > MAX_BODY:
                        log.info("dropping a connection that sent a %d-byte body", header.length)
                        return
                    try:
                        body = reader.read_exact(header.length)
                    except PeerClosed:
                        log.info("dropping a connection that stalled inside a request")
                        return
                if header.cmd in STORAGE_MESSAGES:
                    storage = self._storage_message(reader, header, body, link, storage)
                    continue
                known = self._fetch_replies.get((header.cmd, body))
                if known is not None and known[0] == self.registry.version:
                    reader.send(known[1])
                    continue
                try:
                    with self.lock:
                        reply = self.answer(header, body)
                except TrackerError as exc:
                    log.debug("cmd %d: %s (status %d)", header.cmd, exc, exc.status)
                    reader.send_reply(status=exc.status)
                    continue
                reader.send_reply(reply)
        finally:
            if storage is not None:
                with self.lock:
                    self.registry.link_closed(link)

    def _storage_message(
        self,
        reader: BlockingFramedSocket,
        header: Header,
        body: bytes,
        link: object,
        storage: StorageNode | None,
    ) -> StorageNode | None:
        try:
            info = decode_json(body, "storage message")
            with self.lock:
                if header.cmd == PeerCmd.STORAGE_JOIN:
                    storage = self.registry.join(info, link)
                elif storage is None:
                    raise TrackerError(errno.EINVAL, "heartbeat before join")
                else:
                    self.registry.beat(storage, info)
                peers = [p.to_json() for p in self.registry.peers_of(storage)]
                ownership = self.registry.ownership_of(storage)
        except (ProtocolError, TrackerError) as exc:
            status = exc.status if isinstance(exc, TrackerError) else errno.EINVAL
            log.warning("storage message refused: %s", exc)
            reader.send_reply(status=status)
            return storage
        reply = {
            "storages": peers,
            "offline_after": self.registry.offline_after,
            "ownership": ownership,
        }
        reader.send_reply(encode_json(reply))
        return storage

    # ------------------------------------------------------------ client commands

    def answer(self, header: Header, body: bytes) -> bytes:
        try:
            answer = self._answers.get(header.cmd)
            if answer is None:
                raise TrackerError(
                    errno.EINVAL, f"cmd {parse_tracker_cmd(header.cmd)} is not served"
                )
            return answer(header.cmd, body)
        except ProtocolError as exc:
            raise TrackerError(errno.EINVAL, str(exc)) from exc

    def _active_test(self, cmd: int, body: bytes) -> bytes:
        expect_empty(body, "active test")
        return b""

    def _query_store_any_group(self, cmd: int, body: bytes) -> bytes:
        expect_empty(body, "query store")
        return self.query_store(None, cmd == Cmd.QUERY_STORE_WITHOUT_GROUP_ALL)

    def _query_store_in_group(self, cmd: int, body: bytes) -> bytes:
        return self.query_store(parse_group_body(body), cmd == Cmd.QUERY_STORE_WITH_GROUP_ALL)

    def _query_fetch(self, cmd: int, body: bytes) -> bytes:
        names = self._fetch_names.get(body)
        if names is None:
            # Clients ask for the same file several times in a row (info, download, delete).
            names = self._fetch_names.put(body, parse_fetch_body(body))
        version = self.registry.version  # the lock is held: it stays so until we return
        group, nodes, lasting = self.registry.query_fetch(cmd, *names)
        target = FetchTarget(group.name, tuple(map(_server_addr, nodes)))
        reply = encode_fetch_reply(target, self.ip_size)
        if lasting:
            message = encode_header(len(reply), _RESP) + reply
            self._fetch_replies.put((cmd, body), (version, message))
        return reply

    def _list_one_group(self, cmd: int, body: bytes) -> bytes:
        return self.registry.group(parse_group_body(body)).stat().encode()

    def _list_groups(self, cmd: int, body: bytes) -> bytes:
        expect_empty(body, "list groups")
        return encode_groups_reply([g.stat() for g in self.registry.sorted_groups()])

    def _list_storages(self, cmd: int, body: bytes) -> bytes:
        return self.list_storages(*parse_list_storage_body(body))

    def query_store(self, group_name: str | None, all_servers: bool) -> bytes:
        version = self.registry.version  # the lock is held: it stays so until we return
        group, nodes, path_index = self.registry.query_store(group_name, all_servers)
        # Under one version, the first storage names the rest (all the group's active ones).
        key = (group.name, nodes[0].storage_id, path_index, all_servers)
        known = self._store_replies.get(key)
        if known is not None and known[0] == version:
            return known[1]
        servers = tuple(map(_server_addr, nodes))
        reply = encode_store_reply(StoreTarget(group.name, servers, path_index), self.ip_size)
        self._store_replies[key] = (version, reply)
        return reply

    def list_storages(self, group_name: str, wanted: str | None) -> bytes:
        group = self.registry.group(group_name)
        nodes = group.sorted_storages()
        if wanted is not None:
            nodes = [n for n in nodes if n.storage_id == wanted]
            if not nodes:
                raise TrackerError(errno.ENOENT, f"no storage {wanted!r} in {group.name}")
        return encode_storages_reply([n.stat() for n in nodes], self.ip_size)


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m harness.tracker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--bind", required=True, help="127.x address to listen on")
    parser.add_argument("--port", type=int, required=True, help="port (0 = any free port)")
    parser.add_argument("--base-dir", type=Path, required=True)
    parser.add_argument(
        "--store-lookup", choices=("round_robin", "load_balance"), default="round_robin"
    )
    parser.add_argument("--ip-size", type=int, choices=(16, 46), default=16)
    parser.add_argument("--offline-after", type=float, default=3.0)
    serverutil.add_common_args(parser)
    args = parser.parse_args(argv)
    serverutil.setup_logging(args.log_level, "tracker")
    server = TrackerServer(
        args.bind, args.port, args.base_dir, store_lookup=args.store_lookup,
        ip_size=args.ip_size, offline_after=args.offline_after,
    )  # fmt: skip
    serverutil.run_server(server.run)


if __name__ == "__main__":
    main()
