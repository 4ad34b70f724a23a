"""``/v1/completions`` through the official openai client: shapes, parameters, streaming."""

from __future__ import annotations

import time

import pytest
from openai_fakes import WORD_BASE, greedy_text, ids_of, word_text
from openai_serving import Shared


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
def test_a_completion_has_openai_shape_and_usage(shared: Shared, prefix: str) -> None:
    client = shared.server.client(prefix)
    result = client.completions.create(
        model="fake-llm", prompt="hello", max_tokens=4, temperature=0, user="someone"
    )
    assert result.id.startswith("cmpl-")
    assert result.object == "text_completion"
    assert result.model == "fake-llm"
    assert abs(result.created - time.time()) < 60
    [choice] = result.choices
    assert choice.index == 0
    assert choice.text == greedy_text(ids_of("hello"), 4)
    assert choice.finish_reason == "length"
    assert choice.logprobs is None
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (6, 4)
    assert result.usage.total_tokens == 10


def test_the_prompt_is_encoded_with_special_tokens(shared: Shared) -> None:
    shared.server.client().completions.create(model="fake-llm", prompt="bos please", max_tokens=1)
    assert ("bos please", True) in shared.llm.encode_calls


def test_max_tokens_defaults_to_16(shared: Shared) -> None:
    result = shared.server.client().completions.create(model="fake-llm", prompt="x")
    assert result.usage is not None
    assert result.usage.completion_tokens == 16
    assert shared.llm.calls[-1]["params"].max_tokens == 16


def test_the_end_of_sequence_token_finishes_with_stop(shared: Shared) -> None:
    result = shared.server.client().completions.create(
        model="fake-llm", prompt="short", max_tokens=10, temperature=0
    )
    assert result.choices[0].finish_reason == "stop"
    assert result.choices[0].text == greedy_text(ids_of("short"), 3)
    assert result.usage is not None
    assert result.usage.completion_tokens == 4  # three words and the end-of-sequence token


def test_sampling_parameters_reach_the_model(shared: Shared) -> None:
    shared.server.client().completions.create(
        model="fake-llm",
        prompt="params",
        max_tokens=3,
        temperature=0.7,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        seed=11,
        stop=["zulu"],
        extra_body={"top_k": 5, "ignore_eos": True},
    )
    params = shared.llm.calls[-1]["params"]
    assert (params.temperature, params.top_p, params.top_k, params.seed) == (0.7, 0.9, 5, 11)
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, -0.5)
    assert params.stop == ("zulu",)
    assert params.ignore_eos is True
    assert params.logprobs is None


def test_n_choices_use_seed_plus_index(shared: Shared) -> None:
    client = shared.server.client()
    result = client.completions.create(
        model="fake-llm", prompt="many", n=3, seed=7, temperature=1, max_tokens=5
    )
    assert [c.index for c in result.choices] == [0, 1, 2]
    texts = [c.text for c in result.choices]
    assert len(set(texts)) == 3
    for i, text in enumerate(texts):
        single = client.completions.create(
            model="fake-llm", prompt="many", seed=7 + i, temperature=1, max_tokens=5
        )
        assert single.choices[0].text == text
    assert result.usage is not None
    # The prompt counts once, every choice's tokens count.
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (5, 15)


def test_a_batch_of_prompts_orders_choices_prompt_by_prompt(shared: Shared) -> None:
    result = shared.server.client().completions.create(
        model="fake-llm", prompt=["a", "bb"], n=2, temperature=0, max_tokens=2
    )
    texts = [(c.index, c.text) for c in result.choices]
    a, bb = greedy_text(ids_of("a"), 2), greedy_text(ids_of("bb"), 2)
    assert texts == [(0, a), (1, a), (2, bb), (3, bb)]
    assert result.usage is not None
    assert result.usage.prompt_tokens == 2 + 3


def test_token_id_prompts(shared: Shared) -> None:
    client = shared.server.client()
    ids = ids_of("tokens")
    one = client.completions.create(model="fake-llm", prompt=ids, temperature=0, max_tokens=2)
    assert one.choices[0].text == greedy_text(ids, 2)
    many = client.completions.create(
        model="fake-llm", prompt=[ids, ids_of("x")], temperature=0, max_tokens=2, echo=True
    )
    # Echoing a token prompt gives its text back.
    assert many.choices[0].text == "tokens" + greedy_text(ids, 2)
    assert many.choices[1].text == "x" + greedy_text(ids_of("x"), 2)


