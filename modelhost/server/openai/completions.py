"""OpenAI's response bodies for completions and chat completions, whole or as SSE chunks.

Each function consumes a :class:`Run`'s pieces and yields bytes for a ``StreamingResponse``:
one JSON document, or ``data: {chunk}`` events ending with ``data: [DONE]``. Shapes are
OpenAI's: ``text_completion`` with legacy logprobs (``tokens``, ``token_logprobs``,
``top_logprobs``, ``text_offset``), ``chat.completion(.chunk)`` with ``logprobs.content``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from modelhost.model.generation import GenerativeModel, TokenEvent
from modelhost.server.http.streaming import sse
from modelhost.server.openai.runs import Piece, Run

__all__ = ["DONE", "Reply", "chat_body", "chat_stream", "completion_body", "completion_stream"]

# The event that ends every OpenAI stream, an error's included.
DONE = b"data: [DONE]\n\n"


@dataclass
class Reply:
    """What the formatters need besides the run: names, options, and the echoed prompts."""

    id: str
    model_name: str
    model: GenerativeModel
    logprobs: int | None = None
    include_usage: bool = False
    # Per choice index: the prompt text an ``echo`` puts before the completion.
    echo: Sequence[str] | None = None
    created: int = field(default_factory=lambda: int(time.time()))


def _usage(run: Run) -> dict[str, int]:
    prompt, completion = run.prompt_tokens, run.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _body(kind: str, run: Run, reply: Reply, choices: list[dict[str, Any]]) -> bytes:
    """A whole (not streamed) reply: its choices and the run's usage."""
    return orjson.dumps(
        {
            "id": reply.id,
            "object": kind,
            "created": reply.created,
            "model": reply.model_name,
            "choices": choices,
            "usage": _usage(run),
        }
    )


def _token_text(model: GenerativeModel, event: TokenEvent) -> str:
    return model.decode([event.token_id])


# -- completions --------------------------------------------------------------------------


class _LegacyLogprobs:
    __slots__ = ("offsets", "token_logprobs", "tokens", "top")

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top: list[dict[str, float] | None] = []
        self.offsets: list[int] = []

    def add(self, model: GenerativeModel, event: TokenEvent, offset: int) -> None:
        self.tokens.append(_token_text(model, event))
        self.token_logprobs.append(event.logprob)
        top: dict[str, float] | None = None
        if event.top_logprobs is not None:
            top = {}
            # Keyed by text: two tokens that decode alike (byte pieces) keep the likelier.
            for text, logprob in event.top_logprobs:
                top.setdefault(text, logprob)
        self.top.append(top)
        self.offsets.append(offset)

    def body(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top,
            "text_offset": self.offsets,
        }


async def completion_body(run: Run, reply: Reply) -> AsyncGenerator[bytes, None]:
    texts: dict[int, list[str]] = {}
    finish: dict[int, str | None] = {}
    logprobs: dict[int, _LegacyLogprobs] = {}
    lengths: dict[int, int] = {}
    for job in run.jobs:
        prefix = reply.echo[job.index] if reply.echo is not None else ""
        texts[job.index] = [prefix] if prefix else []
        lengths[job.index] = len(prefix)
        finish[job.index] = None
        if reply.logprobs is not None:
            logprobs[job.index] = _LegacyLogprobs()
    async with _closing(run) as pieces:
        async for piece in pieces:
            if piece.event is not None and reply.logprobs is not None:
                logprobs[piece.index].add(reply.model, piece.event, lengths[piece.index])
            if piece.text:
                texts[piece.index].append(piece.text)
                lengths[piece.index] += len(piece.text)
            if piece.finish_reason is not None:
                finish[piece.index] = piece.finish_reason
    choices = [
        {
            "index": index,
            "text": "".join(parts),
            "logprobs": logprobs[index].body() if index in logprobs else None,
            "finish_reason": finish[index],
        }
        for index, parts in sorted(texts.items())
    ]
    yield _body("text_completion", run, reply, choices)


