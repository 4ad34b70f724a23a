"""Server-Sent Events on the wire, disconnects freeing the model's slot, and concurrency."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest
from openai_fakes import FakeLLM
from openai_serving import Shared, StartLLMServer

USER = [{"role": "user", "content": "hi"}]


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_the_wire_format_is_data_lines_ending_with_done(shared: Shared) -> None:
    body = {"model": "fake-llm", "prompt": "wire", "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{shared.server.url}/v1/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in response.headers
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]
    assert all("usage" not in c for c in chunks)


def test_a_client_gone_mid_stream_frees_the_slot_at_once(llm_server: StartLLMServer) -> None:
    # The model stops after two tokens and would wait forever: only the disconnect ends it.
    llm = FakeLLM(block_after=2, capacity=1)
    server = llm_server([llm])
    stream = server.client().chat.completions.create(
        model="fake-llm",
        messages=USER,
        max_tokens=50,
        stream=True,
    )
    received = [next(stream), next(stream), next(stream)]  # the role, then two tokens
    assert received[2].choices[0].delta.content
    assert len(llm.active) == 1
    stream.close()
    wait_until(lambda: not llm.active)
    assert len(llm.closed) == 1
    assert llm.finished == []
    # The slot is free: with capacity 1, a new request runs.
    llm.block_after = None
    result = server.client().completions.create(model="fake-llm", prompt="x", max_tokens=2)
    assert result.choices[0].finish_reason == "length"


def test_a_client_gone_before_the_first_token_frees_the_slot(llm_server: StartLLMServer) -> None:
    llm = FakeLLM(block_after=0)
    server = llm_server([llm])
    body = json.dumps({"model": "fake-llm", "prompt": "x", "stream": True}).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.running.server.http_port)) as sock:
        sock.sendall(head + body)
        wait_until(lambda: llm.active)
    wait_until(lambda: not llm.active)
    assert len(llm.closed) == 1


def test_a_client_gone_during_a_non_streamed_request_frees_the_slot(
    llm_server: StartLLMServer,
) -> None:
    llm = FakeLLM(block_after=1)
    server = llm_server([llm])
    with httpx.Client(timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.post(f"{server.url}/v1/completions", json={"model": "fake-llm", "prompt": "x"})
    wait_until(lambda: not llm.active)
    assert len(llm.closed) == 1


def test_generate_stream_disconnect_frees_the_slot(llm_server: StartLLMServer) -> None:
    llm = FakeLLM(block_after=1)
    server = llm_server([llm])
    url = f"{server.url}/v2/models/fake-llm/generate_stream"
    with httpx.stream("POST", url, json={"text_input": "x"}) as response:
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    wait_until(lambda: not llm.active)
    assert len(llm.closed) == 1


async def test_concurrent_streams_each_get_their_own_tokens(llm_server: StartLLMServer) -> None:
    llm = FakeLLM(delay=0.002)
    server = llm_server([llm])
    client = server.async_client()
    texts = [f"stream {i} says {'x' * i}!" for i in range(16)]

    async def one(text: str) -> str:
        stream = await client.chat.completions.create(
            model="fake-llm",
            messages=[{"role": "user", "content": f"repeat: {text}"}],
            stream=True,
            max_tokens=40,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    got = await asyncio.gather(*(one(t) for t in texts))
    await client.close()
    assert got == texts
    # They ran at once, not one after another.
    assert llm.peak > 8
    assert not llm.active
