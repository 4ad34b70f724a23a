"""The router over real HTTP: a ``ModelServer`` on a loopback port serves the steps' models,
reached through :class:`HttpStepCaller` (aiohttp) at the URLs :class:`GatewayResolver` builds;
raw loopback sockets play a step that never answers and one that hangs up."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from graph_support import make_graph
from serving import RunningServer, start_server, stop_server
from testmodels import FailingModel, SumModel

from modelhost import Model
from modelhost.graph import (
    GatewayResolver,
    GraphRouter,
    HttpCallerSettings,
    HttpStepCaller,
    RouterSettings,
)


class Doubler(Model):
    """v1: every instance value doubled; says which request id and host it was sent."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        seen = {k.lower(): v for k, v in (headers or {}).items()}
        return {
            "predictions": [[2 * v for v in row] for row in payload["instances"]],
            "request_id": seen.get("x-request-id"),
            "host": seen.get("host"),
        }


class RowSum(Model):
    """v1: the sum of every instance row."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return {"predictions": [sum(row) for row in payload["instances"]]}


@pytest.fixture(scope="module")
def models() -> Iterator[RunningServer]:
    running = start_server(
        [Doubler("doubler"), RowSum("rowsum"), SumModel("sum"), FailingModel("failing")]
    )
    yield running
    stop_server(running)


@pytest.fixture
async def caller() -> AsyncIterator[HttpStepCaller]:
    http = HttpStepCaller()
    yield http
    await http.close()


def gateway(models: RunningServer) -> GatewayResolver:
    return GatewayResolver(namespace="default", domain="example.com", gateway=models.http_address)


ROWS = {"instances": [[1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5]]}


async def test_a_sequence_and_an_ensemble_over_real_model_servers(
    models: RunningServer, caller: HttpStepCaller
) -> None:
    chain = [
        {"serviceName": "doubler"},
        {"serviceName": "rowsum", "data": "$response", "mapPredictionsToInstances": True},
    ]
    sequence = make_graph({"root": {"routerType": "Sequence", "steps": chain}})
    router = GraphRouter(sequence, caller, gateway(models))
    response = await router.route(orjson.dumps(ROWS), {"x-request-id": "req-7"})
    assert response.status == 200
    assert orjson.loads(response.body) == {"predictions": [20, 4.0]}

    graph = make_graph(
        {
            "root": {
                "routerType": "Sequence",
                "steps": [*chain, {"nodeName": "both", "data": "$request"}],
            },
            "both": {
                "routerType": "Ensemble",
                "steps": [{"serviceName": "doubler", "name": "double"}, {"serviceName": "rowsum"}],
            },
        }
    )
    ensemble = GraphRouter(graph, caller, gateway(models))
    response = await ensemble.route(orjson.dumps(ROWS), {"x-request-id": "req-8"})
    assert response.status == 200
    assert response.headers["x-request-id"] == "req-8"
    assert orjson.loads(response.body) == {
        "double": {
            "predictions": [[2, 4, 6, 8], [1.0, 1.0, 1.0, 1.0]],
            "request_id": "req-8",
            "host": "doubler.default.example.com",
        },
        "1": {"predictions": [10, 2.0]},
    }


async def test_a_v2_request_goes_to_the_v2_path_of_its_step(
    models: RunningServer, caller: HttpStepCaller
) -> None:
    graph = make_graph({"root": {"routerType": "Sequence", "steps": [{"serviceName": "sum"}]}})
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    router = GraphRouter(graph, caller, gateway(models))
    response = await router.route(
        orjson.dumps(request), {"content-type": "application/json"}, path="/v2/models/g/infer"
    )
    assert response.status == 200
    outputs = {output["name"]: output["data"] for output in orjson.loads(response.body)["outputs"]}
    assert outputs["sum"] == [10.0]


async def test_a_failing_hard_step_over_http_names_itself(
    models: RunningServer, caller: HttpStepCaller
) -> None:
    graph = make_graph(
        {
            "root": {
                "routerType": "Sequence",
                "steps": [
                    {"serviceName": "doubler"},
                    {"serviceName": "failing", "name": "crashy", "dependency": "Hard"},
                    {"serviceName": "rowsum"},
                ],
            }
        }
    )
    response = await GraphRouter(graph, caller, gateway(models)).route(orjson.dumps(ROWS), {})
    assert response.status == 500
    error = orjson.loads(response.body)["error"]
    assert error.startswith("node root, step 2 (crashy): 500 ")
    assert "boom" in error


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_step_nobody_listens_for_is_a_502(caller: HttpStepCaller) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1/models/x:predict"
    graph = make_graph(
        {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": url, "name": "gone"}]}}
    )
    response = await GraphRouter(graph, caller).route(b"{}", {})
    assert response.status == 502
    assert orjson.loads(response.body) == {
        "error": f"node root, step 1 (gone): {url} unreachable: connection refused"
    }


class SilentStep:
    """A loopback server that reads a request's head, then hangs up or never answers."""

    def __init__(self, hang_up: bool) -> None:
        self.hang_up = hang_up
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        if self.hang_up:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/predict"

    async def __aexit__(self, *exc_info: object) -> None:
        for writer in self.writers:
            writer.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_a_step_that_does_not_answer_in_time_is_a_504(caller: HttpStepCaller) -> None:
    async with SilentStep(hang_up=False) as url:
        graph = make_graph(
            {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": url, "name": "stuck"}]}}
        )
        settings = RouterSettings(default_step_timeout=0.2)
        response = await GraphRouter(graph, caller, settings=settings).route(b"{}", {})
    assert response.status == 504
    assert orjson.loads(response.body) == {
        "error": f"node root, step 1 (stuck): no answer from {url} within 0.2s"
    }


async def test_a_step_that_hangs_up_is_a_502(caller: HttpStepCaller) -> None:
    async with SilentStep(hang_up=True) as url:
        graph = make_graph({"root": {"routerType": "Sequence", "steps": [{"serviceUrl": url}]}})
        response = await GraphRouter(graph, caller).route(b"{}", {})
    assert response.status == 502
    assert orjson.loads(response.body)["error"].startswith(f"node root, step 1 ({url}): {url} ")


async def test_an_answer_over_the_callers_limit_is_refused(models: RunningServer) -> None:
    small = HttpStepCaller(HttpCallerSettings(max_answer_bytes=64))
    try:
        graph = make_graph(
            {"root": {"routerType": "Sequence", "steps": [{"serviceName": "doubler"}]}}
        )
        response = await GraphRouter(graph, small, gateway(models)).route(orjson.dumps(ROWS), {})
    finally:
        await small.close()
    assert response.status == 502
    assert "over the 64 byte limit" in orjson.loads(response.body)["error"]
