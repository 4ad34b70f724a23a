"""Deterministic generative and embedding models for the OpenAI API tests.

``FakeLLM`` tokenizes text one character per token and generates words from a fixed
vocabulary (or, for a prompt containing ``repeat:``, the text after it, one character per
token), so every expected answer can be computed in the test. It records what the API
layer asked of it: encode calls, generate calls (params, adapter), and which generators
were closed before they finished.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from modelhost import Model, errors
from modelhost.model.generation import (
    EmbeddingModel,
    EngineOverloaded,
    GenerativeModel,
    SamplingParams,
    TokenEvent,
)

VOCAB = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
BOS, EOS = 1, 2
CHAR_BASE = 10
WORD_BASE = 100_000
# What a prompt with "reveal" in it gets back, one character per token.
SECRET = "Write to jane.roe@example.org, call (555) 010-4477, card 4111 1111 1111 1111."


def word_text(index: int, adapter: str | None = None) -> str:
    word = VOCAB[index % len(VOCAB)]
    return " " + (word.upper() if adapter else word)


def greedy_text(prompt_ids: list[int], max_tokens: int, adapter: str | None = None) -> str:
    """What ``FakeLLM`` generates at temperature 0 for a prompt that is not a repeat."""
    return "".join(word_text(sum(prompt_ids) + i, adapter) for i in range(max_tokens))


def ids_of(text: str, *, bos: bool = True) -> list[int]:
    return ([BOS] if bos else []) + [ord(c) + CHAR_BASE for c in text]


class FakeLLM(GenerativeModel):
    def __init__(
        self,
        name: str = "fake-llm",
        *,
        delay: float = 0.0,
        block_after: int | None = None,
        capacity: int = 64,
        max_model_len: int = 256,
        adapters: Sequence[str] = (),
    ) -> None:
        super().__init__(name)
        self.ready = True
        self.delay = delay
        self.block_after = block_after
        self.capacity = capacity
        self._max_model_len = max_model_len
        self._adapters: dict[str, str] = {a: f"/adapters/{a}" for a in adapters}
        self.active: set[str] = set()
        self.peak = 0
        self.closed: list[str] = []
        self.finished: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.encode_calls: list[tuple[str, bool]] = []
        self.templates: list[list[dict[str, Any]]] = []
        self.gate: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def release(self) -> None:
        """Let blocked generations go on (from the test's thread)."""
        self.block_after = None
        if self.loop is not None and self.gate is not None:
            self.loop.call_soon_threadsafe(self.gate.set)

    # -- tokenizer --------------------------------------------------------------------------

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        self.encode_calls.append((text, add_special_tokens))
        return ([BOS] if add_special_tokens else []) + [ord(c) + CHAR_BASE for c in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        out = []
        for i in token_ids:
            if i >= WORD_BASE:
                out.append(word_text(i - WORD_BASE))
            elif i >= CHAR_BASE:
                out.append(chr(i - CHAR_BASE))
        return "".join(out)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        self.templates.append(messages)
        turns = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)
        return turns + "<|assistant|>"

    # -- generation -------------------------------------------------------------------------

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def adapters(self) -> list[str]:
        return list(self._adapters)

    async def load_adapter(self, name: str, path: str) -> None:
        if path == "/missing":
            raise errors.InvalidInput(f"No adapter at {path}.")
        self._adapters[name] = path

    async def unload_adapter(self, name: str) -> None:
        del self._adapters[name]

    @property
    def stats(self) -> Mapping[str, Any]:
        return {
            "running": len(self.active),
            "waiting": 0,
            "kv_cache_usage": len(self.active) / self.capacity,
        }

    def plan(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None) -> list[Any]:
        """The tokens this model generates for a prompt: (id, text) pairs, then "eos" or not."""
        prompt = self.decode(prompt_ids)
        if "repeat:" in prompt or "reveal" in prompt:
            text = SECRET if "reveal" in prompt else prompt.rsplit("repeat:", 1)[1]
            text = text.split("\n", 1)[0].lstrip()
            return [(ord(c) + CHAR_BASE, c) for c in text] + ["eos"]
        rng = random.Random(params.seed if params.seed is not None else sum(prompt_ids))
        tokens: list[Any] = []
        for i in range(params.max_tokens):
            k = (sum(prompt_ids) + i) if params.temperature == 0 else rng.randrange(len(VOCAB))
            tokens.append((WORD_BASE + k % len(VOCAB), word_text(k, adapter)))
            if "short" in prompt and i == 2:
                tokens.append("eos")
                break
        return tokens

    async def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        request_id: str,
        adapter: str | None = None,
    ) -> AsyncIterator[TokenEvent]:
        if len(self.active) >= self.capacity:
            raise EngineOverloaded(f"{self.capacity} requests are running already.")
        if len(prompt_ids) + params.max_tokens > self._max_model_len:
            raise errors.InvalidInput("The prompt does not fit.")
        self.calls.append({"prompt_ids": prompt_ids, "params": params, "adapter": adapter})
        self.active.add(request_id)
        self.peak = max(self.peak, len(self.active))
        done = False
        try:
            text = ""
            emitted = 0
            hold = max((len(s) for s in params.stop), default=1) - 1
            for count, token in enumerate(self.plan(prompt_ids, params, adapter)):
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.block_after is not None and count >= self.block_after:
                    self.gate = self.gate or asyncio.Event()
                    self.loop = asyncio.get_running_loop()
                    await self.gate.wait()
                if token == "eos":
                    done = True
                    yield TokenEvent(EOS, text[emitted:], -0.01, None, "stop")
                    return
                token_id, piece = token
                text += piece
                logprob, top = self._logprobs(token_id, params)
                cut = min((text.find(s) for s in params.stop if s in text), default=-1)
                if cut >= 0:
                    done = True
                    yield TokenEvent(token_id, text[emitted:cut], logprob, top, "stop")
                    return
                last = count == params.max_tokens - 1
                release = len(text) if last else max(emitted, len(text) - hold)
                delta, emitted = text[emitted:release], release
                if last:
                    done = True
                    yield TokenEvent(token_id, delta, logprob, top, "length")
                    return
                yield TokenEvent(token_id, delta, logprob, top)
            done = True
        finally:
            self.active.discard(request_id)
            (self.finished if done else self.closed).append(request_id)

    def _logprobs(
        self, token_id: int, params: SamplingParams
    ) -> tuple[float | None, list[tuple[str, float]] | None]:
        if params.logprobs is None:
            return None, None
        top = [(word_text(token_id + j), -0.1 * (j + 1)) for j in range(params.logprobs)]
        return -0.1, top


class FakeEmbedder(EmbeddingModel):
    def __init__(self, name: str = "fake-embedder") -> None:
        super().__init__(name)
        self.ready = True
        self.inputs: list[list[str]] = []

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        self.inputs.append(texts)
        vectors = [[float(len(t)), float(sum(map(ord, t)) % 97), 0.5, -1.0] for t in texts]
        return vectors, sum(len(t.split()) for t in texts)


class PlainModel(Model):
    """A model that neither generates nor embeds (a classifier, say)."""

    def __init__(self, name: str = "classifier") -> None:
        super().__init__(name)
        self.ready = True
