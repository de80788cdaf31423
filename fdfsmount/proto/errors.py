"""Exception hierarchy of the FastDFS client; the only exceptions the codec raises."""

from __future__ import annotations

import errno as _errno
import os


class FdfsError(Exception):
    """Base class of every error this package raises on purpose."""


class LocalProtocolError(FdfsError, ValueError):
    """We were asked to encode something the protocol cannot carry (a caller bug)."""


class ProtocolError(FdfsError):
    """The peer sent bytes that break the protocol; the connection must be dropped."""


class ConnectionClosed(ProtocolError):
    """The server closed or reset the connection before its reply was complete."""


class InvalidFileId(FdfsError, ValueError):
    """A string that is not a well-formed FastDFS file ID."""


class Timeout(FdfsError):
    """A server did not answer within the deadline."""


class ConnectError(FdfsError):
    """No TCP connection could be made to a server."""


class ConnectTimeout(ConnectError, Timeout):
    """Connecting to a server took longer than the connect timeout (nothing was sent)."""


class NoStorage(FdfsError):
    """The tracker knows no storage server able to serve the request."""


class ServerError(FdfsError):
    """A server answered with a non-zero status (an errno value)."""

    def __init__(self, status: int, message: str = "") -> None:
        self.errno = status
        self.message = message  # what failed, without the status text
        name = _errno.errorcode.get(status, str(status))
        text = os.strerror(status) if status in _errno.errorcode else f"status {status}"
        super().__init__(f"{message}: {name} ({text})" if message else f"{name} ({text})")


class FileNotFound(ServerError):
    """Status ENOENT: no such file (or group, or storage)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(_errno.ENOENT, message)


class FileExists(ServerError):
    """Status EEXIST: e.g. a slave file that is already there."""

    def __init__(self, message: str = "") -> None:
        super().__init__(_errno.EEXIST, message)


def server_error(status: int, message: str = "") -> ServerError:
    """The most specific `ServerError` subclass for a status byte."""
    if status == _errno.ENOENT:
        return FileNotFound(message)
    if status == _errno.EEXIST:
        return FileExists(message)
    return ServerError(status, message)
