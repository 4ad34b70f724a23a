"""Errors in OpenAI's shape with the right status: 400 naming the parameter, 404, 429, 503,
504, and never a 500 for what a client sent."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import pytest
from openai_fakes import FakeLLM
from openai_serving import Shared, StartLLMServer

USER = [{"role": "user", "content": "hi"}]


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


COMPLETION_CASES = [
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"n": 0}, "n"),
    ({"n": 129}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "many"}, "max_tokens"),
    ({"logprobs": 21}, "logprobs"),
    ({"logprobs": -1}, "logprobs"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"seed": "x"}, "seed"),
    ({"seed": True}, "seed"),
    ({"stop": [""]}, "stop"),
    ({"stop": [1]}, "stop[0]"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"best_of": 2}, "best_of"),
    ({"logit_bias": {"5": 1}}, "logit_bias"),
    ({"suffix": "end"}, "suffix"),
    ({"echo": True, "logprobs": 1}, "echo"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"user": 5}, "user"),
    ({"prompt": ["a"] * 65, "n": 2}, "n"),
]


@pytest.mark.parametrize(("fields", "param"), COMPLETION_CASES)
def test_an_invalid_completion_parameter_is_a_400_naming_it(
    shared: Shared, fields: dict[str, Any], param: str
) -> None:
    body = {"model": "fake-llm", "prompt": "x", **fields}
    response = httpx.post(f"{shared.server.url}/v1/completions", json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


CHAT_CASES = [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"content": "x"}]}, "messages[0].role"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content",
    ),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": "hi"}, "messages"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"max_tokens": -5}, "max_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"n": 0}, "n"),
    ({"logprobs": "yes"}, "logprobs"),
]


@pytest.mark.parametrize(("fields", "param"), CHAT_CASES)
def test_an_invalid_chat_parameter_is_a_400_naming_it(
    shared: Shared, fields: dict[str, Any], param: str
) -> None:
    body = {"model": "fake-llm", "messages": USER, **fields}
    response = httpx.post(f"{shared.server.url}/openai/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert error_of(response)["param"] == param


def test_the_openai_client_raises_bad_request_with_the_param(shared: Shared) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        shared.server.client().completions.create(model="fake-llm", prompt="x", top_p=2)
    assert caught.value.param == "top_p"
    assert caught.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[]", b"42", b'{"prompt": "x"}', b'{"model": 5, "prompt": "x"}'],
)
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/v1/embeddings"])
def test_a_body_that_is_not_a_request_is_a_400(shared: Shared, body: bytes, path: str) -> None:
    response = httpx.post(f"{shared.server.url}{path}", content=body)
    assert response.status_code == 400
    error = error_of(response)
    if body.startswith(b'{"'):
        assert error["param"] == "model"


def test_odd_bodies_never_get_a_500(shared: Shared) -> None:
    odd: list[Any] = [
        {"model": "fake-llm", "prompt": "x", "max_tokens": 10**30},
        {"model": "fake-llm", "prompt": "x", "seed": 2**70},
        {"model": "fake-llm", "prompt": [10**12]},
        {"model": "fake-llm", "prompt": "x", "temperature": 1e308},
        {"model": "fake-llm", "prompt": "x", "n": 10**12},
        {"model": "fake-llm", "prompt": "x", "stop": "s" * 10_000},
        {"model": "", "prompt": "x"},
        {"model": "fake-llm", "prompt": "x", "stream": "yes"},
        {"model": "fake-llm", "prompt": "x", "stream_options": {"include_usage": "no"}},
        {"model": "fake-llm", "messages": [{"role": "user", "content": None}]},
        {"model": "fake-llm", "messages": [{"role": "assistant", "tool_calls": [{}]}]},
    ]
    for body in odd:
        path = "chat/completions" if "messages" in body else "completions"
        response = httpx.post(f"{shared.server.url}/v1/{path}", json=body)
        assert response.status_code < 500, (body, response.text)


@pytest.mark.parametrize("path", ["/v1/completions", "/openai/v1/chat/completions"])
def test_an_unknown_model_is_a_404_model_not_found(shared: Shared, path: str) -> None:
    body = {"model": "gpt-9", "prompt": "x", "messages": USER}
    response = httpx.post(f"{shared.server.url}{path}", json=body)
    assert response.status_code == 404
    error = error_of(response)
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "model_not_found",
        "model",
    )
    assert "gpt-9" in error["message"]
    with pytest.raises(openai.NotFoundError):
        shared.server.client().completions.create(model="gpt-9", prompt="x")


def test_a_model_that_does_not_generate_is_a_400(shared: Shared) -> None:
    for path, body in [
        ("completions", {"model": "classifier", "prompt": "x"}),
        ("chat/completions", {"model": "fake-embedder", "messages": USER}),
        ("embeddings", {"model": "fake-llm", "input": "x"}),
    ]:
        response = httpx.post(f"{shared.server.url}/v1/{path}", json=body)
        assert response.status_code == 400
        assert error_of(response)["code"] == "model_not_supported"


def test_a_request_past_the_context_length_is_a_400(shared: Shared) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        shared.server.client().completions.create(model="fake-llm", prompt="x", max_tokens=300)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as chat:
        shared.server.client().chat.completions.create(
            model="fake-llm", messages=[{"role": "user", "content": "x" * 300}]
        )
    assert chat.value.code == "context_length_exceeded"


def test_a_model_not_ready_is_a_503(llm_server: StartLLMServer) -> None:
    llm = FakeLLM()
    server = llm_server([llm])
    llm.ready = False
    with pytest.raises(openai.InternalServerError) as caught:
        server.client().chat.completions.create(model="fake-llm", messages=USER)
    assert caught.value.status_code == 503
    assert caught.value.code == "model_not_ready"
    stream = httpx.post(
        f"{server.url}/v1/completions", json={"model": "fake-llm", "prompt": "x", "stream": True}
    )
    assert stream.status_code == 503
    assert error_of(stream)["type"] == "server_error"


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.mark.parametrize("stream", [False, True])
def test_a_full_engine_is_a_429_even_for_a_stream(llm_server: StartLLMServer, stream: bool) -> None:
    llm = FakeLLM(capacity=1, block_after=1)
    server = llm_server([llm])
    client = server.client()
    holder = threading.Thread(
        target=lambda: client.completions.create(model="fake-llm", prompt="x", max_tokens=3)
    )
    holder.start()
    wait_until(lambda: llm.gate is not None)
    with pytest.raises(openai.RateLimitError) as caught:
        client.completions.create(model="fake-llm", prompt="y", stream=stream)
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "rate_limit_error"
    llm.release()
    holder.join(5)
    assert not holder.is_alive()
    assert llm.active == set()


def test_a_generation_past_the_request_timeout_is_stopped(llm_server: StartLLMServer) -> None:
    llm = FakeLLM(block_after=1)
    server = llm_server([llm], timeout_s=0.3)
    response = httpx.post(
        f"{server.url}/v1/completions", json={"model": "fake-llm", "prompt": "x"}, timeout=10
    )
    assert response.status_code == 504
    assert error_of(response)["code"] == "timeout"
    assert len(llm.closed) == 1
    # A stream has sent its status already: the timeout comes as an error event.
    client = server.client()
    stream = client.completions.create(model="fake-llm", prompt="x", max_tokens=5, stream=True)
    with pytest.raises(openai.APIError, match=r"longer than 0\.3 s"):
        for _ in stream:
            pass
    wait_until(lambda: len(llm.closed) == 2)
    assert llm.active == set()
