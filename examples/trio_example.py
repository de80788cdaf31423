"""The trio client in an async program: upload, stream back, metadata, a signed URL.

    python examples/trio_example.py 10.0.0.5:22122 [FILE]

Many transfers share one client and its connection pool; deadlines are the
caller's (``trio.fail_after``), errors are typed (`FileNotFound`, `Timeout`...).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import trio

from fdfsmount.proto import FileNotFound
from fdfsmount.proto.client import Client
from fdfsmount.urls import url_for


async def main(tracker: str, path: Path | None) -> int:
    data = await trio.Path(path).read_bytes() if path else b"hello from trio\n" * 1000
    async with Client([tracker]) as client:
        with trio.fail_after(60):
            # Five uploads at once over one pool.
            ids = []

            async def upload(n: int) -> None:
                ids.append(await client.upload(data, ext="txt", meta={"copy": str(n)}))

            async with trio.open_nursery() as nursery:
                for n in range(5):
                    nursery.start_soon(upload, n)

            for fid in ids:
                digest = hashlib.sha256()
                async with client.download_stream(fid) as chunks:
                    async for chunk in chunks:
                        digest.update(chunk)
                assert digest.digest() == hashlib.sha256(data).digest(), fid
                print(fid, url_for(fid, "http://files.example.com", secret="change-me", ttl=300))

            for fid in ids:
                await client.delete(fid)
            try:
                await client.download(ids[0])
            except FileNotFound:
                print("deleted:", ids[0])
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(trio.run(main, sys.argv[1], Path(sys.argv[2]) if len(sys.argv) == 3 else None))
