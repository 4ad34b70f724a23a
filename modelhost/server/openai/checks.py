"""Checks of OpenAI request values, each failure a 400 naming its parameter."""

from __future__ import annotations

import dataclasses
from typing import Any

from modelhost import errors
from modelhost.model.generation import GenerativeModel, SamplingParams
from modelhost.model.model import Model
from modelhost.server.openai.errors import InvalidParameter

__all__ = [
    "MAX_CHOICES",
    "adapters",
    "check_length",
    "choices",
    "embedding_inputs",
    "generative",
    "messages",
    "named",
    "prompts",
    "refuse",
    "room",
    "sampling",
    "seeded",
    "stream_options",
]

# Most choices one request may ask for (prompts times n): each is a generation of its own.
MAX_CHOICES = 128
_ROLES = {"system", "developer", "user", "assistant", "tool"}


def sampling(body: Any, max_tokens: int, max_name: str = "max_tokens") -> SamplingParams:
    """The ``SamplingParams`` of a completion or chat body, with OpenAI's defaults."""
    temperature = 1.0 if body.temperature is None else body.temperature
    if not 0.0 <= temperature <= 2.0:
        raise InvalidParameter(f"temperature must be in [0, 2], not {temperature}.", "temperature")
    if max_tokens < 1:
        raise InvalidParameter(f"{max_name} must be at least 1, not {max_tokens}.", max_name)
    stop = body.stop
    stops = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=0 if body.top_k is None else body.top_k,
            seed=body.seed,
            stop=stops,
            presence_penalty=body.presence_penalty or 0.0,
            frequency_penalty=body.frequency_penalty or 0.0,
            ignore_eos=bool(body.ignore_eos),
        )
    except errors.InvalidInput as exc:
        raise named(exc) from None


def refuse(param: str, present: bool, what: str) -> None:
    if present:
        raise InvalidParameter(f"{what} is not supported by this server.", param, "unsupported")


def choices(n: int | None) -> int:
    if n is None:
        return 1
    if not 1 <= n <= MAX_CHOICES:
        raise InvalidParameter(f"n must be in [1, {MAX_CHOICES}], not {n}.", "n")
    return n


def stream_options(stream: bool | None, options: Any) -> bool:
    if options is None:
        return False
    if not stream:
        raise InvalidParameter(
            "stream_options is only allowed when stream is true.", "stream_options"
        )
    return bool(options.include_usage)


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def prompts(prompt: str | list[Any]) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if prompt and all(_is_token(t) for t in prompt):
        return [list(prompt)]
    if prompt and all(isinstance(p, list) and p and all(_is_token(t) for t in p) for p in prompt):
        return [list(p) for p in prompt]
    raise InvalidParameter(
        "prompt must be a string, a list of strings, a list of token ids or a list of lists "
        "of token ids, and not empty.",
        "prompt",
    )


def messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not messages:
        raise InvalidParameter("messages must not be empty.", "messages")
    out = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidParameter(
                f"messages[{i}].role must be one of {sorted(_ROLES)}, not {role!r}.",
                f"messages[{i}].role",
            )
        content = message.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise InvalidParameter(
                        "Only text content parts are supported.", f"messages[{i}].content"
                    )
                if not isinstance(part.get("text"), str):
                    raise InvalidParameter(
                        "A text part needs a text string.", f"messages[{i}].content"
                    )
                texts.append(part["text"])
            content = "\n".join(texts)
        elif content is None:
            if message.get("tool_calls"):
                raise InvalidParameter("Tool calls are not supported.", f"messages[{i}].tool_calls")
            content = ""
        elif not isinstance(content, str):
            raise InvalidParameter(
                "content must be a string or a list of text parts.", f"messages[{i}].content"
            )
        # Chat templates know "system"; "developer" is OpenAI's newer name for it.
        entry: dict[str, Any] = {
            "role": "system" if role == "developer" else role,
            "content": content,
        }
        if isinstance(message.get("name"), str):
            entry["name"] = message["name"]
        out.append(entry)
    return out


def embedding_inputs(value: str | list[Any]) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise InvalidParameter("input must not be empty.", "input")
    if not all(isinstance(t, str) for t in texts):
        raise InvalidParameter("input must be a string or a list of strings.", "input")
    if any(not t for t in texts):
        raise InvalidParameter("input must not contain empty strings.", "input")
    return list(texts)


def generative(model: Model, name: str) -> GenerativeModel:
    if not isinstance(model, GenerativeModel):
        raise InvalidParameter(
            f"The model `{name}` does not generate text.", "model", "model_not_supported"
        )
    return model


def adapters(model: GenerativeModel) -> list[str]:
    try:
        return list(model.adapters)
    except Exception:  # an unloaded model may not know its adapters
        return []


def room(model: GenerativeModel, prompt_len: int) -> int:
    """OpenAI's chat default for max_tokens: the rest of the context."""
    try:
        return int(model.max_model_len) - prompt_len
    except NotImplementedError:
        return 16


def check_length(
    model: GenerativeModel, prompts: list[list[int]], max_tokens: int, param: str
) -> None:
    try:
        limit = int(model.max_model_len)
    except NotImplementedError:
        return
    for ids in prompts:
        if len(ids) + max_tokens > limit:
            raise InvalidParameter(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{len(ids) + max_tokens} tokens ({len(ids)} in the {param}, {max_tokens} in the "
                "completion). Please reduce the length of the prompt or of the completion.",
                param,
                "context_length_exceeded",
            )


def seeded(params: SamplingParams, offset: int) -> SamplingParams:
    """The params of choice ``offset`` of n: seed + offset, so that choices differ."""
    if offset == 0 or params.seed is None:
        return params
    return dataclasses.replace(params, seed=params.seed + offset)


def named(exc: errors.InvalidInput) -> InvalidParameter:
    # SamplingParams' messages start with the parameter's name.
    first = str(exc).split(" ", 1)[0]
    return InvalidParameter(str(exc), first if first.isidentifier() else None)
