"""The vLLM backend against the transformers engine, greedy: runs only where vLLM and a GPU are.

This machine has neither, so here every test is skipped; on a GPU machine with
``pip install 'modelhost[vllm]'`` they check that both backends give the same tokens
through the same GenerativeModel interface.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():  # pragma: no cover - depends on the machine
    pytest.skip("the vLLM backend needs a GPU", allow_module_level=True)

from modelhost.model.generation import SamplingParams  # noqa: E402
from modelhost.runtimes.llm import LLMModel  # noqa: E402
from modelhost.runtimes.llm.runtime import select_backend  # noqa: E402
from modelhost.runtimes.llm.vllm_backend import VLLMModel  # noqa: E402

PROMPTS = ["the quick brown fox", "one two three four five six", "hello world"]


def test_auto_picks_vllm_here() -> None:
    assert select_backend("auto") == "vllm"


def test_vllm_and_transformers_agree_greedy(tiny_llama: Path) -> None:
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)

    async def tokens(model: object) -> list[list[int]]:
        async def one(prompt: str, index: int) -> list[int]:
            ids = model.encode(prompt)  # type: ignore[attr-defined]
            stream = model.generate(ids, params, request_id=f"r{index}")  # type: ignore[attr-defined]
            return [event.token_id async for event in stream]

        return list(await asyncio.gather(*(one(p, i) for i, p in enumerate(PROMPTS))))

    reference = LLMModel("tiny", tiny_llama, device="cuda", dtype="float32")
    candidate = VLLMModel("tiny", tiny_llama, dtype="float32")
    assert reference.load()
    assert candidate.load()
    try:
        assert asyncio.run(tokens(candidate)) == asyncio.run(tokens(reference))
    finally:
        candidate.unload()
        reference.unload()
