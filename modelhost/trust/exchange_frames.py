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
    parts += (
        _HEAD.pack(len(model), len(ident), len(request), len(response)),
        model,
        ident,
        request,
        response,
    )
    return _HEAD.size + len(model) + len(ident) + len(request) + len(response)


def _checked(lengths: tuple[int, ...]) -> tuple[int, ...]:
    """A frame head's field lengths; ``ValueError`` when one is past ``MAX_FIELD_BYTES``."""
    if max(lengths) > MAX_FIELD_BYTES:
        raise ValueError(f"a frame claims a field of {max(lengths)} bytes")
    return lengths


class FrameReader:
    """Exchanges from a byte stream read in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | memoryview) -> list[Exchange]:
        """The exchanges ``data`` completes; raises ``ValueError`` on a corrupt length.
        ``data`` is copied: the caller may reuse its buffer."""
        buffer = self._buffer
        buffer += data
        if not self._first_is_whole():
            return []  # a frame still arriving is not copied on every read
        # One copy of what has arrived, cut into fields (slices of bytes, not of a view).
        whole = bytes(buffer)
        exchanges: list[Exchange] = []
        unpack, head = _HEAD.unpack_from, _HEAD.size
        at, size = 0, len(whole)
        while size - at >= head:
            model, ident, request, response = _checked(unpack(whole, at))
            ident_at = at + head + model
            request_at = ident_at + ident
            response_at = request_at + request
            end = response_at + response
            if end > size:
                break
            exchanges.append(
                (
                    whole[at + head : ident_at].decode(),
                    whole[ident_at:request_at].decode(),
                    whole[request_at:response_at],
                    whole[response_at:end],
                )
            )
            at = end
        del buffer[:at]
        return exchanges

    def _first_is_whole(self) -> bool:
        buffer = self._buffer
        if len(buffer) < _HEAD.size:
            return False
        return len(buffer) >= _HEAD.size + sum(_checked(_HEAD.unpack_from(buffer, 0)))

    @property
    def partial(self) -> int:
        """Bytes of a frame not yet whole."""
        return len(self._buffer)
