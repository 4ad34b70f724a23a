"""The router process over real sockets: its URLs, probes, limits, timeouts and drain.

The graph's steps are :class:`StepService` s, small aiohttp servers on loopback ports (the
platform's end-to-end tests run real model replicas); the router is :class:`GraphServer` in
this event loop, or ``python -m modelhost graph`` as a child process.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from step_services import StepService, local_settings, router_config, service, serving

from modelhost import InvalidInput
from modelhost.cli import build_parser
from modelhost.cli.graph_command import graph_settings
from modelhost.graph import (
    GraphServer,
    GraphServerSettings,
    RouterSettings,
    ServerTimeouts,
    server_timeouts,
)

SEQUENCE = {
    "root": {
        "routerType": "Sequence",
        "steps": [{"serviceName": "a"}, {"serviceName": "b", "data": "$response"}],
    }
}
ROWS = {"instances": [[1, 2]]}
READY_LINE = re.compile(r"serving HTTP on [\d.]+:(\d+)")


@pytest.fixture
async def steps() -> AsyncIterator[StepService]:
    service = StepService()
    await service.start()
    yield service
    await service.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield http


def two_services(steps: StepService) -> dict[str, dict[str, Any]]:
    """``a`` answers v1 and v2 (its plan says v1); ``b`` answers v2 only."""
    return {
        "a": service(steps.address, "a", protocols=["v1", "v2"]),
        "b": service(steps.address, "b", "v2"),
    }


async def test_a_sequence_answers_at_the_root_and_at_the_graphs_v1_and_v2_paths(
    steps: StepService, client: httpx.AsyncClient
) -> None:
    server = GraphServer(router_config(SEQUENCE, two_services(steps)), local_settings())
    async with serving(server) as url:
        seen: dict[str, list[str]] = {}
        for path in ("/", "/v1/models/g:predict", "/v2/models/g/infer"):
            before = len(steps.calls)
            response = await client.post(url + path, json=ROWS, headers={"x-request-id": path})
            assert response.status_code == 200, response.text
            assert response.headers["x-request-id"] == path
            answer = response.json()
            assert answer["model"] == "b"
            assert answer["got"]["model"] == "a"  # b got a's answer ($response)
            assert answer["got"]["got"] == ROWS
            calls = steps.calls[before:]
            assert {call.headers["x-request-id"] for call in calls} == {path}
            seen[path] = [call.path for call in calls]
    # At "/" each service's own protocol; at a v1 or v2 path the request's, where it speaks it.
    assert seen == {
        "/": ["/v1/models/a:predict", "/v2/models/b/infer"],
        "/v1/models/g:predict": ["/v1/models/a:predict", "/v2/models/b/infer"],
        "/v2/models/g/infer": ["/v2/models/a/infer", "/v2/models/b/infer"],
    }
    assert {call.host for call in steps.calls} == {steps.address}


async def test_a_service_not_in_the_table_is_a_503_naming_the_node_and_step(
    steps: StepService, client: httpx.AsyncClient
) -> None:
    nodes = {
        "root": {
            "routerType": "Sequence",
            "steps": [{"serviceName": "a"}, {"serviceName": "gone", "name": "second"}],
        }
    }
    server = GraphServer(router_config(nodes, {"a": service(steps.address, "a")}), local_settings())
    async with serving(server) as url:
        response = await client.post(url, json=ROWS)
    assert response.status_code == 503
    assert response.json() == {
        "error": "node root, step 2 (second): InferenceService gone is not deployed "
        "in namespace default"
    }
    assert [call.path for call in steps.calls] == ["/v1/models/a:predict"]


async def test_gateway_mode_sends_every_step_to_the_gateway_with_the_services_host(
    steps: StepService, client: httpx.AsyncClient
) -> None:
    # The addresses do not resolve: only the gateway is called.
    services = {
        name: service("nowhere.invalid:1", name, protocols=["v1", "v2"]) for name in ("a", "b")
    }
    server = GraphServer(router_config(SEQUENCE, services), local_settings(gateway=steps.address))
    async with serving(server) as url:
        response = await client.post(f"{url}/v2/models/g/infer", json=ROWS)
    assert response.status_code == 200, response.text
    assert [(call.host, call.path) for call in steps.calls] == [
        ("a.default.example.com", "/v2/models/a/infer"),
        ("b.default.example.com", "/v2/models/b/infer"),
    ]


async def test_probes_metadata_and_metrics(steps: StepService, client: httpx.AsyncClient) -> None:
    server = GraphServer(router_config(SEQUENCE, two_services(steps)), local_settings())
    async with serving(server) as url:
        assert (await client.post(url, json=ROWS)).status_code == 200
        live = await client.get(f"{url}/v2/health/live")
        ready = await client.get(f"{url}/v2/health/ready")
        healthz = await client.get(f"{url}/healthz")
        head = await client.head(f"{url}/v2/health/ready")
        metadata = await client.get(f"{url}/v2/models/g")
        model_ready = await client.get(f"{url}/v2/models/g/ready")
        metrics = await client.get(f"{url}/metrics")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert healthz.status_code == 200
    assert (head.status_code, head.content) == (200, b"")
    assert metadata.json()["name"] == "g"
    assert metadata.json()["platform"] == "modelhost-graph"
    assert (model_ready.status_code, model_ready.json()) == (200, {"name": "g", "ready": True})
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'modelhost_graph_node_requests_total{graph="g",node="root"} 1.0' in text
    assert 'modelhost_graph_step_requests_total{graph="g",name="b",node="root",step="2"}' in text
    # The load the operator's autoscalers query, under the model server's names.
    assert (
        'modelhost_requests_total{endpoint="predict",model="g",protocol="v1",status="200"} 1.0'
        in text
    )
    assert 'modelhost_requests_in_flight{protocol="v1"} 0.0' in text


async def test_other_paths_are_404_and_other_methods_405(
    steps: StepService, client: httpx.AsyncClient
) -> None:
    server = GraphServer(router_config(SEQUENCE, two_services(steps)), local_settings())
    async with serving(server) as url:
        missing = await client.get(f"{url}/v1/models")
        other_v1 = await client.post(f"{url}/v1/models/other:predict", json=ROWS)
        other_v2 = await client.post(f"{url}/v2/models/other/infer", json=ROWS)
        explain = await client.post(f"{url}/v1/models/g:explain", json=ROWS)
        get_root = await client.get(url)
        post_ready = await client.post(f"{url}/v2/health/ready")
        get_infer = await client.get(f"{url}/v2/models/g/infer")
    assert (missing.status_code, missing.json()) == (404, {"error": "No route for GET /v1/models."})
    assert other_v1.status_code == other_v2.status_code == 404
    assert other_v1.json() == {"error": "Model with name other does not exist."}
    assert explain.status_code == 404
    assert (get_root.status_code, get_root.headers["allow"]) == (405, "POST")
    assert (post_ready.status_code, post_ready.headers["allow"]) == (405, "GET")
    assert get_infer.status_code == 405
    assert get_root.json() == {"error": "Method GET not allowed on /."}
    assert steps.calls == []


async def test_huge_and_malformed_bodies_get_a_4xx_and_the_router_keeps_serving(
    steps: StepService, client: httpx.AsyncClient
) -> None:
    hard_first = {
        "root": {
            "routerType": "Sequence",
            "steps": [
                {"serviceName": "a", "dependency": "Hard"},
                {"serviceName": "b", "data": "$response"},
            ],
        }
    }
    server = GraphServer(
        router_config(hard_first, two_services(steps)), local_settings(max_body_bytes=1024)
    )
    async with serving(server) as url:
        port = server.port
        assert port is not None
        # Declared too large: refused from the headers, before a byte of the body is sent.
        declared = await asyncio.to_thread(
            exchange, port, b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 1000000000\r\n\r\n"
        )
        assert declared.startswith(b"HTTP/1.1 413 ")
        assert b"connection: close" in declared.lower()
        assert b"exceeds the limit of 1024 bytes" in declared
        over = await client.post(url, content=b"x" * 2048)
        assert over.status_code == 413
        # Chunked, no length said: refused once past the limit.
        chunked = await client.post(url, content=chunks(b"[" * 1000, b"1" * 1000))
        assert chunked.status_code == 413
        assert chunked.json()["error"] == "Request body exceeds the limit of 1024 bytes."
        # Not JSON: the first step (Hard) says so, and the graph says which step it was.
        malformed = await client.post(url, content=b'{"instances": [1,')
        assert malformed.status_code == 400
        assert malformed.json() == {"error": "node root, step 1 (a): 400 the body is not JSON"}
        broken_gzip = await client.post(
            url, content=b"not gzip", headers={"content-encoding": "gzip"}
        )
        assert broken_gzip.status_code == 400
        many_headers = await client.post(
            url, json=ROWS, headers={f"x-h{i}": "1" for i in range(200)}
        )
        assert many_headers.status_code == 431
        # Still serving: a gzip body goes through decompressed, and the probe says ready.
        zipped = await client.post(
            url, content=gzip.compress(orjson.dumps(ROWS)), headers={"content-encoding": "gzip"}
        )
        assert zipped.status_code == 200, zipped.text
        assert zipped.json()["got"]["got"] == ROWS
        assert (await client.get(f"{url}/v2/health/ready")).status_code == 200
    assert b'"instances": [1,' in steps.calls[0].body  # sent as it came, not re-encoded


async def test_a_v2_binary_body_passes_through_untouched(
    steps: StepService, client: httpx.AsyncClient
) -> None:
    graph = {"root": {"routerType": "Sequence", "steps": [{"serviceName": "b"}]}}
    server = GraphServer(router_config(graph, two_services(steps)), local_settings())
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    )
    body = header + bytes(range(8))
    async with serving(server) as url:
        response = await client.post(
            f"{url}/v2/models/g/infer",
            content=body,
            headers={
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(header)),
            },
        )
    assert response.status_code == 200
    assert response.content == body
    assert response.headers["inference-header-content-length"] == str(len(header))
    assert steps.calls[0].body == body


def test_router_timeouts_set_the_listeners_deadlines() -> None:
    plain = router_config(SEQUENCE, {}).graph
    assert server_timeouts(plain) == ServerTimeouts(header_s=10, body_s=60, write_s=60, idle_s=180)
    timed = router_config(
        SEQUENCE,
        {},
        routerTimeouts={"serverRead": 5, "serverWrite": 7, "serverIdle": 9, "serviceClient": 3},
    ).graph
    assert server_timeouts(timed) == ServerTimeouts(header_s=5, body_s=5, write_s=7, idle_s=9)


async def test_server_write_bounds_the_answer_with_a_504(
    steps: StepService, client: httpx.AsyncClient
) -> None:
    config = router_config(SEQUENCE, two_services(steps), routerTimeouts={"serverWrite": 1})
    server = GraphServer(config, local_settings())
    steps.hold()
    async with serving(server) as url:
        began = time.perf_counter()
        response = await client.post(url, json=ROWS)
        waited = time.perf_counter() - began
        steps.release()
        assert (await client.get(f"{url}/v2/health/ready")).status_code == 200
    assert response.status_code == 504
    assert response.json() == {
        "error": "graph g did not answer within 1s (routerTimeouts.serverWrite)"
    }
    assert 0.9 < waited < 5


async def test_server_read_bounds_a_stalled_body_with_a_408(steps: StepService) -> None:
    config = router_config(SEQUENCE, two_services(steps), routerTimeouts={"serverRead": 1})
    server = GraphServer(config, local_settings())
    async with serving(server):
        assert server.port is not None
        stalled = b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n\r\n" + b"{" * 10
        began = time.perf_counter()
        answer = await asyncio.to_thread(exchange, server.port, stalled)
        waited = time.perf_counter() - began
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.9 < waited < 5
    assert steps.calls == []


async def test_stop_drains_requests_in_flight_and_closes_the_step_client(
    steps: StepService, client: httpx.AsyncClient
) -> None:
    server = GraphServer(router_config(SEQUENCE, two_services(steps)), local_settings())
    steps.hold()
    task = asyncio.create_task(server.serve())
    while not server.front.ready:  # noqa: ASYNC110 - the server's readiness is a flag
        await asyncio.sleep(0.01)
    call = asyncio.create_task(client.post(f"http://127.0.0.1:{server.port}/", json=ROWS))
    await steps.arrived()
    server.stop()
    while server.front.ready:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert not task.done()  # waiting for the request in flight
    steps.release()
    response = await asyncio.wait_for(call, 30)
    await asyncio.wait_for(task, 30)
    assert response.status_code == 200
    assert response.json()["model"] == "b"
    # The router's aiohttp session (private: the one thing that says it was closed).
    assert server._own_caller is not None
    assert server._own_caller._session is None


# -- the command --------------------------------------------------------------------------


def graph_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelhost", "graph", *args]


async def test_the_command_serves_a_spec_file_and_drains_on_sigterm(
    steps: StepService, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    spec = tmp_path / "router.json"
    config = {
        "graph": {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "InferenceGraph",
            "metadata": {"name": "g", "namespace": "default"},
            "spec": {"nodes": SEQUENCE},
        },
        "services": two_services(steps),
    }
    spec.write_text(json.dumps(config))
    command = graph_command(
        "--spec", str(spec), "--http-port", "0", "--propagate-header", "^x-tenant"
    )
    env = dict(os.environ, MODELHOST_HOST="127.0.0.1", PYTHONUNBUFFERED="1")
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        lines = []
        port = 0
        while not port:
            line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
            assert line, "modelhost graph exited before serving:\n" + "".join(lines)
            lines.append(line)
            if match := READY_LINE.search(line):
                port = int(match.group(1))
        url = f"http://127.0.0.1:{port}"
        answer = await client.post(url, json=ROWS, headers={"x-tenant": "7", "x-other": "1"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["got"]["got"] == ROWS
        assert steps.calls[0].headers["x-tenant"] == "7"
        assert "x-other" not in steps.calls[0].headers
        steps.hold()
        call = asyncio.create_task(client.post(f"{url}/v1/models/g:predict", json=ROWS))
        await steps.arrived()
        process.send_signal(signal.SIGTERM)
        rest = asyncio.create_task(process.stderr.read())
        # Draining: the listener is closed, a new connection is refused.
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:
                break
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.01)
        steps.release()
        response = await asyncio.wait_for(call, 30)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        log = "".join(lines) + (await rest).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert response.status_code == 200
    assert response.json()["model"] == "b"
    assert "Draining" in log


def test_the_command_line_makes_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    monkeypatch.delenv("MODELHOST_HOST", raising=False)
    plain = graph_settings(parser.parse_args(["graph", "--spec", "{}", "--gateway", ""]))
    assert plain == GraphServerSettings()  # port 8080, 0.0.0.0, no gateway, 64 MiB
    monkeypatch.setenv("MODELHOST_HOST", "127.0.0.1")
    args = parser.parse_args(
        [
            *("graph", "--spec", "{}", "--http-port", "0", "--gateway", "127.0.0.1:8081"),
            *("--propagate-header", "^x-a", "--propagate-header", "trace"),
            *("--step-timeout", "2.5", "--max-body-bytes", "1000"),
        ]
    )
    assert graph_settings(args) == GraphServerSettings(
        host="127.0.0.1",
        http_port=0,
        gateway="127.0.0.1:8081",
        router=RouterSettings(propagate_headers=("^x-a", "trace"), default_step_timeout=2.5),
        max_body_bytes=1000,
    )
    explicit = parser.parse_args(["graph", "--spec", "{}", "--host", "::1"])
    assert graph_settings(explicit).host == "::1"  # --host wins over MODELHOST_HOST
    for bad in (["--gateway", "http://gw/"], ["--propagate-header", "x["]):
        with pytest.raises(InvalidInput, match=re.escape(bad[0])):
            graph_settings(parser.parse_args(["graph", "--spec", "{}", *bad]))


def test_the_command_refuses_a_bad_config_naming_the_field() -> None:
    document = {
        "graph": {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "InferenceGraph",
            "metadata": {"name": "g"},
            "spec": {"nodes": SEQUENCE},
        },
        "services": {"a": {"host": "a", "address": "a", "protocol": "v9", "model": "a"}},
    }
    run = subprocess.run(
        graph_command("--spec", json.dumps(document), "--http-port", "0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "modelhost graph: router config is invalid: services.a.protocol" in run.stderr


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    """A body of unknown length: httpx sends it chunked."""
    for part in parts:
        yield part


def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection (or 10 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return b"".join(_chunks(sock))


def _chunks(sock: socket.socket) -> Iterator[bytes]:
    while chunk := sock.recv(65536):
        yield chunk
