"""The byte format logged exchanges cross a pipe in, from the gateway to the store's process.

One frame per exchange: four big-endian 32-bit lengths (model id, request id, request body,
response body) and then the four fields. A reader keeps the bytes of a frame that has not
arrived whole and takes it with the next read.
"""

from __future__ import annotations

import struct

from modelhost.trust.writer import Exchange

__all__ = ["MAX_FIELD_BYTES", "FrameReader", "append_exchange", "encode_exchange"]

_HEAD = struct.Struct("!IIII")
# No field may claim more than this: a corrupt length must not make the reader wait forever.
MAX_FIELD_BYTES = 256 * 1024 * 1024


def encode_exchange(model_id: str, request_id: str, request: bytes, response: bytes) -> bytes:
    """One exchange as a frame."""
    parts: list[bytes] = []
    append_exchange(parts, model_id, request_id, request, response)
    return b"".join(parts)


def append_exchange(
    parts: list[bytes], model_id: str, request_id: str, request: bytes, response: bytes
) -> int:
    """One exchange's frame added to ``parts`` as its pieces (joined once, with the other
    frames, when they are written); its size in bytes."""
    model, ident = model_id.encode(), request_id.encode()
    lengths = (len(model), len(ident), len(request), len(response))
    parts += (_HEAD.pack(*lengths), model, ident, request, response)
    return _HEAD.size + sum(lengths)


class FrameReader:
    """Exchanges from a byte stream read in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Exchange]:
        """The exchanges ``data`` completes; raises ``ValueError`` on a corrupt length."""
        self._buffer += data
        exchanges: list[Exchange] = []
        view = memoryview(self._buffer)
        at = 0
        try:
            while len(view) - at >= _HEAD.size:
                lengths = _HEAD.unpack_from(view, at)
                if max(lengths) > MAX_FIELD_BYTES:
                    raise ValueError(f"a frame claims a field of {max(lengths)} bytes")
                end = at + _HEAD.size + sum(lengths)
                if end > len(view):
                    break
                fields = []
                start = at + _HEAD.size
                for length in lengths:
                    fields.append(bytes(view[start : start + length]))
                    start += length
                model, ident, request, response = fields
                exchanges.append((model.decode(), ident.decode(), request, response))
                at = end
        finally:
            view.release()
        del self._buffer[:at]
        return exchanges

    @property
    def partial(self) -> int:
        """Bytes of a frame not yet whole."""
        return len(self._buffer)
