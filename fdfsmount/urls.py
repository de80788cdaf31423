"""HTTP URLs of stored files, as fastdfs-nginx-module serves them, with anti-steal tokens.

The module (and upstream's ``http.conf``) checks ``?token=T&ts=TS`` when
``http.anti_steal.check_token`` is on: ``T`` is the lowercase hex MD5 of
``<file id> <secret key> <decimal TS>`` concatenated with nothing between,
and the link is refused once ``now - TS > http.anti_steal.token_ttl``
(TS 0 never expires). The nginx module hashes the file ID *without* its group
(``M00/00/00/...``) even when the URL carries the group; upstream's sample
programs (fdfs_test) hash the whole ``group/M00/...`` ID, which is what the
storage's old built-in HTTP server checked. ``token_over`` picks one.

No I/O here: URL building is pure, so web apps can call it per request.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlencode

from .proto.fileid import FileId, parse_file_id

#: Upstream's token TTL when http.conf sets none (fdfs_http_params_load).
DEFAULT_SERVER_TTL = 600
TokenOver = Literal["remote_name", "file_id"]


def anti_steal_token(subject: str, secret: str | bytes, timestamp: int) -> str:
    """``md5(subject + secret + str(timestamp))`` in hex, as upstream's fdfs_http_gen_token."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hashlib.md5(subject.encode() + key + str(int(timestamp)).encode()).hexdigest()


def token_subject(file_id: FileId | str, token_over: TokenOver = "remote_name") -> str:
    fid = file_id if isinstance(file_id, FileId) else parse_file_id(file_id)
    if token_over == "remote_name":
        return fid.remote_name
    if token_over == "file_id":
        return str(fid)
    raise ValueError(f"token_over must be 'remote_name' or 'file_id', not {token_over!r}")


def url_for(
    file_id: FileId | str,
    base_url: str,
    *,
    secret: str | bytes | None = None,
    ttl: float | None = None,
    server_ttl: int = DEFAULT_SERVER_TTL,
    now: float | None = None,
    with_group: bool = True,
    token_over: TokenOver = "remote_name",
    download_name: str | None = None,
) -> str:
    """The URL of ``file_id`` under ``base_url`` (e.g. ``http://10.0.0.5:8080``).

    With ``secret`` the URL carries ``token`` and ``ts``. The server accepts a
    token for its own ``token_ttl`` seconds after ``ts``; ``ttl`` (seconds)
    asks for a different lifetime by moving ``ts``: ``ts = now + ttl -
    server_ttl``, so pass the server's ``http.anti_steal.token_ttl`` as
    ``server_ttl`` (default 600, upstream's). ``with_group`` puts the group in
    the path (the nginx module's ``url_have_group_name = true``).
    ``download_name`` adds ``filename=``, which the module sends as the
    attachment name.
    """
    fid = file_id if isinstance(file_id, FileId) else parse_file_id(file_id)
    if not base_url or "?" in base_url or "#" in base_url:
        raise ValueError(f"bad base URL {base_url!r}")
    path = str(fid) if with_group else fid.remote_name
    url = f"{base_url.rstrip('/')}/{quote(path)}"
    params: list[tuple[str, str]] = []
    if secret is not None:
        if not secret:
            raise ValueError("the secret key is empty")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be positive, not {ttl}")
        if server_ttl <= 0:
            raise ValueError(f"server_ttl must be positive, not {server_ttl}")
        issued = int(time.time() if now is None else now)
        ts = issued if ttl is None else issued + math.ceil(ttl) - server_ttl
        ts = max(ts, 1)  # 0 would mean "never expires"
        params += [("token", anti_steal_token(token_subject(fid, token_over), secret, ts))]
        params += [("ts", str(ts))]
    elif ttl is not None:
        raise ValueError("ttl needs a secret (an unsigned URL never expires)")
    if download_name is not None:
        params.append(("filename", download_name))
    return f"{url}?{urlencode(params, quote_via=quote)}" if params else url


def check_token(
    file_id: FileId | str,
    token: str,
    ts: int,
    secret: str | bytes,
    *,
    server_ttl: int = DEFAULT_SERVER_TTL,
    now: float | None = None,
    token_over: TokenOver = "remote_name",
) -> bool:
    """Whether the server would accept ``token``/``ts`` now (upstream's fdfs_http_check_token)."""
    if len(token) != 32:
        return False
    current = int(time.time() if now is None else now)
    if ts != 0 and current - ts > server_ttl:
        return False
    return token == anti_steal_token(token_subject(file_id, token_over), secret, ts)


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """The anti-steal settings of an upstream http.conf."""

    check_token: bool
    secret: str | None
    token_ttl: int


def read_http_conf(path: str | Path) -> TokenSettings:
    """``http.anti_steal.check_token``, ``.secret_key`` and ``.token_ttl`` of an http.conf.

    Raises `OSError` when unreadable and `ValueError` naming the line when malformed.
    """
    values: dict[str, tuple[int, str]] = {}
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if sep and key.startswith("http.anti_steal."):
            values[key] = (lineno, value)
    check = values.get("http.anti_steal.check_token", (0, "false"))[1].lower()
    lineno, ttl_text = values.get("http.anti_steal.token_ttl", (0, str(DEFAULT_SERVER_TTL)))
    try:
        ttl = int(ttl_text)
        if ttl <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"{path}:{lineno}: http.anti_steal.token_ttl is not a positive integer"
        ) from None
    secret = values.get("http.anti_steal.secret_key", (0, ""))[1] or None
    return TokenSettings(check in ("true", "yes", "on", "1"), secret, ttl)


__all__ = [
    "DEFAULT_SERVER_TTL",
    "TokenSettings",
    "anti_steal_token",
    "check_token",
    "read_http_conf",
    "token_subject",
    "url_for",
]
