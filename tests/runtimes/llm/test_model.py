"""``LLMModel``: the engine as the server sees it, and ``modelhost serve`` on a causal LM."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving import ServeProcess, serve_command

from modelhost import errors
from modelhost.model.generation import GenerativeModel, SamplingParams, TokenEvent
from modelhost.runtimes import build_model
from modelhost.runtimes.llm import LLMModel

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def model(tiny_llama: Path) -> Iterator[LLMModel]:
    built = build_model(tiny_llama, "tiny", options={"max_num_seqs": "4", "max_model_len": "128"})
    assert isinstance(built, LLMModel)
    assert built.load()
    yield built
    built.unload()


async def events_of(
    model: GenerativeModel, ids: list[int], request_id: str, params: SamplingParams = GREEDY
) -> list[TokenEvent]:
    return [event async for event in model.generate(ids, params, request_id=request_id)]


async def test_generates_a_stream_of_token_events(model: LLMModel) -> None:
    ids = model.encode("hello world")
    assert ids[0] == model.encode("", add_special_tokens=True)[0]  # the BOS token
    events = await events_of(model, ids, "one")
    assert len(events) == GREEDY.max_tokens
    assert "".join(e.text for e in events) == model.decode([e.token_id for e in events])
    assert [e.finish_reason for e in events] == [None] * (len(events) - 1) + ["length"]
    assert await events_of(model, ids, "two") == events
    assert model.max_model_len == 128
    stats = model.stats
    assert stats["generation_tokens_total"] >= 2 * GREEDY.max_tokens
    assert stats["prompt_tokens_total"] >= 2 * len(ids)


async def test_options_reach_the_engine(model: LLMModel) -> None:
    ids = model.encode("one two")
    too_long = SamplingParams(max_tokens=128, temperature=0.0)
    with pytest.raises(errors.InvalidInput, match="maximum context length is 128"):
        await events_of(model, ids, "long", too_long)
    # max_num_seqs 4: a fifth request waits for a free row.
    params = SamplingParams(max_tokens=80, temperature=0.0, ignore_eos=True)
    tasks = [asyncio.create_task(events_of(model, ids, f"busy-{i}", params)) for i in range(5)]
    seen: set[tuple[int, int]] = set()
    while not all(task.done() for task in tasks):
        seen.add((model.stats["running"], model.stats["waiting"]))
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    assert max(running for running, _ in seen) == 4
    assert any(waiting >= 1 for _, waiting in seen)


async def test_leaving_a_stream_frees_its_row(model: LLMModel) -> None:
    params = SamplingParams(max_tokens=100, temperature=0.0, ignore_eos=True)
    stream = model.generate(model.encode("a"), params, request_id="left")
    async for event in stream:
        assert event.finish_reason is None
        break
    await stream.aclose()  # type: ignore[attr-defined]
    async with asyncio.timeout(10):
        while model.stats["running"]:  # noqa: ASYNC110 - counters live on the worker thread
            await asyncio.sleep(0.002)


async def test_chat_template_and_text(model: LLMModel) -> None:
    prompt = model.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt == "<s><user>hi\n<assistant>"
    with pytest.raises(errors.InvalidInput, match="messages"):
        model.apply_chat_template([])
    assert model.decode(model.encode("hello world")) == "hello world"


def test_predict_points_to_the_generation_endpoints(model: LLMModel) -> None:
    with pytest.raises(errors.Unsupported, match="completions"):
        model.predict({"instances": ["hello"]})


async def test_unloaded_it_refuses_and_loads_again(tiny_llama: Path) -> None:
    model = build_model(tiny_llama, "again")
    assert isinstance(model, LLMModel)
    assert model.adapters == []
    assert model.stats["running"] == 0
    with pytest.raises(errors.ModelNotReady):
        model.encode("hello")
    with pytest.raises(errors.ModelNotReady):
        await events_of(model, [1, 2], "early")
    model.load()
    ids = model.encode("hello")
    first = await events_of(model, ids, "first")
    model.unload()
    assert not model.ready
    with pytest.raises(errors.ModelNotReady):
        await events_of(model, ids, "late")
    model.load()
    try:
        assert await events_of(model, ids, "reloaded") == first
    finally:
        model.stop()


async def test_a_stopped_engine_fails_its_requests(tiny_llama: Path) -> None:
    model = build_model(tiny_llama, "stopping")
    assert isinstance(model, LLMModel)
    model.load()
    params = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
    received: list[TokenEvent] = []

    async def consume() -> None:
        async for event in model.generate(model.encode("a"), params, request_id="cut"):
            received.append(event)

    task = asyncio.create_task(consume())
    async with asyncio.timeout(10):
        while not received:  # noqa: ASYNC110 - the worker thread sets no asyncio.Event
            await asyncio.sleep(0.002)
    model.stop()
    with pytest.raises(errors.ServerNotReady):
        await task
    assert len(received) < params.max_tokens


def test_modelhost_serve_takes_a_causal_lm_folder(
    tiny_llama: Path, lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    command = serve_command(
        str(tiny_llama),
        "--name",
        "tiny",
        "--max_num_seqs",
        "2",
        "--lora",
        f"sql={lora_adapters['sql']}",
    )
    served = ServeProcess(command, cwd=tmp_path)
    try:
        assert httpx.get(f"{served.url}/v2/models/tiny/ready").status_code == 200
        assert httpx.get(f"{served.url}/v2/models/tiny").json()["platform"] == "huggingface"
        reply = httpx.post(f"{served.url}/v1/models/tiny:predict", json={"instances": ["hi"]})
        assert reply.status_code == 501
        assert "completions" in reply.text
    finally:
        assert served.stop() == 0
