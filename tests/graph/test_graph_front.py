"""The router's front taking a predict request whole, as the gateway's proxy parsed it.

The steps are a :class:`ScriptedSteps` (the router's documented seam); the ASGI path and the
sockets are tests/graph/test_graph_server.py's, and the gateway's way to the front is
tests/local/test_inference_graphs.py's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from graph_support import ScriptedSteps, make_graph, service_url
from prometheus_client import CollectorRegistry, generate_latest

from modelhost.graph import FrontSettings, GraphFront, GraphMetrics, GraphRouter, StepAnswer
from modelhost.transport.http1_upstream import ProxiedRequest

BODY = b'{"instances": [[1, 2]]}'
SEQUENCE = {
    "root": {
        "routerType": "Sequence",
        "steps": [{"serviceName": "a"}, {"serviceName": "b", "data": "$request"}],
    }
}


def front_of(steps: ScriptedSteps, **settings: Any) -> GraphFront:
    metrics = GraphMetrics(CollectorRegistry())
    router = GraphRouter(make_graph(SEQUENCE, name="g"), steps, metrics=metrics)
    front = GraphFront(router, metrics.registry, FrontSettings(**settings))
    front.ready = True
    return front


def request(
    path: bytes = b"/", method: bytes = b"POST", body: bytes = BODY, *headers: tuple[bytes, bytes]
) -> ProxiedRequest:
    sent = [(b"host", b"g.default.example.com"), (b"content-type", b"application/json")]
    return ProxiedRequest(method, path, [*sent, *headers], body, True)


def scripted() -> ScriptedSteps:
    steps = ScriptedSteps()
    steps.answers(service_url("a"), {"predictions": ["a"]})
    steps.answers(service_url("b"), {"predictions": ["b"]})
    return steps


@pytest.mark.parametrize("path", [b"/", b"/v1/models/g:predict", b"/v2/models/g/infer"])
async def test_a_predict_request_is_answered_whole(path: bytes) -> None:
    steps = scripted()
    if path.startswith(b"/v2/"):
        steps.answers(service_url("a", "v2"), {"outputs": ["a"]})
        steps.answers(service_url("b", "v2"), {"outputs": ["b"]})
    front = front_of(steps)
    pending = front.whole(request(path, b"POST", BODY, (b"x-request-id", b"rid-1")))
    assert pending is not None
    answer = await pending
    assert answer.status == 200
    assert answer.content_type == b"application/json"
    assert (b"x-request-id", b"rid-1") in answer.headers
    last = b"outputs" if path.startswith(b"/v2/") else b"predictions"
    assert orjson.loads(answer.body) == {last.decode(): ["b"]}
    # Both steps got the graph's request, with its id.
    assert [call.body for call in steps.calls] == [BODY, BODY]
    assert all(call.headers["x-request-id"] == "rid-1" for call in steps.calls)
    exposition = generate_latest(front.registry).decode()
    assert 'modelhost_graph_node_requests_total{graph="g",node="root"} 1.0' in exposition


@pytest.mark.parametrize(
    ("path", "method", "body", "headers"),
    [
        (b"/", b"GET", b"", ()),
        (b"/?debug=1", b"POST", BODY, ()),
        (b"/v1/models/other:predict", b"POST", BODY, ()),
        (b"/v2/models/g/ready", b"POST", BODY, ()),
        (b"/metrics", b"POST", BODY, ()),
        (b"/", b"POST", BODY, ((b"content-encoding", b"gzip"),)),
        (b"/", b"POST", b"x" * 101, ()),
    ],
)
async def test_anything_else_is_left_to_the_asgi_path(
    path: bytes, method: bytes, body: bytes, headers: tuple[tuple[bytes, bytes], ...]
) -> None:
    steps = scripted()
    front = front_of(steps, max_body_bytes=100)
    assert front.whole(request(path, method, body, *headers)) is None
    assert steps.calls == []


async def test_a_graph_slower_than_server_write_answers_504_whole() -> None:
    steps = scripted()

    async def slow(call: Any) -> StepAnswer:
        await asyncio.sleep(5)
        raise AssertionError("cancelled before")

    steps.on(service_url("a"), slow)
    front = front_of(steps, write_timeout_s=0.05)
    pending = front.whole(request())
    assert pending is not None
    answer = await pending
    assert answer.status == 504
    assert b"serverWrite" in answer.body


async def test_a_step_that_fails_is_named_in_the_whole_answer() -> None:
    steps = scripted()
    steps.answers(service_url("b"), {"error": "model b is down"}, 503)
    front = front_of(steps)
    pending = front.whole(request())
    assert pending is not None
    answer = await pending
    assert answer.status == 503
    assert orjson.loads(answer.body) == {"error": "node root, step 2 (b): 503 model b is down"}
