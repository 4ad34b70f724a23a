"""A raw HTTP/2 client for tests: writes any frame, legal or not, and reads frames back."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import Any

import hpack

from modelhost.transport import http2_frames as wire
from modelhost.transport.http2_frames import frame

INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Peer:
    """The raw client: writes frames, reads and parses what the connection sends back."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    encoder: hpack.Encoder = field(default_factory=hpack.Encoder)
    decoder: hpack.Decoder = field(default_factory=hpack.Decoder)

    def send(self, kind: int, flags: int, stream: int, payload: bytes = b"") -> None:
        self.writer.write(frame(kind, flags, stream, payload))

    def request(self, path: str = "/x", *extra: tuple[str, str]) -> bytes:
        """A well-formed request's header block (what a gRPC client sends, give or take)."""
        fields = [(":method", "POST"), (":scheme", "http"), (":path", path), *extra]
        return bytes(self.encoder.encode(fields))

    def grpc_request(self, path: str = INFER) -> bytes:
        return self.request(
            path, ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "5S")
        )

    async def next_frame(self, timeout: float = 5) -> tuple[int, int, int, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(9), timeout)
        size = int.from_bytes(head[:3], "big")
        kind, flags, stream = head[3], head[4], int.from_bytes(head[5:], "big")
        return kind, flags, stream, await self.reader.readexactly(size)

    async def expect(self, kind: int, timeout: float = 5) -> tuple[int, int, bytes]:
        """The next frame of ``kind``, skipping the others (settings, window updates)."""
        while True:
            got, flags, stream, payload = await self.next_frame(timeout)
            if got == kind:
                return flags, stream, payload

    async def goaway(self, timeout: float = 5) -> tuple[int, int]:
        """The GOAWAY that ends the connection: (last stream, error code); then EOF."""
        _, _, payload = await self.expect(wire.GOAWAY, timeout)
        last, code = struct.unpack_from(">LL", payload)
        assert await asyncio.wait_for(self.reader.read(), timeout) == b""
        return last, code

    async def reset(self, stream: int) -> int:
        """The error code of the next RST_STREAM, which must be for ``stream``."""
        _, got, payload = await self.expect(wire.RST_STREAM)
        assert got == stream
        return int(struct.unpack(">L", payload)[0])

    def close(self) -> None:
        self.writer.close()


async def connect(port: int, *, settings: bytes = b"") -> Peer:
    """A connection past the handshake: preface and SETTINGS sent, the server's SETTINGS read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire.PREFACE + frame(wire.SETTINGS, 0, 0, settings))
    peer = Peer(reader, writer)
    flags, _, _ = await peer.expect(wire.SETTINGS)
    assert flags == 0
    return peer


def settings_of(payload: bytes) -> dict[int, int]:
    return dict(struct.unpack_from(">HL", payload, i) for i in range(0, len(payload), 6))


class FakeTransport:
    """An asyncio transport that keeps what is written and whether reading is paused."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, data: list[bytes]) -> None:
        for each in data:
            self.write(each)

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default
