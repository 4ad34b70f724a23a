"""What a ModelInfer call's HTTP/2 framing costs: modelhost's own code against python-hyper's h2.

Issue 14 asks whether the relay's framing should move to ``h2``, whose state machine
enforces RFC 9113, if it keeps >= 85% of the native ModelInfer rate. This measures the
part that would change, in one process with both interleaved so the machine's noise falls
on both: the server side of N unary calls (HEADERS + one DATA message in, HEADERS + DATA +
trailers out) on one connection, fed as a client writes them (``CALLS_PER_READ`` calls per
``data_received``, as h2load's pipelined streams arrive). ``bench/h2_adapter.py`` then
runs the real server with ``h2`` behind the same callbacks for the end-to-end figure.

    .venv/bin/python bench/h2_framing.py [calls] [rounds]
"""

from __future__ import annotations

import statistics
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.transport.grpc_call import send_message
from modelhost.transport.http2 import H2Connection

CALLS_PER_READ = 8

REQUEST_HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/inference.GRPCInferenceService/ModelInfer"),
    (b":authority", b"127.0.0.1:8081"),
    (b"te", b"trailers"),
    (b"content-type", b"application/grpc"),
    (b"user-agent", b"grpc-python/1.70"),
    (b"grpc-accept-encoding", b"identity,deflate,gzip"),
]


def _message() -> bytes:
    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
    tensor.contents.fp64_contents.extend([6.8, 2.8, 4.8, 1.4])
    payload = request.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def _answer() -> bytes:
    response = pb.ModelInferResponse(model_name="iris")
    tensor = response.outputs.add(name="output-0", datatype="INT64", shape=[1])
    tensor.contents.int64_contents.append(1)
    return response.SerializeToString()


def client_bytes(calls: int) -> list[bytes]:
    """What a gRPC client sends for ``calls`` unary calls, in reads of CALLS_PER_READ calls."""
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    client = h2.connection.H2Connection(config=config)
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    client.increment_flow_control_window(2**31 - 1 - 65_535)
    # The server's opening (both servers open their windows wide, as modelhost does).
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.local_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1}
    )
    server.initiate_connection()
    server.increment_flow_control_window(2**31 - 1 - 65_535)
    client.receive_data(server.data_to_send())
    reads = [client.data_to_send()]
    message = _message()
    for call in range(calls):
        stream = 1 + 2 * call
        client.send_headers(stream, REQUEST_HEADERS)
        client.send_data(stream, message, end_stream=True)
        if (call + 1) % CALLS_PER_READ == 0:
            reads.append(client.data_to_send())
    reads.append(client.data_to_send())
    return [read for read in reads if read]


class _Transport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class Ours(H2Connection):
    """modelhost's framing, answering each call as native_infer does."""

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer
        self.answered = 0

    def on_headers(self, stream: int, headers: list, end: bool) -> None:
        self.open_stream(stream)

    def on_data(self, stream: int, data: bytes, end: bool) -> None:
        if end:
            send_message(self, stream, self.answer)  # type: ignore[arg-type]
            self.close_stream(stream)
            self.answered += 1

    def on_reset(self, stream: int, code: int) -> None:
        pass


class _Loop:
    """Enough of an event loop: a clock; writes are flushed below, once per read."""

    time = staticmethod(time.monotonic)

    def call_soon(self, callback: object) -> None:
        pass

    def call_later(self, delay: float, callback: object) -> None:
        pass


def run_ours(reads: list[bytes], answer: bytes) -> int:
    connection = Ours(answer)
    transport = _Transport()
    connection.transport = transport  # type: ignore[assignment]
    connection._loop = _Loop()  # type: ignore[assignment]
    for read in reads:
        connection.data_received(read)
        connection._write_out()
    return connection.answered


OK_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]
OK_TRAILERS = [(b"grpc-status", b"0")]


def run_h2(reads: list[bytes], answer: bytes, *, validate: bool = True) -> int:
    config = h2.config.H2Configuration(
        client_side=False,
        header_encoding=None,
        validate_outbound_headers=validate,
        normalize_outbound_headers=validate,
        validate_inbound_headers=validate,
        normalize_inbound_headers=validate,
    )
    connection = h2.connection.H2Connection(config=config)
    connection.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    connection.initiate_connection()
    transport = _Transport()
    transport.write(connection.data_to_send())
    framed = b"\x00" + len(answer).to_bytes(4, "big") + answer
    answered = 0
    for read in reads:
        for event in connection.receive_data(read):
            if isinstance(event, h2.events.DataReceived):
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                stream = event.stream_id
                connection.send_headers(stream, OK_HEADERS)
                connection.send_data(stream, framed)
                connection.send_headers(stream, OK_TRAILERS, end_stream=True)
                answered += 1
        transport.write(connection.data_to_send())
    return answered


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    reads = client_bytes(calls)
    answer = _answer()
    assert run_ours(reads, answer) == calls
    assert run_h2(reads, answer) == calls
    runs = {
        "modelhost http2.py": run_ours,
        f"h2 {h2.__version__}": run_h2,
        f"h2 {h2.__version__}, header checks off": lambda r, a: run_h2(r, a, validate=False),
    }
    if sys.argv[3:] == ["ours"]:  # only modelhost's, e.g. to compare two checkouts
        runs = {"modelhost http2.py": run_ours}
    figures: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run(reads, answer)
            figures[name].append((time.perf_counter() - started) / calls * 1e6)
    print(f"framing per unary call, {calls} calls x {rounds} rounds (µs, median and best):")
    ours = statistics.median(figures["modelhost http2.py"])
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:34} {median:6.1f} {min(values):6.1f}  ({median / ours:.1f}x)")


if __name__ == "__main__":
    main()
