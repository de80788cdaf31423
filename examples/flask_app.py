"""A Flask app that stores uploads in FastDFS, once per content, and serves them back.

    pip install flask
    export FDFS_TRACKERS=10.0.0.5:22122
    flask --app 'examples.flask_app:create_app()' run

    curl -F file=@photo.jpg http://127.0.0.1:5000/files      # -> {"id": "group1/M00/..."}
    curl -O http://127.0.0.1:5000/files/group1/M00/00/00/...jpg

One blocking `Client` serves every request thread (it is thread-safe); a
`ContentStore` over it stores identical uploads once. With ``base_url`` (the
nginx with fastdfs-nginx-module in front of the storages) GET redirects to a
signed URL instead of streaming the bytes through Python.

Importing this module does not need Flask; `create_app` does.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fdfsmount.content import ContentStore
from fdfsmount.proto import FdfsError, FileNotFound, InvalidFileId
from fdfsmount.proto.fileid import split_ext
from fdfsmount.proto.sync import Client

if TYPE_CHECKING:
    from flask import Flask


def create_app(
    trackers: str | None = None,
    *,
    group: str | None = None,
    base_url: str | None = None,
    secret: str | None = None,
    link_ttl: int = 300,
    client: Client | None = None,
) -> Flask:
    """The app; settings default to FDFS_TRACKERS, FDFS_GROUP, FDFS_HTTP_BASE_URL and
    FDFS_HTTP_SECRET from the environment."""
    from flask import Flask, Response, jsonify, redirect, request

    if client is None:
        trackers = trackers or os.environ.get("FDFS_TRACKERS")
        if not trackers:
            raise RuntimeError("set FDFS_TRACKERS=host:port[,host:port...]")
        client = Client(trackers)
    store = ContentStore(
        client,
        group=group or os.environ.get("FDFS_GROUP") or None,
        base_url=base_url or os.environ.get("FDFS_HTTP_BASE_URL") or None,
        secret=secret or os.environ.get("FDFS_HTTP_SECRET") or None,
    )
    app = Flask(__name__)
    app.extensions["fdfs_store"] = store

    @app.errorhandler(InvalidFileId)
    def bad_id(exc: InvalidFileId) -> Any:
        return jsonify(error=str(exc)), 400

    @app.errorhandler(FileNotFound)
    def missing(exc: FileNotFound) -> Any:
        return jsonify(error="no such file"), 404

    @app.errorhandler(FdfsError)
    def storage_failed(exc: FdfsError) -> Any:
        app.logger.error("FastDFS: %s", exc)
        return jsonify(error="storage unavailable"), 502

    @app.post("/files")
    def upload() -> Any:
        if "file" in request.files:
            part = request.files["file"]
            source, ext = part.stream, split_ext(part.filename or "")
        else:
            source, ext = request.stream, request.args.get("ext", "")
        address = store.put(source, ext)
        body = {
            "id": address.id,
            "size": address.size,
            "crc32": address.crc32,
            "sha256": address.sha256,
            "duplicate": address.is_duplicate,
        }
        if store.base_url:
            body["url"] = store.url_for(address)
        return jsonify(body), 200 if address.is_duplicate else 201

    @app.get("/files/<path:file_id>")
    def download(file_id: str) -> Any:
        fid = store.file_id(file_id)
        if store.base_url:
            ttl = link_ttl if store.secret else None
            return redirect(store.url_for(fid, ttl=ttl), code=302)
        address = store.get(fid)
        if address is None:
            raise FileNotFound(f"{fid}")
        chunks: Iterator[bytes] = client.iter_download(fid)
        mimetype = mimetypes.guess_type(fid.remote_name)[0] or "application/octet-stream"
        response = Response(chunks, mimetype=mimetype)
        response.content_length = address.size
        return response

    @app.delete("/files/<path:file_id>")
    def delete(file_id: str) -> Any:
        store.delete(file_id)
        return "", 204

    return app
