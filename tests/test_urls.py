"""URLs and anti-steal tokens: the formula against reference values, and ``fdfs url``.

The expected tokens were computed once, by hand, with upstream 6.16.1's own
``fdfs_http_gen_token`` (libfdfsclient) on the inputs below; nothing of that
program is kept here.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from fdfsmount.cli import fdfs
from fdfsmount.proto import InvalidFileId
from fdfsmount.urls import (
    DEFAULT_SERVER_TTL,
    anti_steal_token,
    check_token,
    read_http_conf,
    url_for,
)

FID = "group1/M00/00/00/wKgBaFzL2xmAKzVYAAAADl5uqpk842.txt"
REMOTE = "M00/00/00/wKgBaFzL2xmAKzVYAAAADl5uqpk842.txt"
SECRET = "FastDFS1234567890"  # the sample http.conf's secret key

# (subject hashed, secret, ts) -> token, from upstream's fdfs_http_gen_token
UPSTREAM_TOKENS = [
    (REMOTE, SECRET, 1700000000, "096bc644264ff48826125443efcca68a"),
    (FID, SECRET, 1700000000, "0f85eb5c02f767e6da4fd3b546c03e4b"),
    (REMOTE, "s3cr3t key", 0, "1f60e95ad212e3a0ddc5446236680e0a"),
    (REMOTE, SECRET, 2000000000, "8c89d28056753d6b2bac81f2b7e0d683"),
    (
        "M01/AB/CD/CgAAAmXK3Y6EVdnOAAAAAAAAAAA123.jpg",
        "key-with-ünïcode",
        1733480000,
        "bd7b947242c4978c44f185dc59cbb84f",
    ),
]


@pytest.mark.parametrize(("subject", "secret", "ts", "token"), UPSTREAM_TOKENS)
def test_token_matches_upstream(subject: str, secret: str, ts: int, token: str) -> None:
    assert anti_steal_token(subject, secret, ts) == token
    assert anti_steal_token(subject, secret.encode(), ts) == token


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_url_for_signs_the_remote_name_like_the_nginx_module() -> None:
    url = url_for(FID, "http://10.0.0.5:8080/", secret=SECRET, now=1700000000)
    assert url == (
        "http://10.0.0.5:8080/" + FID + "?token=096bc644264ff48826125443efcca68a&ts=1700000000"
    )
    # fdfs_test's form: the whole ID is hashed.
    full = url_for(FID, "http://h", secret=SECRET, now=1700000000, token_over="file_id")
    assert query(full)["token"] == "0f85eb5c02f767e6da4fd3b546c03e4b"
    bare = url_for(FID, "http://h/prefix", with_group=False)
    assert bare == "http://h/prefix/" + REMOTE


def test_ttl_moves_ts_within_the_servers_window() -> None:
    now = 1700000000
    url = url_for(FID, "http://h", secret=SECRET, ttl=60, server_ttl=900, now=now)
    ts = int(query(url)["ts"])
    assert ts == now + 60 - 900
    token = query(url)["token"]
    assert token == anti_steal_token(REMOTE, SECRET, ts)
    # Accepted for 60 seconds, refused after: as the server's check would decide.
    assert check_token(FID, token, ts, SECRET, server_ttl=900, now=now + 60)
    assert not check_token(FID, token, ts, SECRET, server_ttl=900, now=now + 61)
    # Longer than the server's ttl: ts lies in the future, still valid at the end.
    long = url_for(FID, "http://h", secret=SECRET, ttl=3600, server_ttl=900, now=now)
    long_ts = int(query(long)["ts"])
    assert check_token(FID, query(long)["token"], long_ts, SECRET, server_ttl=900, now=now + 3600)
    assert not check_token(FID, "0" * 32, ts, SECRET, server_ttl=900, now=now)
    half = url_for(FID, "http://h", secret=SECRET, ttl=0.5, server_ttl=900, now=now)
    assert int(query(half)["ts"]) == now + 1 - 900  # a fraction rounds up, never to 0
    assert not check_token(FID, token, ts, "other", server_ttl=900, now=now)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidFileId):
        url_for("nope", "http://h")
    with pytest.raises(ValueError, match="ttl needs a secret"):
        url_for(FID, "http://h", ttl=5)
    with pytest.raises(ValueError, match="base URL"):
        url_for(FID, "http://h/?x=1")
    with pytest.raises(ValueError, match="empty"):
        url_for(FID, "http://h", secret="")


def test_download_name_is_percent_encoded() -> None:
    url = url_for(FID, "http://h", download_name="a b.txt")
    assert url.endswith("?filename=a%20b.txt")


def test_read_http_conf(tmp_path: Path) -> None:
    conf = tmp_path / "http.conf"
    conf.write_text(
        "# sample\nhttp.anti_steal.check_token = true\nhttp.anti_steal.token_ttl = 900\n"
        f"http.anti_steal.secret_key = {SECRET}\nhttp.default_content_type = x/y\n"
    )
    settings = read_http_conf(conf)
    assert (settings.check_token, settings.secret, settings.token_ttl) == (True, SECRET, 900)
    conf.write_text("http.anti_steal.token_ttl = soon\n")
    with pytest.raises(ValueError, match=r":1: http\.anti_steal\.token_ttl"):
        read_http_conf(conf)
    conf.write_text("")
    assert read_http_conf(conf).token_ttl == DEFAULT_SERVER_TTL


def test_fdfs_url_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FDFS_HTTP_SECRET", raising=False)
    monkeypatch.delenv("FDFS_HTTP_BASE_URL", raising=False)
    monkeypatch.delenv("FDFS_TRACKERS", raising=False)
    assert fdfs.main(["url", "--base-url", "http://h:8080", FID]) == 0
    assert capsys.readouterr().out == f"http://h:8080/{FID}\n"

    conf = tmp_path / "http.conf"
    conf.write_text(f"http.anti_steal.secret_key = {SECRET}\nhttp.anti_steal.token_ttl = 900\n")
    assert fdfs.main(["url", "--base-url", "http://h", "--http-conf", str(conf), FID, FID]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    params = query(lines[0])
    assert check_token(FID, params["token"], int(params["ts"]), SECRET, server_ttl=900)

    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t key\n")
    args = ["url", "--base-url", "http://h", "--secret-file", str(secret_file), "--ttl", "30"]
    assert fdfs.main([*args, "--server-ttl", "900", FID]) == 0
    params = query(capsys.readouterr().out)
    assert params["token"] == anti_steal_token(REMOTE, "s3cr3t key", int(params["ts"]))

    monkeypatch.setenv("FDFS_HTTP_SECRET", SECRET)
    assert fdfs.main(["url", "--base-url", "http://h", "--token-over", "file_id", FID]) == 0
    params = query(capsys.readouterr().out)
    assert params["token"] == anti_steal_token(FID, SECRET, int(params["ts"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["url", FID], "give --base-url"),
        (["url", "--base-url", "http://h", "--ttl", "5", FID], "--ttl needs a secret"),
        (["url", "--base-url", "http://h", "--http-conf", "/nonexistent", FID], "/nonexistent"),
        (["url", "--base-url", "http://h", "bad-id"], "is not a FastDFS file ID"),
    ],
)
def test_fdfs_url_usage_errors(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FDFS_HTTP_SECRET", raising=False)
    monkeypatch.delenv("FDFS_HTTP_BASE_URL", raising=False)
    assert fdfs.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
