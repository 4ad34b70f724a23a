"""The header blocks the gRPC relay sends: HPACK that leaves the peer's table alone.

Never adding to the peer's dynamic table makes a block cheap to build (each field's bytes
are remembered) and means blocks need not reach the peer in the order they were made.
Decoding what peers send is the ``hpack`` library's job (in ``http2``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import hpack

__all__ = ["Header", "encode_headers"]

Header = tuple[bytes, bytes]


def encode_headers(headers: Iterable[Header]) -> bytes:
    """A header block that leaves the peer's dynamic table alone: cheap to make, and the
    peer decodes it the same whatever the order in which blocks reach it.

    Each field is the static table's entry where one matches exactly, else a literal
    (with the static table's name where it has one) without indexing, no Huffman coding;
    never-indexed fields stay never-indexed.
    """
    return b"".join(
        [
            _common_field(header[0], header[1])
            if getattr(header, "indexable", True)
            else _field(header[0], header[1], indexable=False)  # secrets are not cached
            for header in headers
        ]
    )


@functools.lru_cache(maxsize=1024)
def _common_field(name: bytes, value: bytes) -> bytes:
    """A field's encoding, remembered: calls repeat most of their headers."""
    return _field(name, value, indexable=True)


def _field(name: bytes, value: bytes, *, indexable: bool) -> bytes:
    exact, names = _static_table()
    index = exact.get((name, value))
    if index is not None and indexable:
        return _integer(index, 7, 0x80)
    prefix = 0x00 if indexable else 0x10
    index = names.get(name)
    if index is None:
        head = bytes([prefix]) + _integer(len(name), 7, 0) + name
    else:
        head = _integer(index, 4, prefix)
    return head + _integer(len(value), 7, 0) + value


def _integer(value: int, bits: int, flags: int) -> bytes:
    """HPACK's prefix integer (RFC 7541, 5.1)."""
    limit = (1 << bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = [flags | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@functools.cache
def _static_table() -> tuple[dict[tuple[bytes, bytes], int], dict[bytes, int]]:
    exact: dict[tuple[bytes, bytes], int] = {}
    names: dict[bytes, int] = {}
    for index, (name, value) in enumerate(hpack.table.HeaderTable.STATIC_TABLE, start=1):
        exact.setdefault((name, value), index)
        names.setdefault(name, index)
    return exact, names
