"""Loader for the FastDFS 6.16.1 golden transcripts (byte captures) in ``tests/data/golden/``.

Each JSON line becomes a frozen `GoldenRecord`. A missing or empty golden
directory is an error, not a reason to skip: the codec tests exist to replay
these bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden" / "transcripts"
STORAGE_ID_MODE = "storage-id-mode"
IP_MODE = "ip-mode"
MODES = (STORAGE_ID_MODE, IP_MODE)


class GoldenDataMissing(RuntimeError):
    """The golden transcripts are not where the tests expect them."""


@dataclass(frozen=True, slots=True)
class GoldenRecord:
    """One captured request/response exchange."""

    mode: str  # file stem: "storage-id-mode" or "ip-mode"
    name: str
    server: str  # "tracker" | "storage"
    cmd: int
    request: bytes
    response: bytes
    closed_after: bool
    notes: str

    @property
    def id(self) -> str:
        return f"{self.mode}:{self.name}"

    @property
    def request_body(self) -> bytes:
        return self.request[10:]

    @property
    def response_body(self) -> bytes:
        return self.response[10:]


def _load_file(mode: str) -> tuple[GoldenRecord, ...]:
    path = GOLDEN_DIR / f"{mode}.jsonl"
    if not path.is_file():
        raise GoldenDataMissing(
            f"golden transcript {path} is missing: the repository checkout is incomplete"
        )
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            records.append(
                GoldenRecord(
                    mode=mode,
                    name=raw["name"],
                    server=raw["server"],
                    cmd=int(raw["cmd"]),
                    request=bytes.fromhex(raw["request_hex"]),
                    response=bytes.fromhex(raw["response_hex"]),
                    closed_after=bool(raw["closed_after"]),
                    notes=raw["notes"],
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise GoldenDataMissing(f"{path}:{lineno}: malformed golden record: {exc}") from exc
    if not records:
        raise GoldenDataMissing(f"golden transcript {path} holds no records")
    names = [r.name for r in records]
    if len(set(names)) != len(names):
        raise GoldenDataMissing(f"{path}: record names are not unique")
    return tuple(records)


@cache
def load(mode: str) -> tuple[GoldenRecord, ...]:
    """All records of one transcript file, in file order."""
    if mode not in MODES:
        raise ValueError(f"unknown golden mode {mode!r}")
    return _load_file(mode)


def all_records() -> list[GoldenRecord]:
    """Records of both files, storage-id mode first."""
    return [rec for mode in MODES for rec in load(mode)]


def record(mode: str, name: str) -> GoldenRecord:
    for rec in load(mode):
        if rec.name == name:
            return rec
    raise KeyError(f"no golden record {mode}:{name}")
