"""The request envelope shared by tracker and storage encoders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .wire import encode_header


@dataclass(frozen=True, slots=True)
class Request:
    """An encoded request: header fields plus the body bytes known up front.

    ``payload_size`` counts bytes that follow ``body`` on the wire but are
    streamed separately by the caller (file content of uploads and appends),
    so a request never has to hold a whole file in memory.
    """

    cmd: int
    body: bytes = b""
    status: int = 0
    payload_size: int = 0

    @property
    def length(self) -> int:
        return len(self.body) + self.payload_size

    def header(self) -> bytes:
        return encode_header(self.length, self.cmd, self.status)

    def encode(self) -> bytes:
        """Header and body (not the streamed payload)."""
        return self.header() + self.body


class ServerAddr(NamedTuple):
    """A server's address as the tracker reports it (a named tuple: replies carry many)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"
