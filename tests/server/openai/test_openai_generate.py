"""The Open Inference Protocol's generate extension: Triton's shape, KServe's errors."""

from __future__ import annotations

import json

import httpx
import pytest
from openai_fakes import greedy_text, ids_of
from openai_serving import Shared


def test_generate_returns_the_text_in_tritons_shape(shared: Shared) -> None:
    response = httpx.post(
        f"{shared.server.url}/v2/models/fake-llm/generate",
        json={"text_input": "gen", "parameters": {"max_tokens": 3, "temperature": 0}, "id": "7"},
    )
    assert response.status_code == 200
    assert response.json() == {
        "model_name": "fake-llm",
        "id": "7",
        "text_output": greedy_text(ids_of("gen"), 3),
        "finish_reason": "length",
    }


def test_sampling_fields_may_sit_at_the_top_level(shared: Shared) -> None:
    response = httpx.post(
        f"{shared.server.url}/v2/models/fake-llm/generate",
        json={
            "text_input": "gen",
            "max_tokens": 2,
            "temperature": 0,
            "stop": "never",
            "parameters": {"top_k": 3, "seed": 4, "stream": False, "backend_option": 1},
        },
    )
    assert response.status_code == 200, response.text
    params = shared.llm.calls[-1]["params"]
    assert (params.max_tokens, params.temperature, params.top_k, params.seed) == (2, 0.0, 3, 4)
    assert params.stop == ("never",)


def test_the_input_is_repeated_only_when_asked(shared: Shared) -> None:
    body = {"text_input": "gen", "parameters": {"max_tokens": 2, "temperature": 0}}
    body["parameters"]["exclude_input_in_output"] = False
    response = httpx.post(f"{shared.server.url}/v2/models/fake-llm/generate", json=body)
    assert response.json()["text_output"] == "gen" + greedy_text(ids_of("gen"), 2)


def test_generate_stream_sends_one_event_per_chunk(shared: Shared) -> None:
    url = f"{shared.server.url}/v2/models/sql-lora/generate_stream"
    body = {"text_input": "gen", "parameters": {"max_tokens": 3, "temperature": 0}}
    with httpx.stream("POST", url, json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events]
    assert all(c["model_name"] == "sql-lora" for c in chunks)
    text = "".join(c["text_output"] for c in chunks)
    assert text == greedy_text(ids_of("gen"), 3, adapter="sql-lora")
    assert [c["finish_reason"] for c in chunks] == [None, None, "length"]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("nope/generate", {"text_input": "x"}, 404),
        ("fake-llm/generate", {"parameters": {}}, 400),
        ("fake-llm/generate", {"text_input": "x", "parameters": {"temperature": "hot"}}, 400),
        ("fake-llm/generate", {"text_input": "x", "parameters": {"max_tokens": 0}}, 400),
        ("fake-llm/generate", {"text_input": "x", "parameters": {"stop": [3]}}, 400),
        ("fake-llm/generate", {"text_input": "x", "max_tokens": 999}, 400),
        ("fake-llm/generate_stream", {"text_input": 5}, 400),
        ("classifier/generate", {"text_input": "x"}, 400),
        # Issue 14, item 10: an unversioned model has no version 9 (it was a 200).
        ("fake-llm/versions/9/generate", {"text_input": "x"}, 404),
    ],
)
def test_generate_errors_use_kserves_shape(
    shared: Shared, path: str, body: dict[str, object], status: int
) -> None:
    response = httpx.post(f"{shared.server.url}/v2/models/{path}", json=body)
    assert response.status_code == status, response.text
    if status != 200:
        error = response.json()
        assert list(error) == ["error"]
        assert isinstance(error["error"], str)


def test_malformed_json_is_a_400(shared: Shared) -> None:
    response = httpx.post(f"{shared.server.url}/v2/models/fake-llm/generate", content=b"{")
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)
