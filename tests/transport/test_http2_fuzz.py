"""Fuzzing the HTTP/2 reader: whatever bytes a peer sends, no exception escapes
``data_received`` and the connection's books stay straight.

Hypothesis builds frames (any type, flags, stream and payload, valid or not) after a real
preface, and raw byte strings, and feeds them in arbitrary chunks to a gRPC relay's client
connection (the class every client of the gRPC port gets) over a fake transport.
"""

from __future__ import annotations

import asyncio
import itertools

import hpack
from h2_peer import FakeTransport
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelhost.settings import Http2Limits
from modelhost.transport import http2_frames as wire
from modelhost.transport.grpc_relay import GrpcRelay, RelayClient
from modelhost.transport.target import Target


async def _nowhere(host: str | None, model: str | None) -> Target:
    raise ConnectionRefusedError("no target in a fuzz test")


_REQUEST = bytes(
    hpack.Encoder().encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/inference.GRPCInferenceService/ModelInfer"),
            ("content-type", "application/grpc"),
        ]
    )
)

frames = st.builds(
    wire.frame,
    st.integers(0, 12),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1]),
    st.one_of(
        st.binary(max_size=64),
        st.just(_REQUEST),
        st.just(b"\0\0\0\0\x05abcde"),
        st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big")),
    ),
)


def _feed(chunks: list[bytes]) -> None:
    async def run() -> None:
        relay = GrpcRelay(_nowhere, limits=Http2Limits(max_concurrent_streams=3))
        connection = RelayClient(relay)
        transport = FakeTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        for chunk in chunks:
            connection.data_received(chunk)  # nothing may escape
            assert connection.pending_bytes >= 0
            assert len(connection.stream_windows) <= 3 + len(connection._forget_after_end)
            if connection.closed:
                break
        await asyncio.sleep(0)  # what was spawned runs once (and fails to connect)
        connection.connection_lost(None)
        assert not relay._clients
        for task in list(relay._tasks):
            task.cancel()
        await asyncio.gather(*relay._tasks, return_exceptions=True)
        await asyncio.sleep(0)

    asyncio.run(run())


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=30), st.lists(st.integers(0, 10_000), max_size=8))
def test_any_frames_in_any_chunks(body: list[bytes], cuts: list[int]) -> None:
    data = wire.PREFACE + wire.frame(wire.SETTINGS, 0, 0) + b"".join(body)
    _feed(_chunked(data, cuts))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=5))
def test_any_bytes_after_the_preface(body: bytes, cuts: list[int]) -> None:
    _feed(_chunked(wire.PREFACE + body, cuts))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_instead_of_the_preface(body: bytes) -> None:
    _feed([body])
