"""End to end: the openai client against a server running the real LLM engine on a tiny
random Llama (built offline by the LLM runtime's test fixtures), with a LoRA adapter."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from openai_serving import LLMServer
from serving import start_server, stop_server

pytest.importorskip("transformers")
pytest.importorskip("peft")

from modelhost.runtimes.llm import LLMModel

USER = [{"role": "user", "content": "hello there"}]


def llm_fixtures() -> ModuleType:
    # The builders live with the runtime's tests; loaded by path, under a name of their own.
    path = Path(__file__).parents[2] / "runtimes" / "llm" / "fixtures.py"
    spec = importlib.util.spec_from_file_location("llm_test_fixtures", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LLMServer, LLMModel]]:
    fixtures = llm_fixtures()
    folder = fixtures.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    lora = fixtures.build_lora_adapter(tmp_path_factory.mktemp("sql"), folder, seed=1)
    model = LLMModel("tiny", folder, max_num_seqs=4, max_model_len=128, loras={"sql": str(lora)})
    running = start_server([model], enable_grpc=False)
    try:
        yield LLMServer(running, None), model
    finally:
        stop_server(running)


def test_completions_and_chat_on_the_engine(engine: tuple[LLMServer, LLMModel]) -> None:
    server, model = engine
    client = server.client()
    result = client.completions.create(
        model="tiny", prompt="the quick", max_tokens=6, temperature=0
    )
    assert result.usage is not None
    assert result.usage.prompt_tokens == len(model.encode("the quick"))
    assert 1 <= result.usage.completion_tokens <= 6
    again = client.completions.create(model="tiny", prompt="the quick", max_tokens=6, temperature=0)
    assert again.choices[0].text == result.choices[0].text
    chat = client.chat.completions.create(
        model="tiny",
        messages=USER,
        max_tokens=8,
        temperature=0,
    )
    templated = model.apply_chat_template(USER)
    assert chat.usage is not None
    # The template holds the BOS already: encoded without special tokens, none is doubled.
    assert chat.usage.prompt_tokens == len(model.encode(templated, add_special_tokens=False))
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=USER,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == chat.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens


def test_logprobs_n_and_the_adapter_on_the_engine(engine: tuple[LLMServer, LLMModel]) -> None:
    server, _ = engine
    client = server.client()
    result = client.completions.create(
        model="tiny",
        prompt="hello",
        max_tokens=4,
        logprobs=2,
        n=2,
        seed=3,
        extra_body={"ignore_eos": True},
    )
    assert [c.index for c in result.choices] == [0, 1]
    for choice in result.choices:
        assert choice.logprobs is not None
        assert len(choice.logprobs.tokens or []) == 4
        # Keyed by text: byte pieces that decode alike share one entry.
        tops = choice.logprobs.top_logprobs or []
        assert len(tops) == 4
        assert all(1 <= len(top) <= 2 for top in tops)
    ids = {m.id: m for m in client.models.list().data}
    assert ids["sql"].parent == "tiny"
    base = client.completions.create(
        model="tiny", prompt="hello", max_tokens=6, temperature=0, extra_body={"ignore_eos": True}
    )
    adapted = client.completions.create(
        model="sql", prompt="hello", max_tokens=6, temperature=0, extra_body={"ignore_eos": True}
    )
    assert adapted.model == "sql"
    assert adapted.choices[0].text != base.choices[0].text


def test_a_closed_stream_frees_the_engine_slot(engine: tuple[LLMServer, LLMModel]) -> None:
    server, model = engine
    stream = server.client().completions.create(
        model="tiny", prompt="one two", max_tokens=100, stream=True, extra_body={"ignore_eos": True}
    )
    next(stream)
    assert model.stats["running"] + model.stats["waiting"] == 1
    stream.close()
    deadline = time.monotonic() + 5
    while model.stats["running"] + model.stats["waiting"]:
        assert time.monotonic() < deadline, model.stats
        time.sleep(0.01)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'vllm:kv_cache_usage_perc{model_name="tiny"}' in metrics
    assert 'vllm:time_to_first_token_seconds_count{model_name="tiny"}' in metrics


def test_generate_on_the_engine(engine: tuple[LLMServer, LLMModel]) -> None:
    server, _ = engine
    response = httpx.post(
        f"{server.url}/v2/models/tiny/generate",
        json={"text_input": "hello", "parameters": {"max_tokens": 4, "temperature": 0}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "tiny"
    assert body["finish_reason"] in ("stop", "length")
