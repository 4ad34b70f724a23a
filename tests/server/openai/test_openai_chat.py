"""``/v1/chat/completions`` through the official openai client: template, shapes, streaming."""

from __future__ import annotations

import pytest
from openai_fakes import greedy_text, ids_of, word_text
from openai_serving import Shared

USER = [{"role": "user", "content": "hi"}]
TEMPLATED = "<|user|>hi\n<|assistant|>"


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
def test_a_chat_completion_has_openai_shape(shared: Shared, prefix: str) -> None:
    result = shared.server.client(prefix).chat.completions.create(
        model="fake-llm",
        messages=USER,
        max_tokens=3,
        temperature=0,
    )
    assert result.id.startswith("chatcmpl-")
    assert result.object == "chat.completion"
    assert result.model == "fake-llm"
    [choice] = result.choices
    assert choice.message.role == "assistant"
    # The template's prompt is encoded without special tokens: the template put them in.
    assert choice.message.content == greedy_text(ids_of(TEMPLATED, bos=False), 3)
    assert choice.finish_reason == "length"
    assert choice.logprobs is None
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (len(TEMPLATED), 3)
    assert shared.llm.encode_calls[-1] == (TEMPLATED, False)


def test_messages_reach_the_template_as_text(shared: Shared) -> None:
    shared.server.client().chat.completions.create(
        model="fake-llm",
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
            },
            {"role": "assistant", "content": "ok", "name": "bot"},
            {"role": "user", "content": "again"},
        ],
        max_tokens=1,
    )
    assert shared.llm.templates[-1] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one\ntwo"},
        {"role": "assistant", "content": "ok", "name": "bot"},
        {"role": "user", "content": "again"},
    ]


def test_max_completion_tokens_wins_over_max_tokens(shared: Shared) -> None:
    result = shared.server.client().chat.completions.create(
        model="fake-llm",
        messages=USER,
        max_tokens=2,
        max_completion_tokens=4,
    )
    assert result.usage is not None
    assert result.usage.completion_tokens == 4


def test_max_tokens_defaults_to_the_rest_of_the_context(shared: Shared) -> None:
    messages = [{"role": "user", "content": "short"}]
    result = shared.server.client().chat.completions.create(
        model="fake-llm",
        messages=messages,
        temperature=0,
    )
    prompt = "<|user|>short\n<|assistant|>"
    assert shared.llm.calls[-1]["params"].max_tokens == 256 - len(prompt)
    assert result.choices[0].finish_reason == "stop"


def test_logprobs_have_the_chat_shape(shared: Shared) -> None:
    client = shared.server.client()
    result = client.chat.completions.create(
        model="fake-llm",
        messages=USER,
        max_tokens=2,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    logprobs = result.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content is not None
    first = sum(ids_of(TEMPLATED, bos=False))
    assert [t.token for t in logprobs.content] == [word_text(first), word_text(first + 1)]
    entry = logprobs.content[0]
    assert entry.logprob == -0.1
    assert entry.bytes == list(word_text(first).encode())
    assert [t.logprob for t in entry.top_logprobs] == [-0.1, -0.2, -0.30000000000000004]
    assert entry.top_logprobs[1].token == word_text(first + 1)
    plain = client.chat.completions.create(
        model="fake-llm",
        messages=USER,
        max_tokens=1,
        logprobs=True,
    )
    assert plain.choices[0].logprobs is not None
    assert plain.choices[0].logprobs.content is not None
    assert plain.choices[0].logprobs.content[0].top_logprobs == []
    assert shared.llm.calls[-1]["params"].logprobs == 0


def test_a_stream_opens_each_choice_with_its_role_and_ends_with_usage(shared: Shared) -> None:
    client = shared.server.client()
    whole = client.chat.completions.create(
        model="fake-llm",
        messages=USER,
        n=2,
        seed=5,
        max_tokens=4,
    )
    chunks = list(
        client.chat.completions.create(
            model="fake-llm",
            messages=USER,
            n=2,
            seed=5,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content, last = chunks
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    texts: dict[int, str] = {}
    finish: dict[int, str | None] = {}
    for chunk in content:
        assert chunk.usage is None
        [choice] = chunk.choices
        if choice.index not in texts:
            assert choice.delta.role == "assistant"
            assert choice.delta.content == ""
            texts[choice.index] = ""
        else:
            assert choice.delta.role is None
        texts[choice.index] += choice.delta.content or ""
        finish[choice.index] = choice.finish_reason
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finish == {0: "length", 1: "length"}
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 8
    assert last.usage.prompt_tokens == len(TEMPLATED)


def test_a_stream_with_logprobs_has_one_entry_per_token(shared: Shared) -> None:
    chunks = list(
        shared.server.client().chat.completions.create(
            model="fake-llm",
            messages=USER,
            max_tokens=3,
            stream=True,
            logprobs=True,
            top_logprobs=1,
        )
    )
    entries = [c.choices[0].logprobs for c in chunks if c.choices[0].logprobs is not None]
    assert len(entries) == 3
    for chunk in chunks[1:]:
        lp = chunk.choices[0].logprobs
        assert lp is not None
        assert lp.content is not None
        assert lp.content[0].token == chunk.choices[0].delta.content


async def test_the_async_client(shared: Shared) -> None:
    client = shared.server.async_client()
    result = await client.chat.completions.create(
        model="fake-llm",
        messages=USER,
        max_tokens=2,
        temperature=0,
    )
    stream = await client.chat.completions.create(
        model="fake-llm",
        messages=USER,
        max_tokens=2,
        temperature=0,
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == result.choices[0].message.content
    await client.close()
