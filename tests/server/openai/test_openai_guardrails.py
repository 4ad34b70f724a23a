"""Guardrails: the regex PII redactor on its own, across stream chunks, and on a server."""

from __future__ import annotations

import asyncio
import random

import httpx
import openai
import pytest
from openai_fakes import SECRET, FakeEmbedder, FakeLLM, ids_of
from openai_serving import LLMServer, StartLLMServer

from modelhost import errors
from modelhost.server.openai.errors import ContentFiltered
from modelhost.server.openai.guardrails import (
    MAX_HOLDBACK,
    Guardrail,
    GuardrailChain,
    RegexPIIRedactor,
    chain_from_names,
)

REDACTED_SECRET = "Write to [REDACTED:EMAIL], call [REDACTED:PHONE], card [REDACTED:CREDIT_CARD]."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail john.doe+x@mail.example.co.uk now", "mail [REDACTED:EMAIL] now"),
        ("call 555-123-4567.", "call [REDACTED:PHONE]."),
        ("call (555) 123-4567 or +1 555 123 4567", "call [REDACTED:PHONE] or [REDACTED:PHONE]"),
        ("+44.555.123.4567", "[REDACTED:PHONE]"),
        ("pay 4111-1111-1111-1111 now", "pay [REDACTED:CREDIT_CARD] now"),
        ("pay 4111111111111111", "pay [REDACTED:CREDIT_CARD]"),
        ("ssn 078-05-1120!", "ssn [REDACTED:SSN]!"),
        ("version 1.2.3, 2024-01-31, 12345, a@b", "version 1.2.3, 2024-01-31, 12345, a@b"),
        ("id 123456789 and 12-34", "id 123456789 and 12-34"),
        (SECRET, REDACTED_SECRET),
    ],
)
def test_the_redactor_finds_each_kind(text: str, expected: str) -> None:
    assert RegexPIIRedactor().redact(text) == expected


def test_the_redactor_can_be_limited_to_some_kinds() -> None:
    only_email = RegexPIIRedactor(kinds=["email"])
    assert only_email.redact("a.b@c.io 555-123-4567") == "[REDACTED:EMAIL] 555-123-4567"


def stream_through(chain: GuardrailChain, chunks: list[str]) -> list[str]:
    async def run() -> list[str]:
        stream = chain.output_stream()
        out = [await stream.push(chunk) for chunk in chunks]
        return [*out, await stream.finish()]

    return asyncio.run(run())


TEXTS = [
    SECRET,
    "Reach me at first.last@sub.example.com or 555.867.5309, or SSN 123-45-6789.",
    "no pii at all, just words: 12 cats and 3 dogs (maybe 4).",
    # No break for longer than the holdback: the cut must still not split a match.
    "k" * 700 + "john.doe@example.com" + "z" * 40,
    "x" * 1500 + "4111 1111 1111 1111" + "y" * 900,
    "a@b.cd-555-123-4567-" * 40,
]


@pytest.mark.parametrize("text", TEXTS)
def test_a_stream_is_redacted_as_the_whole_text_whatever_the_chunking(text: str) -> None:
    chain = GuardrailChain([RegexPIIRedactor()])
    expected = RegexPIIRedactor().redact(text)
    rng = random.Random(len(text))
    splits = [[c for c in text]]  # one character per chunk
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 12))))
        splits.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    for chunks in splits:
        out = stream_through(chain, chunks)
        # Chunks partition the output, so no chunk can hold an unredacted match.
        assert "".join(out) == expected


def test_the_stream_holds_back_at_most_a_word_or_the_limit() -> None:
    chain = GuardrailChain([RegexPIIRedactor()])
    out = stream_through(chain, ["hello ", "wor", "ld ", "again"])
    assert out == ["hello ", "", "world ", "", "again"]
    long = stream_through(chain, ["q" * (MAX_HOLDBACK + 100)])
    assert len(long[0]) == 100


def test_chains_are_built_from_names() -> None:
    chain = chain_from_names(" pii, ")
    assert [type(g) for g in chain.guardrails] == [RegexPIIRedactor]
    assert not chain_from_names("")
    with pytest.raises(errors.InvalidInput, match="bogus"):
        chain_from_names("pii,bogus")