def test_echo_puts_the_prompt_first(shared: Shared) -> None:
    result = shared.server.client().completions.create(
        model="fake-llm", prompt="say", echo=True, temperature=0, max_tokens=2
    )
    assert result.choices[0].text == "say" + greedy_text(ids_of("say"), 2)


@pytest.mark.parametrize("as_list", [False, True])
def test_stop_ends_the_text_before_the_stop_string(shared: Shared, as_list: bool) -> None:
    ids = ids_of("stopping")
    third = word_text(sum(ids) + 2).strip()
    stop: str | list[str] = ["never-there", third] if as_list else third
    result = shared.server.client().completions.create(
        model="fake-llm", prompt="stopping", temperature=0, max_tokens=6, stop=stop
    )
    assert result.choices[0].text == greedy_text(ids, 2) + " "
    assert result.choices[0].finish_reason == "stop"


def test_logprobs_have_the_legacy_shape(shared: Shared) -> None:
    result = shared.server.client().completions.create(
        model="fake-llm", prompt="lp", temperature=0, max_tokens=3, logprobs=2
    )
    choice = result.choices[0]
    assert choice.logprobs is not None
    lp = choice.logprobs
    ids = ids_of("lp")
    assert lp.tokens == [word_text(sum(ids) + i) for i in range(3)]
    assert lp.token_logprobs == [-0.1, -0.1, -0.1]
    assert lp.top_logprobs is not None
    assert [len(top) for top in lp.top_logprobs] == [2, 2, 2]
    first = WORD_BASE + sum(ids) % 8
    assert lp.top_logprobs[0] == {word_text(first - WORD_BASE): -0.1, word_text(first + 1): -0.2}
    # Offsets point at each token's text in the choice's text.
    assert lp.text_offset == [0, len(lp.tokens[0]), len(lp.tokens[0]) + len(lp.tokens[1])]
    assert shared.llm.calls[-1]["params"].logprobs == 2


def test_a_stream_carries_the_same_text_and_a_final_usage_chunk(shared: Shared) -> None:
    client = shared.server.client()
    whole = client.completions.create(model="fake-llm", prompt="s", temperature=0, max_tokens=5)
    chunks = list(
        client.completions.create(
            model="fake-llm",
            prompt="s",
            temperature=0,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content, last = chunks
    assert "".join(c.choices[0].text for c in content) == whole.choices[0].text
    assert all(c.usage is None for c in content)
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    assert [c.choices[0].finish_reason for c in content][-1] == "length"
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 5
    assert last.usage.prompt_tokens == 2


def test_a_stream_without_include_usage_has_no_usage_chunk(shared: Shared) -> None:
    chunks = list(
        shared.server.client().completions.create(
            model="fake-llm", prompt="s", max_tokens=3, stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert len(chunks) == 3


def test_a_stream_of_n_choices_with_echo_and_logprobs(shared: Shared) -> None:
    client = shared.server.client()
    chunks = list(
        client.completions.create(
            model="fake-llm",
            prompt="nn",
            n=2,
            seed=3,
            max_tokens=4,
            stream=True,
            echo=True,
        )
    )
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    whole = client.completions.create(model="fake-llm", prompt="nn", n=2, seed=3, max_tokens=4)
    assert texts == {c.index: "nn" + c.text for c in whole.choices}
    logprob_chunks = list(
        client.completions.create(
            model="fake-llm", prompt="nn", max_tokens=2, stream=True, logprobs=1
        )
    )
    for chunk in logprob_chunks:
        lp = chunk.choices[0].logprobs
        assert lp is not None
        assert lp.tokens == [chunk.choices[0].text]
        assert lp.top_logprobs is not None
        assert len(lp.top_logprobs[0]) == 1


async def test_the_async_client_streams(shared: Shared) -> None:
    client = shared.server.async_client("/openai/v1")
    stream = await client.completions.create(
        model="fake-llm", prompt="async", temperature=0, max_tokens=3, stream=True
    )
    text = "".join([chunk.choices[0].text async for chunk in stream])
    assert text == greedy_text(ids_of("async"), 3)
    await client.close()
