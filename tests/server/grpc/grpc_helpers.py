"""Test helpers for the gRPC port: a ``GrpcServer`` of the test's own, and raw HTTP/2 bytes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import hpack

from modelhost import Model
from modelhost.model.repository import ModelRepository
from modelhost.server.dataplane import DataPlane
from modelhost.server.grpc.server import GrpcServer
from modelhost.server.inference import StepRunner
from modelhost.server.metrics import Metrics
from modelhost.settings import ServerSettings
from modelhost.transport import http2_frames as wire
from modelhost.transport.http2_frames import frame


@contextlib.asynccontextmanager
async def grpc_server(
    *models: Model, settings: ServerSettings | None = None
) -> AsyncIterator[tuple[GrpcServer, int]]:
    """A ``GrpcServer`` over a real data plane serving ``models``, on a free loopback port.

    It is stopped at once on the way out (a test that drains stops it first); the model
    threads are not waited for, so a slow model does not hold the test up.
    """
    executor = ThreadPoolExecutor(2)
    metrics = Metrics()
    repository = ModelRepository()
    for model in models:
        repository.update(model)
    dataplane = DataPlane(repository, StepRunner(executor, metrics), "modelhost")
    server = GrpcServer(dataplane, metrics, settings or ServerSettings())
    port = await server.start("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        await server.stop(0)
        executor.shutdown(wait=False)


def raw_call(
    address: str,
    path: str,
    data: bytes,
    *,
    end: bool,
    extra: tuple[tuple[str, str], ...] = (),
    settings: bytes = b"",
) -> bytes:
    """What a raw HTTP/2 client writes for one call on stream 1: the preface, SETTINGS (with
    ``settings`` as payload), the call's headers and ``data`` (not empty) in frames of
    16 KiB, the last one ending the stream if ``end``."""
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", address),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]
    frames = [
        wire.PREFACE,
        frame(wire.SETTINGS, 0, 0, settings),
        frame(wire.HEADERS, wire.END_HEADERS, 1, hpack.Encoder().encode(headers)),
    ]
    size = 16_384
    for start in range(0, len(data), size):
        last = start + size >= len(data)
        flags = wire.END_STREAM if end and last else 0
        frames.append(frame(wire.DATA, flags, 1, data[start : start + size]))
    return b"".join(frames)