class Blocklist(Guardrail):
    """Refuses prompts with "forbidden" in them and stops outputs that say "DELTA"."""

    async def check_input(self, text: str, *, role: str | None = None) -> str:
        if "forbidden" in text:
            raise ContentFiltered("The prompt was refused by the blocklist.")
        return text

    async def check_output(self, text: str) -> str:
        if "DELTA" in text:
            raise ContentFiltered("stop")
        return text


@pytest.fixture
def guarded(llm_server: StartLLMServer) -> tuple[LLMServer, FakeLLM, FakeEmbedder]:
    llm, embedder = FakeLLM(adapters=["loud"]), FakeEmbedder()
    chain = GuardrailChain([RegexPIIRedactor(), Blocklist()])
    return llm_server([llm, embedder], guardrails=chain), llm, embedder


def test_prompts_are_redacted_before_the_model_sees_them(
    guarded: tuple[LLMServer, FakeLLM, FakeEmbedder],
) -> None:
    server, llm, embedder = guarded
    client = server.client()
    result = client.completions.create(
        model="fake-llm", prompt="repeat: mail me at bob@corp.com", max_tokens=60, echo=True
    )
    assert all("bob@corp.com" not in text for text, _ in llm.encode_calls)
    assert result.choices[0].text == (
        "repeat: mail me at [REDACTED:EMAIL]mail me at [REDACTED:EMAIL]"
    )
    client.chat.completions.create(
        model="fake-llm",
        messages=[{"role": "user", "content": "my ssn is 123-45-6789"}],
        max_tokens=1,
    )
    assert llm.templates[-1][0]["content"] == "my ssn is [REDACTED:SSN]"
    client.embeddings.create(model="fake-embedder", input=["call 555-123-4567"])
    assert embedder.inputs[-1] == ["call [REDACTED:PHONE]"]
    # A token prompt is decoded, checked, and encoded again when the check rewrote it.
    client.completions.create(model="fake-llm", prompt=ids_of("x@y.org"), max_tokens=1)
    assert llm.decode(llm.calls[-1]["prompt_ids"]) == "[REDACTED:EMAIL]"


def test_outputs_are_redacted_whole_and_streamed(
    guarded: tuple[LLMServer, FakeLLM, FakeEmbedder],
) -> None:
    server, _, _ = guarded
    client = server.client()
    messages = [{"role": "user", "content": "reveal"}]
    whole = client.chat.completions.create(model="fake-llm", messages=messages, max_tokens=100)
    assert whole.choices[0].message.content == REDACTED_SECRET
    chunks = [
        c.choices[0].delta.content
        for c in client.chat.completions.create(
            model="fake-llm",
            messages=messages,
            max_tokens=100,
            stream=True,
        )
        if c.choices and c.choices[0].delta.content
    ]
    assert "".join(chunks) == REDACTED_SECRET
    assert len(chunks) > 5  # it streamed, word by word
    generated = httpx.post(
        f"{server.url}/v2/models/fake-llm/generate_stream",
        json={"text_input": "reveal", "parameters": {"max_tokens": 100}},
    )
    assert "example.org" not in generated.text
    assert "[REDACTED:EMAIL]" in generated.text


def test_a_refused_prompt_is_a_400_content_filter(
    guarded: tuple[LLMServer, FakeLLM, FakeEmbedder],
) -> None:
    server, llm, _ = guarded
    calls = len(llm.calls)
    with pytest.raises(openai.BadRequestError) as caught:
        server.client().chat.completions.create(
            model="fake-llm", messages=[{"role": "user", "content": "the forbidden word"}]
        )
    assert caught.value.code == "content_filter"
    assert len(llm.calls) == calls


def test_a_refused_output_ends_the_choice_with_content_filter(
    guarded: tuple[LLMServer, FakeLLM, FakeEmbedder],
) -> None:
    server, llm, _ = guarded
    client = server.client()
    result = client.completions.create(model="loud", prompt="abc", max_tokens=30)
    assert result.choices[0].finish_reason == "content_filter"
    assert "DELTA" not in result.choices[0].text
    chunks = list(client.completions.create(model="loud", prompt="abc", max_tokens=30, stream=True))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert not llm.active
    assert len(llm.closed) == 2  # both generations stopped early
