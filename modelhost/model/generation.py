"""Generative models: what a generation asks for, what it streams back, and the model's API.

The OpenAI layer of the server builds a :class:`SamplingParams` from a request, calls a
:class:`GenerativeModel`'s ``generate`` and reads :class:`TokenEvent` objects back; the LLM
runtimes (``modelhost.runtimes.llm``) implement it. Plain data here: no framework imports.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from modelhost import errors
from modelhost.model.model import Model

__all__ = [
    "MAX_LOGPROBS",
    "EmbeddingModel",
    "EngineOverloaded",
    "FinishReason",
    "GenerativeModel",
    "SamplingParams",
    "TokenEvent",
]

# OpenAI's own bound on top_logprobs; more would cost a decode per entry per token.
MAX_LOGPROBS = 20
# OpenAI's range for both penalties.
_PENALTY_RANGE = (-2.0, 2.0)
# What torch.Generator.manual_seed accepts.
_SEED_RANGE = (-(2**63), 2**64 - 1)

FinishReason = Literal["stop", "length"]


class EngineOverloaded(errors.Overloaded):
    """The engine's waiting queue is full: the client should retry later."""


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples; invalid values raise ``InvalidInput`` naming the parameter.

    ``temperature`` 0 is greedy decoding. ``top_k`` 0 (or -1) and ``top_p`` 1 turn those
    filters off. The penalties follow OpenAI: subtracted from the logits of tokens already
    generated (presence once, frequency per occurrence). ``logprobs`` is the number of most
    likely alternatives reported per token (0: only the chosen token's), ``None`` for none.
    ``n`` must be 1 here: the API layer runs ``n`` requests for ``n`` choices.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        _integer("max_tokens", self.max_tokens, minimum=1)
        _number("temperature", self.temperature, minimum=0.0)
        _number("top_p", self.top_p, minimum=0.0)
        if not 0.0 < self.top_p <= 1.0:
            raise errors.InvalidInput(f"top_p must be in (0, 1], not {self.top_p}.")
        _integer("top_k", self.top_k, minimum=-1)
        if self.seed is not None:
            _integer("seed", self.seed, minimum=_SEED_RANGE[0])
            if self.seed > _SEED_RANGE[1]:
                raise errors.InvalidInput(f"seed must be below 2**64, not {self.seed}.")
        if isinstance(self.stop, str) or not isinstance(self.stop, tuple):
            raise errors.InvalidInput("stop must be a tuple of strings.")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise errors.InvalidInput("stop strings must be non-empty strings.")
        _integer("n", self.n, minimum=1)
        if self.n != 1:
            raise errors.InvalidInput(f"n must be 1 for one generation, not {self.n}.")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _number(name, value, minimum=_PENALTY_RANGE[0])
            if value > _PENALTY_RANGE[1]:
                raise errors.InvalidInput(f"{name} must be in [-2, 2], not {value}.")
        if self.logprobs is not None:
            _integer("logprobs", self.logprobs, minimum=0)
            if self.logprobs > MAX_LOGPROBS:
                raise errors.InvalidInput(
                    f"logprobs must be at most {MAX_LOGPROBS}, not {self.logprobs}."
                )
        if not isinstance(self.ignore_eos, bool):
            raise errors.InvalidInput(f"ignore_eos must be a boolean, not {self.ignore_eos!r}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


@dataclass(frozen=True)
class TokenEvent:
    """One generated token: its id, the text it adds, and ``finish_reason`` on the last one.

    ``text`` may be empty: a token that ends in the middle of a UTF-8 character, or that may
    begin a stop string, adds its text to a later event. The end-of-sequence token comes as a
    last event with empty text. ``top_logprobs`` pairs each alternative's text with its log
    probability, most likely first.
    """

    token_id: int
    text: str
    logprob: float | None = None
    top_logprobs: list[tuple[str, float]] | None = None
    finish_reason: FinishReason | None = None


def _integer(name: str, value: object, *, minimum: int) -> None:
    # bool is an int to Python but never what a client meant.
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidInput(f"{name} must be an integer, not {value!r}.")
    if value < minimum:
        raise errors.InvalidInput(f"{name} must be at least {minimum}, not {value}.")


def _number(name: str, value: object, *, minimum: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise errors.InvalidInput(f"{name} must be a number, not {value!r}.")
    if not math.isfinite(value) or value < minimum:
        raise errors.InvalidInput(f"{name} must be a finite number >= {minimum}, not {value}.")


class GenerativeModel(Model):
    """A model that generates text: what the OpenAI-compatible API and ``generate`` call.

    ``name`` is the base model's name; ``adapters`` the LoRA adapters served over it, each a
    model name of its own in ``/v1/models`` and in a request's ``model`` field.
    """

    @property
    def adapters(self) -> list[str]:
        return []

    async def load_adapter(self, name: str, path: str) -> None:
        """Serve a LoRA adapter from ``path`` as model ``name`` (vLLM's load_lora_adapter)."""
        raise errors.Unsupported(f"{self.name} does not take LoRA adapters")

    async def unload_adapter(self, name: str) -> None:
        raise errors.Unsupported(f"{self.name} does not take LoRA adapters")

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        raise NotImplementedError

    def decode(self, token_ids: Sequence[int]) -> str:
        raise NotImplementedError

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        """The prompt a chat turns into, from the tokenizer's template."""
        raise NotImplementedError

    def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        request_id: str,
        adapter: str | None = None,
    ) -> AsyncIterator[TokenEvent]:
        """Stream the tokens of one completion; leaving the iteration frees its slot."""
        raise NotImplementedError

    @property
    def stats(self) -> Mapping[str, Any]:
        """running, waiting, kv_cache_usage (or None), prompt/generation token totals."""
        return {}

    def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        raise errors.Unsupported(
            f"Model {self.name} generates text: use /v1/completions, /v1/chat/completions or "
            f"/v2/models/{self.name}/generate."
        )

    @property
    def max_model_len(self) -> int:
        raise NotImplementedError


class EmbeddingModel(Model):
    """A model that turns texts into vectors: what ``/v1/embeddings`` calls."""

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """One vector per text, and the number of tokens the texts took (for ``usage``)."""
        raise NotImplementedError
