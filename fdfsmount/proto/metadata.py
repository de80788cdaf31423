"""FastDFS metadata text: ``name 0x02 value`` records joined by ``0x01``."""

from __future__ import annotations

from collections.abc import Mapping

from .constants import MAX_META_NAME_LEN, MAX_META_VALUE_LEN, META_FIELD_SEP, META_RECORD_SEP
from .errors import LocalProtocolError
from .wire import encode_text

Metadata = dict[str, str]


def encode_metadata(meta: Mapping[str, str]) -> bytes:
    """Encode in the given order (the server sorts what it stores)."""
    records = []
    for name, value in meta.items():
        raw_name = encode_text(name, "metadata name")
        raw_value = encode_text(str(value), "metadata value")
        if not raw_name or len(raw_name) > MAX_META_NAME_LEN:
            raise LocalProtocolError(f"metadata name {name!r} must be 1..{MAX_META_NAME_LEN} bytes")
        if len(raw_value) > MAX_META_VALUE_LEN:
            raise LocalProtocolError(
                f"metadata value of {name!r} longer than {MAX_META_VALUE_LEN} bytes"
            )
        for raw in (raw_name, raw_value):
            if META_RECORD_SEP in raw or META_FIELD_SEP in raw:
                raise LocalProtocolError(f"metadata {name!r} contains a 0x01/0x02 separator")
        records.append(raw_name + META_FIELD_SEP + raw_value)
    return META_RECORD_SEP.join(records)


def decode_metadata(body: bytes) -> Metadata:
    """Decode metadata text; a record without a value separator has an empty value."""
    meta: Metadata = {}
    if not body:
        return meta
    for record in bytes(body).split(META_RECORD_SEP):
        if not record:
            continue
        name, _, value = record.partition(META_FIELD_SEP)
        meta[name.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return meta


def merge_metadata(old: Mapping[str, str], new: Mapping[str, str]) -> Metadata:
    """SET_METADATA 'M': update and add names, keep the rest."""
    merged = dict(old)
    merged.update(new)
    return merged


def encode_stored_metadata(meta: Mapping[str, str]) -> bytes:
    """The metadata text a storage keeps and returns: records sorted by name.

    Names longer than `MAX_META_NAME_LEN` and values longer than
    `MAX_META_VALUE_LEN` bytes are cut, as upstream's storage cuts them when
    it splits the text it receives; nothing is refused.
    """
    records = []
    for name, value in meta.items():
        raw_name = encode_text(name, "metadata name")[:MAX_META_NAME_LEN]
        raw_value = encode_text(value, "metadata value")[:MAX_META_VALUE_LEN]
        records.append((raw_name, raw_value))
    records.sort(key=lambda record: record[0])
    return META_RECORD_SEP.join(name + META_FIELD_SEP + value for name, value in records)


def sorted_metadata(meta: Mapping[str, str]) -> Metadata:
    """Records sorted by name, as the server stores and returns them."""
    return {k: meta[k] for k in sorted(meta, key=lambda k: k.encode("utf-8", "surrogateescape"))}
