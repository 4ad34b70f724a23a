"""The native ModelInfer bench with python-hyper's ``h2`` behind the relay's callbacks.

Issue 14: measure ``h2`` "behind H2Connection's callbacks on the native ModelInfer bench",
and move the framing to it if it keeps >= 85% of today's rate. ``H2LibClient`` is the
relay's client connection with its framing done by ``h2`` instead of
``modelhost/transport/http2.py``: frames in become ``on_headers`` / ``on_data`` /
``on_reset`` calls, and ``send_headers`` / ``send_data`` / ``reset`` go through ``h2``'s
state machine. Everything above (native ModelInfer, the batcher, the model) is unchanged.

    python bench/h2_adapter.py serve MODEL_DIR [serve flags]   # modelhost serve, h2 inside
    python bench/h2_adapter.py compare [OUT]                  # both, h2load on each (~1 min)

``compare`` trains iris, then for each framing starts ``modelhost serve --max_batch_size 64``
on core 0 and runs h2load (``-c64 -m1``, 3 s warm-up, 10 s measured) on core 1, as
``bench/run.py`` does for run 7's gRPC target, and writes ``OUT/h2_adapter.md``.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from modelhost.transport import grpc_relay
from modelhost.transport.grpc_relay import GrpcRelay, RelayClient
from modelhost.transport.http2 import Header

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(os.environ.get("PEERS", "/tmp/peers"))
_MAX_WINDOW = 2**31 - 1


class H2LibClient(RelayClient):
    """A gRPC client's connection, framed by ``h2``; the relay's calls see no difference."""

    def __init__(self, relay: GrpcRelay) -> None:
        super().__init__(relay)
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self._h2 = h2.connection.H2Connection(config=config)
        self._flush_pending = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self.relay._clients.add(self)
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _MAX_WINDOW,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 256,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(_MAX_WINDOW - 65_535)
        transport.write(self._h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                stream = event.stream_id
                self.stream_windows[stream] = _MAX_WINDOW
                headers = cast("list[Header]", event.headers)
                self.on_headers(stream, headers, event.stream_ended is not None)
            elif isinstance(event, h2.events.DataReceived):
                stream = event.stream_id
                self._h2.acknowledge_received_data(event.flow_controlled_length, stream)
                self.on_data(stream, event.data, event.stream_ended is not None)
            elif isinstance(event, h2.events.TrailersReceived):
                self.on_headers(event.stream_id, cast("list[Header]", event.headers), True)
            elif isinstance(event, h2.events.StreamReset):
                self.stream_windows.pop(event.stream_id, None)
                self.on_reset(event.stream_id, event.error_code)
        self._schedule()

    def send_headers(self, stream: int, headers: Iterable[Header], end: bool) -> None:
        try:
            self._h2.send_headers(stream, list(headers), end_stream=end)
        except h2.exceptions.StreamClosedError:
            return
        self._schedule()

    def send_data(self, stream: int, data: bytes | memoryview, end: bool) -> None:
        try:
            self._h2.send_data(stream, bytes(data), end_stream=end)
        except h2.exceptions.StreamClosedError:
            return
        self._schedule()

    def reset(self, stream: int, code: int) -> None:
        self.stream_windows.pop(stream, None)
        try:
            self._h2.reset_stream(stream, code)
        except h2.exceptions.StreamClosedError:
            return
        self._schedule()

    def close_stream(self, stream: int) -> None:
        self.stream_windows.pop(stream, None)

    def forget(self, stream: int) -> None:
        self.stream_windows.pop(stream, None)

    def goaway(self, last_stream: int, code: int = 0, message: str = "") -> None:
        self._h2.close_connection(error_code=code, last_stream_id=last_stream)
        self._schedule()

    def _schedule(self) -> None:
        if not self._flush_pending and self._loop is not None:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        out = self._h2.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)


def serve(argv: list[str]) -> int:
    grpc_relay.RelayClient = H2LibClient  # type: ignore[misc]
    from modelhost.cli import main

    return int(main(["serve", *argv]) or 0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def iris_model(folder: Path) -> Path:
    """The README's iris classifier, trained into ``folder/iris``."""
    model = folder / "iris"
    script = str(ROOT / "examples/make_iris_model.py")
    subprocess.run([sys.executable, script, str(model)], check=True, capture_output=True)
    return model


def _load(port: int) -> tuple[float, float]:
    """req/s and the share of 2xx answers of 10 s of h2load after 3 s of warm-up."""
    base = [
        "taskset", "-c", "1", "h2load", "-t1", "-c64", "-m1",
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        "-d", str(PEERS / "infer_body.bin"),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer"
    subprocess.run([*base, "-D", "3", url], capture_output=True, check=True)
    out = subprocess.run([*base, "-D", "10", url], capture_output=True, text=True).stdout
    rate = float(re.search(r"finished in .*?, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    assert done is not None, out
    return rate, int(done.group(2)) / max(1, int(done.group(1)))


def compare(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = iris_model(Path(tmp))
        for rounds in range(2):
            for name, command in (
                ("modelhost http2.py", [sys.executable, "-m", "modelhost", "serve"]),
                ("h2 (python-hyper)", [sys.executable, __file__, "serve"]),
            ):
                grpc_port = free_port()
                flags = [str(model), "--name", "iris", "--max_batch_size", "64"]
                flags += ["--http_port", str(free_port()), "--grpc_port", str(grpc_port)]
                server = subprocess.Popen(
                    ["taskset", "-c", "0", *command, *flags],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    for _ in range(300):
                        with socket.socket() as probe:
                            if probe.connect_ex(("127.0.0.1", grpc_port)) == 0:
                                break
                        time.sleep(0.1)
                    time.sleep(1)
                    rate, ok = _load(grpc_port)
                finally:
                    server.terminate()
                    server.wait(10)
                rows.append((rounds + 1, name, rate, ok))
                print(rows[-1], flush=True)
    ours = {r: rate for r, name, rate, _ in rows if name.startswith("modelhost")}
    lines = [
        "| pass | framing | req/s | 2xx share | vs modelhost http2.py |",
        "|---|---|---:|---:|---:|",
    ]
    for r, name, rate, ok in rows:
        lines.append(f"| {r} | {name} | {rate:.0f} | {ok:.3f} | {rate / ours[r]:.2f} |")
    text = "\n".join(lines) + "\n\niris, gRPC ModelInfer, --max_batch_size 64, h2load -c64 -m1\n"
    (out / "h2_adapter.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(serve(sys.argv[2:]))
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "bench" / "results" / "h2"
    sys.exit(compare(target))
