"""The Open Inference Protocol's generate extension: ``/v2/models/{name}/generate(_stream)``.

Triton's shape: ``{"text_input": ..., "parameters": {...}}`` in, ``{"model_name",
"model_version", "text_output"}`` out, and for ``generate_stream`` one SSE event of that
shape per chunk of text (no ``[DONE]``: the stream just ends). Sampling fields may sit in
``parameters`` or at the top level, as Triton's backends accept them; fields this server
does not know are ignored, as Triton ignores them. ``text_output`` is the generated text;
``"exclude_input_in_output": false`` puts the prompt before it. Errors use KServe's
``{"error": message}``, as every other v2 endpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import orjson

from modelhost import errors
from modelhost.model.generation import SamplingParams
from modelhost.server.http.streaming import sse
from modelhost.server.openai.errors import InvalidParameter, kserve_error_payload
from modelhost.server.openai.runs import Run
from modelhost.server.openai.schemas import GenerateRequest, decode

__all__ = ["Reply", "body", "error_payload", "parse", "stream"]

error_payload = kserve_error_payload

_SAMPLING = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "ignore_eos",
)


@dataclass(frozen=True)
class Reply:
    model_name: str
    model_version: Any
    # The prompt, when the output includes it.
    prefix: str
    id: str | None


def parse(raw: bytes) -> tuple[GenerateRequest, SamplingParams, bool]:
    """The request, its sampling, and whether the output repeats the input."""
    request = decode(raw, GenerateRequest)
    values: dict[str, Any] = {"max_tokens": 16}
    for key in ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop"):
        value = getattr(request, key)
        if value is not None:
            values[key] = value
    parameters = request.parameters or {}
    for key in _SAMPLING:
        if parameters.get(key) is not None:
            values[key] = parameters[key]
    exclude_input = parameters.get("exclude_input_in_output", True)
    if not isinstance(exclude_input, bool):
        raise InvalidParameter(
            "exclude_input_in_output must be a boolean.", "exclude_input_in_output"
        )
    stop = values.get("stop", ())
    if isinstance(stop, str):
        stop = (stop,) if stop else ()
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stop = tuple(stop)
    elif stop != ():
        raise InvalidParameter("stop must be a string or a list of strings.", "stop")
    values["stop"] = stop
    try:
        params = SamplingParams(**values)
    except errors.InvalidInput as exc:
        first = str(exc).split(" ", 1)[0]
        raise InvalidParameter(str(exc), first if first.isidentifier() else None) from None
    return request, params, not exclude_input


def _head(reply: Reply) -> dict[str, Any]:
    head: dict[str, Any] = {"model_name": reply.model_name}
    if reply.model_version is not None:
        head["model_version"] = str(reply.model_version)
    if reply.id is not None:
        head["id"] = reply.id
    return head


async def body(run: Run, reply: Reply) -> AsyncGenerator[bytes, None]:
    texts = [reply.prefix]
    finish = None
    async with contextlib.aclosing(run.pieces()) as pieces:
        async for piece in pieces:
            texts.append(piece.text)
            finish = piece.finish_reason or finish
    yield orjson.dumps({**_head(reply), "text_output": "".join(texts), "finish_reason": finish})


async def stream(run: Run, reply: Reply) -> AsyncGenerator[bytes, None]:
    head = _head(reply)
    prefix = reply.prefix
    async with contextlib.aclosing(run.pieces()) as pieces:
        async for piece in pieces:
            text = prefix + piece.text
            if not text and piece.finish_reason is None:
                continue
            prefix = ""
            yield sse({**head, "text_output": text, "finish_reason": piece.finish_reason})
