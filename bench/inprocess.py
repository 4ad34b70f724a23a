"""CPU per request of `modelhost serve` iris with no sockets: fake connections fed to its protocol.

The server is built as `modelhost serve` builds it (its HttpApp behind the limited httptools
protocol, direct path on), in this process; `C` connections (64) each send one request,
and the next when the answer is written, until `N` (30000) are answered, `R` (3) times.
Prints the median and least CPU µs per request. No kernel, no wrk: what is left is the
server's own Python, so changes to the hot path show here first (bench/instructions.sh
counts instructions over the same loop under callgrind, which the host's noise does not
move). Knobs: `P` (v2 or v1), `B` (--max_batch_size, 64; 0 for none), `MODEL_DIR`
(/tmp/peers/models/iris, made by bench/setup.sh).

    taskset -c 0 .venv/bin/python bench/inprocess.py
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

import modelhost.server.model_server as model_server
from modelhost.runtimes import detect
from modelhost.settings import ServerSettings

CONNS = int(os.environ.get("C", "64"))
N = int(os.environ.get("N", "30000"))
ROUNDS = int(os.environ.get("R", "3"))
BATCH = int(os.environ.get("B", "64"))
PROTO = os.environ.get("P", "v2")
MODEL_DIR = Path(os.environ.get("MODEL_DIR", "/tmp/peers/models/iris"))

if PROTO == "v2":
    BODY = (
        b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[6.8,2.8,4.8,1.4]}]}'
    )
    PATH = b"/v2/models/iris/infer"
else:
    BODY = b'{"instances":[[6.8,2.8,4.8,1.4]]}'
    PATH = b"/v1/models/iris:predict"
REQUEST = (
    b"POST " + PATH + b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


class FakeTransport(asyncio.Transport):
    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self.connection = connection
        self.closing = False

    def write(self, data: Any) -> None:
        self.connection.written(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Connection:
    """One client: sends a request, checks its answer is a 200, sends the next."""

    def __init__(self, factory: Any, state: dict[str, Any]) -> None:
        self.protocol = factory()
        self.state = state
        self.buffer = b""
        self.protocol.connection_made(FakeTransport(self))

    def send(self) -> None:
        self.protocol.data_received(REQUEST)

    def written(self, data: bytes) -> None:
        self.buffer += data
        head, sep, body = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        if len(body) < length:
            return
        if b" 200 " not in head[:15]:
            sys.exit(f"not a 200: {self.buffer[:300]!r}")
        self.buffer = b""
        state = self.state
        state["done"] += 1
        if state["sent"] < N:
            state["sent"] += 1
            asyncio.get_running_loop().call_soon(self.send)
        elif state["done"] >= N:
            state["finished"].set_result(None)


async def main() -> None:
    made: list[Any] = []
    original = model_server._UvicornServer.__init__

    def capture(self: Any, config: Any) -> None:
        made.append(self)
        original(self, config)

    model_server._UvicornServer.__init__ = capture  # type: ignore[method-assign]
    settings = ServerSettings(
        http_port=0, enable_grpc=False, max_batch_size=BATCH, host="127.0.0.1"
    )
    model = detect.build_model(MODEL_DIR, "iris", runtime=None, model_class=None, options={})
    server = model_server.ModelServer(settings=settings)
    serving = asyncio.create_task(server.serve([model]))
    while not made or not made[0].started:  # noqa: ASYNC110 - uvicorn has only a flag
        await asyncio.sleep(0.01)
    uvicorn_server = made[0]
    config = uvicorn_server.config
    factory = functools.partial(
        config.http_protocol_class,
        config=config,
        server_state=uvicorn_server.server_state,
        app_state={},
    )
    results = []
    for _ in range(ROUNDS):
        state: dict[str, Any] = {
            "done": 0,
            "sent": 0,
            "finished": asyncio.get_running_loop().create_future(),
        }
        connections = [Connection(factory, state) for _ in range(CONNS)]
        began = time.process_time()
        for connection in connections:
            state["sent"] += 1
            connection.send()
        await state["finished"]
        results.append(1e6 * (time.process_time() - began) / N)
        for connection in connections:
            connection.protocol.connection_lost(None)
    results.sort()
    print(
        f"{PROTO} batch {BATCH}: CPU µs per request, median {results[len(results) // 2]:.1f},"
        f" least {results[0]:.1f} ({', '.join(f'{r:.0f}' for r in results)})",
        flush=True,
    )
    serving.cancel()


if __name__ == "__main__":
    uvloop.run(main())
