"""A fuzz test of the router's HTTP front: random requests over a real socket (hypothesis).

Methods, paths, headers and bodies are drawn at random, invalid JSON, v2 binary bodies with
wrong ``inference-header-content-length`` values and unknown content encodings included. Every
answer must be a well-formed HTTP response whose status is below 500, except the documented
502, 503 and 504 of a step that could not answer; nothing may be logged as an error; and the
router must still say it is ready afterwards.
"""

from __future__ import annotations

import http.client
import logging
import socket
import string
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from step_services import LoopThread, StepService, local_settings, router_config, service, serving

from modelhost.graph import GraphServer

# root picks by the body: {"gone": ...} calls a service that is not deployed (503), a body
# with "both" an Ensemble, one with "instances" a Sequence with a Hard first step; any other
# is answered as it came.
NODES = {
    "root": {
        "routerType": "Switch",
        "steps": [
            {"serviceName": "gone", "condition": "gone"},
            {"nodeName": "pair", "condition": "both"},
            {"nodeName": "chain", "condition": "instances"},
        ],
    },
    "pair": {
        "routerType": "Ensemble",
        "steps": [{"serviceName": "a", "name": "first"}, {"serviceName": "b"}],
    },
    "chain": {
        "routerType": "Sequence",
        "steps": [
            {"serviceName": "a", "dependency": "Hard"},
            {"serviceName": "b", "data": "$response", "condition": "model"},
        ],
    },
}
PATHS = (
    "/",
    "/v1/models/g:predict",
    "/v2/models/g/infer",
    "/v2/models/g",
    "/v2/models/g/ready",
    "/v2/health/live",
    "/v2/health/ready",
    "/healthz",
    "/metrics",
    "/v1/models/other:predict",
    "/v2/models/other/infer",
    "/v2/models//infer",
)
# Headers the test writes itself: they frame the request on the connection.
FRAMING = {"content-length", "transfer-encoding", "connection", "host", "upgrade", "expect"}
# What a step that gave no answer surfaces as (graph/errors.py).
STEP_FAILURES = {502, 503, 504}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "instances": json_values,
        "inputs": json_values,
        "both": json_values,
        "gone": json_values,
        "model": json_values,
    },
)
bodies = st.one_of(
    documents.map(orjson.dumps),
    json_values.map(orjson.dumps),
    st.binary(max_size=512),
    st.text(max_size=64).map(str.encode),
    documents.map(lambda d: orjson.dumps(d)[:-1]),  # cut short: not JSON
    st.integers(4000, 6000).map(lambda size: b"[" * size),  # about the 4096 byte limit
)
GRAPH_PATHS = ("/", "/v1/models/g:predict", "/v2/models/g/infer")
tokens = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=20)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
special_headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(
            ["application/json", "application/octet-stream", "text/plain", ""]
        ),
        "inference-header-content-length": st.one_of(st.integers(-3, 600).map(str), header_values),
        "content-encoding": st.sampled_from(["gzip", "deflate", "br", "identity"]),
        "x-request-id": header_values,
    },
)
paths = st.one_of(
    st.sampled_from(PATHS),
    st.sampled_from(PATHS).flatmap(
        lambda p: st.text(string.ascii_letters + string.digits + "-._~:/%?=&", max_size=12).map(
            lambda tail: p + tail
        )
    ),
)
methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
    st.text(string.ascii_uppercase, min_size=1, max_size=8),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """Half of them graph calls (POST, the graph's paths, mostly JSON), half anything."""
    headers = {
        name: value
        for name, value in draw(st.dictionaries(tokens, header_values, max_size=6)).items()
        if name.lower() not in FRAMING
    }
    if draw(st.booleans()):
        method, path = "POST", draw(st.sampled_from(GRAPH_PATHS))
        body = draw(st.one_of(documents.map(orjson.dumps), bodies))
        if draw(st.booleans()):
            headers["inference-header-content-length"] = str(draw(st.integers(0, len(body))))
    else:
        method, path = draw(methods), draw(paths)
        headers.update(draw(special_headers))
        body = draw(bodies)
    head = f"{method} {path} HTTP/1.1\r\nHost: g\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return method, head.encode("latin-1") + body


@pytest.fixture(scope="module")
def front() -> Iterator[int]:
    """The router's port: a graph over two step services, in a thread's event loop."""
    thread = LoopThread()
    steps = StepService()
    address = thread.run(steps.start())
    services = {
        "a": service(address, "a", protocols=["v1", "v2"]),
        "b": service(address, "b", "v2"),
    }
    server = GraphServer(router_config(NODES, services), local_settings(max_body_bytes=4096))
    running = serving(server)
    thread.run(running.__aenter__())
    try:
        assert server.port is not None
        yield server.port
    finally:
        thread.run(running.__aexit__(None, None, None))
        thread.run(steps.close())
        thread.close()


def ask(port: int, method: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """One raw request on a new connection; the answer parsed (and so checked) by http.client."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
    return response.status, headers, body


def test_random_requests_get_well_formed_answers_and_the_router_survives(
    front: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    seen: set[int] = set()

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(request=requests())
    def exchange(request: tuple[str, bytes]) -> None:
        method, raw = request
        status, headers, body = ask(front, method, raw)
        seen.add(status)
        assert 100 <= status < 600
        assert status < 500 or status in STEP_FAILURES, (status, body)
        if status >= 400 and method != "HEAD" and headers.get("content-type") == "application/json":
            document: Any = orjson.loads(body)
            assert isinstance(document.get("error"), str), body

    exchange()
    status, _, body = ask(front, "GET", b"GET /v2/health/ready HTTP/1.1\r\nHost: g\r\n\r\n")
    assert (status, orjson.loads(body)) == (200, {"ready": True})
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    # The draw reached the graph, not only the refusals.
    assert {200, 400, 404, 405, 413} <= seen
