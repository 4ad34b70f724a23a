"""OpenAI request bodies as msgspec Structs: decoded and type-checked in one pass.

Types are checked here; a value's range is checked where it is used (``routes``,
``SamplingParams``), each failure naming its parameter. Unknown fields are ignored, as
OpenAI's clients send fields this server has no use for (``metadata``, ``store``, ...);
the ones that would change the answer and cannot be honoured are refused in ``routes``.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from modelhost.server.openai.errors import InvalidParameter

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "GenerateRequest",
    "LoadLoraRequest",
    "StreamOptions",
    "UnloadLoraRequest",
    "decode",
]

T = TypeVar("T")


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool | None = None


class _Sampling(msgspec.Struct, kw_only=True):
    """The fields completions and chat share."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    # vLLM's extension: keep generating past the end-of-sequence token.
    ignore_eos: bool | None = None


class CompletionRequest(_Sampling, kw_only=True):
    # A string, a list of strings, a list of token ids or a list of such lists.
    prompt: str | list[Any]
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None


class ChatCompletionRequest(_Sampling, kw_only=True):
    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    input: str | list[Any]
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None


class LoadLoraRequest(msgspec.Struct, kw_only=True):
    lora_name: str
    lora_path: str
    # Which generative model takes the adapter; needed only when the server has several.
    model: str | None = None


class UnloadLoraRequest(msgspec.Struct, kw_only=True):
    lora_name: str
    lora_int_id: int | None = None


class GenerateRequest(msgspec.Struct, kw_only=True):
    """The Open Inference Protocol's generate body; sampling fields may also sit at the top
    level, where Triton's backends put them."""

    text_input: str
    parameters: dict[str, Any] | None = None
    id: str | None = None
    max_tokens: Any = None
    temperature: Any = None
    top_p: Any = None
    top_k: Any = None
    seed: Any = None
    stop: Any = None


_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_PATH = re.compile(r"at `\$\.?([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def decode(body: bytes, kind: type[T]) -> T:
    """``body`` as a ``kind``; a 400 naming the parameter when it does not fit."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(body)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        text = str(exc)
        found = _PATH.search(text) or _MISSING.search(text)
        param = found.group(1) if found else None
        raise InvalidParameter(f"Invalid request: {text}", param=param or None) from None
    except msgspec.DecodeError:
        if not body.strip():
            raise InvalidParameter("The request has no body; send a JSON object.") from None
        raise InvalidParameter(
            "We could not parse the JSON body of your request: it is not valid JSON."
        ) from None
