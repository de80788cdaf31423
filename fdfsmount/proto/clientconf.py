"""Reading FastDFS ``client.conf`` files and ``host:port`` server addresses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .message import ServerAddr

DEFAULT_TRACKER_PORT = 22122


@dataclass(frozen=True, slots=True)
class ClientConf:
    """The settings of a client.conf that this client uses (the rest is ignored)."""

    trackers: list[ServerAddr] = field(default_factory=list)
    connect_timeout: float | None = None
    network_timeout: float | None = None


def parse_server_addr(
    value: str | tuple[str, int] | ServerAddr, default_port: int = DEFAULT_TRACKER_PORT
) -> ServerAddr:
    """``host:port``, ``[v6addr]:port``, ``host`` (default port) or a (host, port) pair."""
    if isinstance(value, ServerAddr):
        return value
    if isinstance(value, tuple):
        host, port = value
    else:
        text = value.strip()
        port_text = ""
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ValueError(f"bad server address {value!r}")
            port_text = rest[1:]
        elif text.count(":") == 1:
            host, port_text = text.split(":")
            if not port_text:
                raise ValueError(f"bad server address {value!r} (a port must follow ':')")
        else:
            host = text  # a bare host name or an unbracketed IPv6 address
        if port_text:
            try:
                port = int(port_text)
            except ValueError:
                raise ValueError(f"bad port in server address {value!r}") from None
        else:
            port = default_port
    if not host or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"bad server address {value!r}")
    return ServerAddr(host, port)


def read_client_conf(path: str | os.PathLike[str]) -> ClientConf:
    """Parse ``tracker_server`` (repeatable), ``connect_timeout`` and ``network_timeout``.

    Raises `OSError` when the file cannot be read and `ValueError` naming the
    line for a malformed one. ``#include`` lines are not followed.
    """
    trackers: list[ServerAddr] = []
    timeouts: dict[str, float] = {}
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep:
            raise ValueError(f"{path}:{lineno}: expected 'name = value', got {line!r}")
        try:
            if key == "tracker_server":
                trackers.append(parse_server_addr(value))
            elif key in ("connect_timeout", "network_timeout"):
                seconds = float(value)
                if seconds <= 0:
                    raise ValueError(f"{key} must be positive")
                timeouts[key] = seconds
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
    if not trackers:
        raise ValueError(f"{path}: no tracker_server line")
    return ClientConf(trackers, timeouts.get("connect_timeout"), timeouts.get("network_timeout"))