async def completion_stream(run: Run, reply: Reply) -> AsyncGenerator[bytes, None]:
    head = {"id": reply.id, "object": "text_completion", "created": reply.created}
    model_name = reply.model_name
    usage_field = {"usage": None} if reply.include_usage else {}
    lengths: dict[int, int] = {}
    async with _closing(run) as pieces:
        async for piece in pieces:
            index = piece.index
            text = piece.text
            if index not in lengths:
                prefix = reply.echo[index] if reply.echo is not None else ""
                text = prefix + text
                lengths[index] = 0
            lp: dict[str, Any] | None = None
            if reply.logprobs is not None and piece.event is not None:
                one = _LegacyLogprobs()
                one.add(reply.model, piece.event, lengths[index])
                lp = one.body()
            elif not text and piece.finish_reason is None:
                continue
            lengths[index] += len(text)
            choice = {
                "index": index,
                "text": text,
                "logprobs": lp,
                "finish_reason": piece.finish_reason,
            }
            yield sse({**head, "model": model_name, "choices": [choice], **usage_field})
    if reply.include_usage:
        yield sse({**head, "model": model_name, "choices": [], "usage": _usage(run)})
    yield DONE


# -- chat -----------------------------------------------------------------------------------


def _chat_logprob(model: GenerativeModel, event: TokenEvent) -> dict[str, Any]:
    token = _token_text(model, event)
    top = [
        {"token": text, "logprob": value, "bytes": list(text.encode())}
        for text, value in (event.top_logprobs or ())
    ]
    return {
        "token": token,
        "logprob": event.logprob,
        "bytes": list(token.encode()),
        "top_logprobs": top,
    }


async def chat_body(run: Run, reply: Reply) -> AsyncGenerator[bytes, None]:
    texts: dict[int, list[str]] = {job.index: [] for job in run.jobs}
    finish: dict[int, str | None] = dict.fromkeys(texts)
    logprobs: dict[int, list[dict[str, Any]]] = {}
    if reply.logprobs is not None:
        logprobs = {index: [] for index in texts}
    async with _closing(run) as pieces:
        async for piece in pieces:
            if piece.event is not None and reply.logprobs is not None:
                logprobs[piece.index].append(_chat_logprob(reply.model, piece.event))
            if piece.text:
                texts[piece.index].append(piece.text)
            if piece.finish_reason is not None:
                finish[piece.index] = piece.finish_reason
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": "".join(parts), "refusal": None},
            "logprobs": (
                {"content": logprobs[index], "refusal": None} if index in logprobs else None
            ),
            "finish_reason": finish[index],
        }
        for index, parts in sorted(texts.items())
    ]
    yield _body("chat.completion", run, reply, choices)


async def chat_stream(run: Run, reply: Reply) -> AsyncGenerator[bytes, None]:
    head = {"id": reply.id, "object": "chat.completion.chunk", "created": reply.created}
    model_name = reply.model_name
    usage_field = {"usage": None} if reply.include_usage else {}
    started: set[int] = set()
    async with _closing(run) as pieces:
        async for piece in pieces:
            index = piece.index
            if index not in started:
                started.add(index)
                # OpenAI's first chunk of a choice carries the role and no text.
                opening = {
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
                yield sse({**head, "model": model_name, "choices": [opening], **usage_field})
            lp: dict[str, Any] | None = None
            if reply.logprobs is not None and piece.event is not None:
                lp = {"content": [_chat_logprob(reply.model, piece.event)], "refusal": None}
            elif not piece.text and piece.finish_reason is None:
                continue
            choice = {
                "index": index,
                "delta": {"content": piece.text} if piece.text else {},
                "logprobs": lp,
                "finish_reason": piece.finish_reason,
            }
            yield sse({**head, "model": model_name, "choices": [choice], **usage_field})
    if reply.include_usage:
        yield sse({**head, "model": model_name, "choices": [], "usage": _usage(run)})
    yield DONE


def _closing(run: Run) -> contextlib.aclosing[AsyncGenerator[Piece, None]]:
    # Closing the formatter closes the run at once, and with it every model generator.
    return contextlib.aclosing(run.pieces())
