"""What the bearer-token check costs a REST request inside the server, without sockets.

The `access` scenario of run.py measures tokens end to end, where this machine's noise
(10% between two identical loads) is larger than the cost being measured. This script calls
the ASGI app directly, with and without a Guard, interleaving the two five times, and
prints microseconds per request for each and the median difference. Run by hand:

    .venv/bin/python bench/token_cost.py            # ~10 s; writes nothing

Read the difference against the server's CPU per request in the same scenario's
results.csv (`cpu_us_per_req`, ~450 us for v1 iris without batching).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelhost import Model
from modelhost.access import Guard, Role, TokenStore, TokenTable
from modelhost.model.repository import ModelRepository
from modelhost.server.dataplane import DataPlane
from modelhost.server.http.app import HttpApp
from modelhost.server.inference import StepRunner
from modelhost.server.metrics import Metrics
from modelhost.settings import BatchSettings, ServerSettings

BODY = b'{"instances": [[6.8, 2.8, 4.8, 1.4]]}'
ROUNDS, REQUESTS = 5, 5000


class Echo(Model):
    def __init__(self) -> None:
        super().__init__("iris")
        self.ready = True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return {"predictions": [1]}


def app(guard: Guard | None) -> HttpApp:
    repository = ModelRepository()
    repository.update(Echo())
    metrics = Metrics()
    # Inline steps: no thread hand-off, so the check's share is not hidden in a wait.
    runner = StepRunner(ThreadPoolExecutor(1), metrics, BatchSettings(), 1000.0)
    # v1 alone: no OpenAI routes, which the predict path never reaches.
    return HttpApp(
        DataPlane(repository, runner, "modelhost"), metrics, ServerSettings(), guard=guard
    )


async def per_request_us(target: HttpApp, headers: list[tuple[bytes, bytes]], n: int) -> float:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/models/iris:predict",
        "headers": headers,
        "query_string": b"",
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    started = time.perf_counter()
    for _ in range(n):
        sent.clear()
        await target(scope, receive, send)
    if sent[0]["status"] != 200:
        sys.exit(f"the request failed: {sent}")
    return (time.perf_counter() - started) / n * 1e6


async def main() -> None:
    store = TokenStore(Path(tempfile.mkdtemp()) / "tokens.db")
    _, token = store.create(Role.CALLER)
    plain = [(b"content-type", b"application/json"), (b"content-length", b"38")]
    carrying = [*plain, (b"authorization", f"Bearer {token}".encode())]
    without, with_tokens = app(None), app(Guard(TokenTable(store.path)))
    await per_request_us(without, plain, 1000)
    await per_request_us(with_tokens, carrying, 1000)
    off, on = [], []
    for _ in range(ROUNDS):
        off.append(await per_request_us(without, plain, REQUESTS))
        on.append(await per_request_us(with_tokens, carrying, REQUESTS))
    print("auth none    us/request:", " ".join(f"{x:.1f}" for x in off))
    print("auth tokens  us/request:", " ".join(f"{x:.1f}" for x in on))
    print(f"median difference: {statistics.median(on) - statistics.median(off):.1f} us/request")


if __name__ == "__main__":
    asyncio.run(main())
