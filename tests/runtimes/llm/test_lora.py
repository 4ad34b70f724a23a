"""LoRA adapters over the tiny Llama: each request runs with its own adapter, in one batch."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhost import errors
from modelhost.model.generation import SamplingParams, TokenEvent
from modelhost.runtimes import build_model
from modelhost.runtimes.llm import LLMModel
from modelhost.runtimes.llm.ragged import RaggedBatch

GREEDY = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
PROMPTS = ["hello world", "the quick brown fox", "one two three", "a model server"]


@pytest.fixture(scope="module")
def model(tiny_llama: Path, lora_adapters: dict[str, Path]) -> Iterator[LLMModel]:
    """The tiny Llama with adapter ``sql`` from the start (``poet`` is loaded by tests)."""
    built = build_model(tiny_llama, "tiny", options={"lora": [f"sql={lora_adapters['sql']}"]})
    assert isinstance(built, LLMModel)
    assert built.load()
    yield built
    built.unload()


@pytest.fixture(scope="module")
def reference(tiny_llama: Path, lora_adapters: dict[str, Path]) -> Callable[..., list[int]]:
    """Greedy tokens of one prompt alone on a peft model of its own, the whole sequence
    through the model for every token."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = PeftModel.from_pretrained(base, str(lora_adapters["sql"])).eval()

    def generate(ids: list[int], max_tokens: int) -> list[int]:
        sequence = list(ids)
        with torch.inference_mode():
            for _ in range(max_tokens):
                logits = peft_model(input_ids=torch.tensor([sequence])).logits
                sequence.append(int(logits[0, -1].argmax()))
        return sequence[len(ids) :]

    return generate


async def run(
    model: LLMModel,
    prompt: str,
    adapter: str | None,
    request_id: str,
    params: SamplingParams = GREEDY,
) -> list[int]:
    stream = model.generate(model.encode(prompt), params, request_id=request_id, adapter=adapter)
    return [event.token_id async for event in stream]


async def test_an_adapter_generates_what_peft_generates(
    model: LLMModel, reference: Callable[..., list[int]]
) -> None:
    assert model.adapters == ["sql"]
    ids = model.encode(PROMPTS[0])
    base = await run(model, PROMPTS[0], None, "base")
    sql = await run(model, PROMPTS[0], "sql", "sql")
    assert sql == reference(ids, GREEDY.max_tokens)
    assert sql != base
    # The base model's own name is the base model.
    assert await run(model, PROMPTS[0], "tiny", "named") == base


async def test_two_adapters_and_the_base_share_one_batch(
    model: LLMModel, lora_adapters: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    await model.load_adapter("poet", str(lora_adapters["poet"]))
    try:
        jobs = [(prompt, adapter) for prompt in PROMPTS for adapter in (None, "sql", "poet")]
        alone = [await run(model, p, a, f"alone-{i}") for i, (p, a) in enumerate(jobs)]
        batches: list[list[str | None]] = []
        step = RaggedBatch.step

        def spy(self: RaggedBatch, *args: Any) -> Any:
            logits = step(self, *args)
            batches.append(self.adapters)
            return logits

        monkeypatch.setattr(RaggedBatch, "step", spy)
        together = await asyncio.gather(
            *(run(model, p, a, f"together-{i}") for i, (p, a) in enumerate(jobs))
        )
    finally:
        await model.unload_adapter("poet")
    assert together == alone
    # Each prompt gave three different outputs: a row that took another's adapter would show.
    for index in range(0, len(jobs), 3):
        assert len({tuple(tokens) for tokens in alone[index : index + 3]}) == 3
    assert any({None, "sql", "poet"} <= set(rows) for rows in batches)


async def test_load_and_unload_at_run_time(model: LLMModel, lora_adapters: dict[str, Path]) -> None:
    with pytest.raises(errors.ModelNotFound, match="poet"):
        await run(model, PROMPTS[1], "poet", "before")
    await model.load_adapter("poet", str(lora_adapters["poet"]))
    assert model.adapters == ["sql", "poet"]
    poet = await run(model, PROMPTS[1], "poet", "loaded")
    assert poet != await run(model, PROMPTS[1], "sql", "other")
    with pytest.raises(errors.InvalidInput, match="already loaded"):
        await model.load_adapter("poet", str(lora_adapters["sql"]))
    await model.unload_adapter("poet")
    assert model.adapters == ["sql"]
    with pytest.raises(errors.ModelNotFound, match="poet"):
        await run(model, PROMPTS[1], "poet", "after")
    with pytest.raises(errors.ModelNotFound, match="poet"):
        await model.unload_adapter("poet")
    # Loaded again, under another name, the same weights give the same tokens.
    await model.load_adapter("poet-2", str(lora_adapters["poet"]))
    try:
        assert await run(model, PROMPTS[1], "poet-2", "again") == poet
    finally:
        await model.unload_adapter("poet-2")


async def test_without_any_adapter_left_the_base_runs_alone(
    model: LLMModel, lora_adapters: dict[str, Path]
) -> None:
    base = await run(model, PROMPTS[2], None, "base")
    sql = await run(model, PROMPTS[2], "sql", "sql")
    await model.unload_adapter("sql")
    try:
        assert model.adapters == []
        assert await run(model, PROMPTS[2], None, "alone") == base
    finally:
        await model.load_adapter("sql", str(lora_adapters["sql"]))
    assert await run(model, PROMPTS[2], "sql", "reloaded") == sql


async def test_unloading_fails_its_requests_and_spares_the_others(
    model: LLMModel, lora_adapters: dict[str, Path]
) -> None:
    long = SamplingParams(max_tokens=150, temperature=0.0, ignore_eos=True)
    expected = await run(model, PROMPTS[3], "sql", "expected", long)
    await model.load_adapter("poet", str(lora_adapters["poet"]))
    received: list[TokenEvent] = []

    async def poet() -> None:
        stream = model.generate(model.encode(PROMPTS[0]), long, request_id="poet", adapter="poet")
        async for event in stream:
            received.append(event)

    doomed = asyncio.create_task(poet())
    spared = asyncio.create_task(run(model, PROMPTS[3], "sql", "spared", long))
    async with asyncio.timeout(10):
        while len(received) < 3:  # noqa: ASYNC110 - the worker thread sets no asyncio.Event
            await asyncio.sleep(0.002)
    await model.unload_adapter("poet")
    with pytest.raises(errors.ModelNotFound, match="poet"):
        await doomed
    assert 3 <= len(received) < long.max_tokens
    assert await spared == expected


async def test_adapters_that_cannot_be_served(model: LLMModel, tmp_path: Path) -> None:
    with pytest.raises(errors.ModelLoadError, match=r"adapter_config\.json is missing"):
        await model.load_adapter("empty", str(tmp_path))
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(errors.ModelLoadError, match="only LoRA adapters"):
        await model.load_adapter("prefix", str(prefix))
    with pytest.raises(errors.InvalidInput, match="base model's name"):
        await model.load_adapter("tiny", str(prefix))
    assert model.adapters == ["sql"]


def test_an_adapter_given_at_start_must_load(tiny_llama: Path, tmp_path: Path) -> None:
    broken = build_model(tiny_llama, "tiny", options={"lora": f"gone={tmp_path / 'gone'}"})
    with pytest.raises(errors.ModelLoadError, match="gone"):
        broken.load()
    with pytest.raises(errors.ModelLoadError, match="base model's name"):
        build_model(tiny_llama, "tiny", options={"lora": f"tiny={tmp_path}"})
