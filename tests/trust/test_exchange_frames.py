"""Exchange frames across the pipe to the store's writer: whole, split anywhere, or corrupt."""

from __future__ import annotations

import struct

import pytest

from modelhost.trust.exchange_frames import MAX_FIELD_BYTES, FrameReader, encode_exchange

EXCHANGES = [
    ("iris", "r-1", b'{"inputs": []}', b'{"outputs": []}'),
    ("modèle", "", b"", b"x" * 70_000),
    ("m", "r-3", b"\x00\xff", b"{}"),
]


def test_frames_read_back_whole_however_the_stream_is_cut() -> None:
    stream = b"".join(encode_exchange(*exchange) for exchange in EXCHANGES)
    for piece in (1, 7, 16, 1000, len(stream)):
        reader = FrameReader()
        got = []
        for start in range(0, len(stream), piece):
            got += reader.feed(stream[start : start + piece])
        assert got == EXCHANGES
        assert reader.partial == 0


def test_a_frame_cut_short_waits_for_its_rest() -> None:
    frame = encode_exchange(*EXCHANGES[0])
    reader = FrameReader()
    assert reader.feed(frame[:-1]) == []
    assert reader.partial == len(frame) - 1
    assert reader.feed(frame[-1:]) == [EXCHANGES[0]]


def test_a_corrupt_length_is_refused_not_waited_for() -> None:
    with pytest.raises(ValueError, match="claims a field"):
        FrameReader().feed(struct.pack("!IIII", 1, 1, MAX_FIELD_BYTES + 1, 0))


def test_a_corrupt_length_after_whole_frames_is_refused_too() -> None:
    stream = encode_exchange(*EXCHANGES[0]) + struct.pack("!IIII", MAX_FIELD_BYTES + 1, 0, 0, 0)
    with pytest.raises(ValueError, match="claims a field"):
        FrameReader().feed(stream)
