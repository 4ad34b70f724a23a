"""The LLM engine on a tiny random Llama: batching must not change any request's tokens."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelhost import errors
from modelhost.runtimes.llm import Engine, EngineOverloaded, SamplingParams, TokenEvent

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)
LONG = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
PROMPTS = [
    "hello",
    "the quick brown fox jumps over the lazy dog",
    "a",
    "café crème brûlée naïve façade über straße, one two three four five six",
]
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


@pytest.fixture(scope="module")
def engine(tiny_llama: Path) -> Iterator[Engine]:
    """One started engine for the tests that only read their own tokens."""
    engine = Engine(tiny_llama, max_batch_size=16)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.stop())


MakeEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def make_engine(tiny_llama: Path) -> AsyncIterator[MakeEngine]:
    """Fresh started engines with their own limits and counters; stopped after the test."""
    made: list[Engine] = []

    async def factory(**options: Any) -> Engine:
        engine = Engine(tiny_llama, **options)
        await engine.start()
        made.append(engine)
        return engine

    yield factory
    for engine in made:
        await engine.stop()


@pytest.fixture(scope="module")
def reference(tiny_llama: Path) -> Callable[..., list[int]]:
    """Greedy tokens for one prompt alone, on the reference's own copy of the model.

    ``model.generate`` stops at the end-of-sequence token; with ``ignore_eos`` the reference
    is a plain loop that runs the whole sequence through the model for every token.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()

    def generate(ids: list[int], max_tokens: int, *, ignore_eos: bool = False) -> list[int]:
        with torch.inference_mode():
            if ignore_eos:
                sequence = list(ids)
                for _ in range(max_tokens):
                    logits = model(torch.tensor([sequence])).logits
                    sequence.append(int(logits[0, -1].argmax()))
                return sequence[len(ids) :]
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
                do_sample=False,
                max_new_tokens=max_tokens,
            )
        return [int(i) for i in out[0, len(ids) :]]

    return generate


async def run(
    engine: Engine, ids: list[int], params: SamplingParams, request_id: str
) -> list[TokenEvent]:
    return [event async for event in engine.generate(ids, params, request_id=request_id)]


def tokens(events: list[TokenEvent]) -> list[int]:
    return [event.token_id for event in events]


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    # Polled: the engine's counters change on its worker thread, which sets no asyncio.Event.
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


async def test_concurrent_greedy_equals_generate_alone(
    engine: Engine, reference: Callable[..., list[int]]
) -> None:
    # Prompts start inside the decode step: this model fits the ragged batch.
    assert engine.batching == "ragged"
    prompts = [engine.encode_prompt(p) for p in PROMPTS]
    assert len({len(p) for p in prompts}) == len(prompts)
    results = await asyncio.gather(
        *(run(engine, ids, GREEDY, f"greedy-{i}") for i, ids in enumerate(prompts))
    )
    for ids, events in zip(prompts, results, strict=True):
        assert tokens(events) == reference(ids, GREEDY.max_tokens)
        # The streamed deltas add up to the decoded output, multi-byte characters included.
        assert "".join(e.text for e in events) == engine.decode(tokens(events))
        assert [e.finish_reason for e in events[:-1]] == [None] * (len(events) - 1)
        assert events[-1].finish_reason in ("stop", "length")
        assert all(e.logprob is None and e.top_logprobs is None for e in events)


async def test_sixteen_streams_each_get_their_own_tokens(engine: Engine) -> None:
    prompts = [engine.encode_prompt(" ".join(WORDS[: i % 9 + 1]) + f" {i}") for i in range(16)]
    params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    alone = [await run(engine, ids, params, f"alone-{i}") for i, ids in enumerate(prompts)]
    together = await asyncio.gather(
        *(run(engine, ids, params, f"together-{i}") for i, ids in enumerate(prompts))
    )
    assert [tokens(t) for t in together] == [tokens(a) for a in alone]
    assert [[e.text for e in t] for t in together] == [[e.text for e in a] for a in alone]
    # Different prompts gave different outputs, so a mix-up between streams would show.
    assert len({tuple(tokens(a)) for a in alone}) > 8


async def test_a_request_joins_a_running_batch(
    engine: Engine, reference: Callable[..., list[int]]
) -> None:
    long_ids, short_ids = engine.encode_prompt(PROMPTS[1]), engine.encode_prompt(PROMPTS[0])
    long_params = SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True)
    short_params = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    long_events: list[TokenEvent] = []

    async def consume_long() -> None:
        async for event in engine.generate(long_ids, long_params, request_id="long"):
            long_events.append(event)

    long_task = asyncio.create_task(consume_long())
    await eventually(lambda: len(long_events) >= 5)
    short_events = await run(engine, short_ids, short_params, "short")
    # The short request joined, ran and left while the long one kept decoding.
    assert len(long_events) < long_params.max_tokens
    await long_task
    assert tokens(short_events) == reference(short_ids, 5, ignore_eos=True)
    assert tokens(long_events) == reference(long_ids, 60, ignore_eos=True)


async def test_rows_leaving_mid_batch_keep_the_others_tokens(
    engine: Engine, reference: Callable[..., list[int]]
) -> None:
    # The first ends first, then the third: each time a later row moves into the hole.
    lengths = [4, 40, 12, 30, 25]
    prompts = [engine.encode_prompt(PROMPTS[i % len(PROMPTS)] + f" {i}") for i in range(5)]
    results = await asyncio.gather(
        *(
            run(
                engine, ids, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True), f"m{i}"
            )
            for i, (ids, n) in enumerate(zip(prompts, lengths, strict=True))
        )
    )
    for ids, n, events in zip(prompts, lengths, results, strict=True):
        assert tokens(events) == reference(ids, n, ignore_eos=True)


async def test_a_failed_prefill_fails_only_the_newcomer(
    engine: Engine, reference: Callable[..., list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelhost.runtimes.llm.ragged import RaggedBatch

    long_ids, short_ids = engine.encode_prompt(PROMPTS[1]), engine.encode_prompt(PROMPTS[0])
    long_params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    step = RaggedBatch.step
    failed: list[int] = []

    def flaky(self: RaggedBatch, tokens: Any, prompts: Any, adapters: Any) -> Any:
        if tokens and prompts and not failed:
            failed.append(len(prompts))
            raise RuntimeError("out of memory")
        return step(self, tokens, prompts, adapters)

    long_events: list[TokenEvent] = []

    async def consume_long() -> None:
        async for event in engine.generate(long_ids, long_params, request_id="survivor"):
            long_events.append(event)

    long_task = asyncio.create_task(consume_long())
    await eventually(lambda: len(long_events) >= 3)
    monkeypatch.setattr(RaggedBatch, "step", flaky)
    with pytest.raises(errors.InferenceError, match="out of memory"):
        await run(engine, short_ids, GREEDY, "doomed")
    await long_task
    assert failed == [1]
    assert tokens(long_events) == reference(long_ids, 40, ignore_eos=True)
    await eventually(lambda: engine.stats["running"] == 0)


async def test_a_model_the_ragged_batch_does_not_fit_runs_padded(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A sliding window shorter than the context: prompts are prefilled apart, and each
    request still gets the tokens it gets alone."""
    import torch
    from fixtures import build_tiny_mistral
    from transformers import AutoModelForCausalLM

    folder = build_tiny_mistral(tmp_path_factory.mktemp("mistral"), sliding_window=6)
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    engine = Engine(folder, max_batch_size=4)
    await engine.start()
    try:
        assert engine.batching == "padded"
        params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
        prompts = [engine.encode_prompt(p) for p in PROMPTS]
        results = await asyncio.gather(
            *(run(engine, ids, params, f"padded-{i}") for i, ids in enumerate(prompts))
        )
    finally:
        await engine.stop()
    for ids, events in zip(prompts, results, strict=True):
        sequence = list(ids)
        with torch.inference_mode():
            for _ in range(params.max_tokens):
                sequence.append(int(model(torch.tensor([sequence])).logits[0, -1].argmax()))
        assert tokens(events) == sequence[len(ids) :]


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_leaving_a_stream_frees_its_slot(make_engine: MakeEngine, how: str) -> None:
    engine = await make_engine(max_batch_size=1, max_queue=4)
    ids = engine.encode_prompt(PROMPTS[0])
    first_events: list[TokenEvent] = []

    async def consume_first() -> None:
        async with aclosing(engine.generate(ids, LONG, request_id="first")) as stream:
            async for event in stream:
                first_events.append(event)
                if how == "aclose" and len(first_events) == 3:
                    await asyncio.sleep(0.05)  # the second request queues meanwhile
                    return

    first = asyncio.create_task(consume_first())
    await eventually(lambda: len(first_events) >= 1)
    second = asyncio.create_task(run(engine, ids, GREEDY, "second"))
    await eventually(lambda: engine.stats["waiting"] == 1)
    assert engine.stats["running"] == 1
    if how == "cancel":
        first.cancel()
    events = await asyncio.wait_for(second, 10)
    assert tokens(events) == tokens(await run(engine, ids, GREEDY, "again"))
    # The first request never ran to its 200 tokens: its slot was handed over.
    assert engine.stats["generation_tokens_total"] < LONG.max_tokens
    await asyncio.gather(first, return_exceptions=True)
    assert engine.stats["running"] == 0


async def test_a_full_queue_raises_engine_overloaded(make_engine: MakeEngine) -> None:
    engine = await make_engine(max_batch_size=1, max_queue=1)
    ids = engine.encode_prompt(PROMPTS[0])
    async with aclosing(engine.generate(ids, LONG, request_id="running")) as running:
        await anext(running)
        waiting = asyncio.create_task(run(engine, ids, GREEDY, "waiting"))
        await eventually(lambda: engine.stats["waiting"] == 1)
        with pytest.raises(EngineOverloaded) as info:
            await anext(engine.generate(ids, GREEDY, request_id="refused"))
        assert errors.http_status(info.value) == 429
        assert isinstance(info.value, errors.ModelhostError)
    assert (await waiting)[-1].finish_reason in ("stop", "length")


async def test_max_tokens_ends_with_length(engine: Engine) -> None:
    params = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    events = await run(engine, engine.encode_prompt(PROMPTS[2]), params, "length")
    assert len(events) == 5
    assert [e.finish_reason for e in events] == [None] * 4 + ["length"]


async def test_stop_string_ends_output_before_it(engine: Engine) -> None:
    ids = engine.encode_prompt(PROMPTS[0])
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    full = "".join(e.text for e in await run(engine, ids, params, "unstopped"))
    start = next(i for i in range(4, len(full) - 3) if "\ufffd" not in full[i : i + 3])
    stop = full[start : start + 3]
    expected = full[: full.find(stop)]
    events = await run(engine, ids, SamplingParams(**{**vars(params), "stop": (stop,)}), "stop")
    assert "".join(e.text for e in events) == expected
    assert events[-1].finish_reason == "stop"
    assert len(events) < params.max_tokens


async def test_eos_ends_with_stop_and_no_text(engine: Engine) -> None:
    # Greedy runs that end early ended on the end-of-sequence token.
    params = SamplingParams(max_tokens=40, temperature=0.0)
    for index in range(30):
        ids = engine.encode_prompt(" ".join(WORDS[: index % 10 + 1]) + f" {index}")
        events = await run(engine, ids, params, f"eos-{index}")
        if len(events) < params.max_tokens:
            break
    else:
        pytest.skip("no prompt reached the end-of-sequence token")
    assert events[-1].token_id in engine.eos_ids
    assert events[-1].finish_reason == "stop"
    assert events[-1].text == ""


async def test_seeded_sampling_is_reproducible(engine: Engine) -> None:
    ids = engine.encode_prompt(PROMPTS[1])
    seeded = SamplingParams(max_tokens=16, temperature=0.9, seed=1234, ignore_eos=True)
    alone = tokens(await run(engine, ids, seeded, "seed-alone"))
    # The same seed draws the same tokens while other requests share the batch.
    others = SamplingParams(max_tokens=16, temperature=1.0, ignore_eos=True)
    results = await asyncio.gather(
        run(engine, ids, seeded, "seed-together"),
        *(
            run(engine, engine.encode_prompt(p), others, f"noise-{i}")
            for i, p in enumerate(PROMPTS)
        ),
    )
    assert tokens(results[0]) == alone
    other_seed = SamplingParams(max_tokens=16, temperature=0.9, seed=4321, ignore_eos=True)
    assert tokens(await run(engine, ids, other_seed, "seed-other")) != alone


async def test_top_k_one_is_greedy(engine: Engine) -> None:
    ids = engine.encode_prompt(PROMPTS[3])
    greedy = await run(engine, ids, GREEDY, "greedy")
    top_one = SamplingParams(max_tokens=12, temperature=1.5, top_k=1, seed=9)
    assert tokens(await run(engine, ids, top_one, "top-1")) == tokens(greedy)


async def test_top_p_near_zero_is_greedy(engine: Engine) -> None:
    ids = engine.encode_prompt(PROMPTS[2])
    greedy = await run(engine, ids, GREEDY, "greedy")
    nucleus = SamplingParams(max_tokens=12, temperature=1.0, top_p=1e-6)
    assert tokens(await run(engine, ids, nucleus, "top-p")) == tokens(greedy)


async def test_frequency_penalty_changes_a_repetitive_output(engine: Engine) -> None:
    ids = engine.encode_prompt(PROMPTS[0])
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    plain = tokens(await run(engine, ids, params, "plain"))
    penalized_params = SamplingParams(**{**vars(params), "frequency_penalty": 2.0})
    penalized = tokens(await run(engine, ids, penalized_params, "penalized"))
    assert penalized != plain
    most_repeated = max(plain.count(t) for t in set(plain))
    assert max(penalized.count(t) for t in set(penalized)) <= most_repeated


async def test_logprobs_are_log_probabilities(engine: Engine) -> None:
    ids = engine.encode_prompt(PROMPTS[1])
    params = SamplingParams(max_tokens=6, temperature=0.0, logprobs=3, ignore_eos=True)
    events = await run(engine, ids, params, "logprobs")
    for event in events:
        assert event.logprob is not None
        assert event.top_logprobs is not None
        assert event.logprob <= 0.0
        assert len(event.top_logprobs) == 3
        values = [value for _, value in event.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-5
        # Greedy: the chosen token is the most likely one.
        assert values[0] == pytest.approx(event.logprob)
        assert event.top_logprobs[0][0] == engine.tokenizer.decode([event.token_id])
    chosen_only = SamplingParams(max_tokens=3, temperature=0.7, logprobs=0, seed=3)
    for event in await run(engine, ids, chosen_only, "logprob-0"):
        assert event.top_logprobs == []
        assert event.logprob is not None
        assert event.logprob <= 0.0


async def test_prompt_validation(engine: Engine) -> None:
    ids = engine.encode_prompt(PROMPTS[0])
    too_many = SamplingParams(max_tokens=engine.max_model_len)
    cases: list[tuple[Any, SamplingParams, str]] = [
        (ids, too_many, "max_tokens"),
        ([], GREEDY, "non-empty"),
        ([engine.vocab_size], GREEDY, "token ids"),
        (["a"], GREEDY, "token ids"),
    ]
    for prompt, params, words in cases:
        with pytest.raises(errors.InvalidInput, match=words):
            await anext(engine.generate(prompt, params, request_id="bad"))
    assert engine.stats["waiting"] == 0


async def test_stats_count_tokens(make_engine: MakeEngine) -> None:
    engine = await make_engine(max_batch_size=4)
    prompts = [engine.encode_prompt(p) for p in PROMPTS]
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    usage: list[float] = []

    async def watch() -> None:
        while True:
            usage.append(engine.stats["kv_cache_usage"])
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(
        *(run(engine, ids, params, f"stats-{i}") for i, ids in enumerate(prompts))
    )
    watcher.cancel()
    stats = engine.stats
    assert stats["prompt_tokens_total"] == sum(len(p) for p in prompts)
    assert stats["generation_tokens_total"] == sum(len(r) for r in results) == 80
    assert stats["running"] == 0
    assert stats["waiting"] == 0
    assert stats["kv_cache_usage"] == 0.0
    assert 0.0 < max(usage) <= 1.0


async def test_generate_needs_a_started_engine(tiny_llama: Path) -> None:
    engine = Engine(tiny_llama)
    ids = engine.encode_prompt("hello")
    with pytest.raises(errors.ServerNotReady):
        await anext(engine.generate(ids, GREEDY, request_id="early"))
    await engine.start()
    await engine.stop()
    with pytest.raises(errors.ServerNotReady):
        await anext(engine.generate(ids, GREEDY, request_id="late"))


async def test_stop_fails_unfinished_requests(make_engine: MakeEngine) -> None:
    engine = await make_engine(max_batch_size=1)
    ids = engine.encode_prompt(PROMPTS[0])

    async def first_then_rest(stream: AsyncIterator[TokenEvent]) -> None:
        async for _ in stream:
            pass

    stream = engine.generate(ids, LONG, request_id="cut")
    await anext(stream)
    queued = asyncio.create_task(run(engine, ids, GREEDY, "queued"))
    await eventually(lambda: engine.stats["waiting"] == 1)
    await engine.stop()
    with pytest.raises(errors.ServerNotReady):
        await first_then_rest(stream)
    with pytest.raises(errors.ServerNotReady):
        await queued


async def test_abort_by_request_id(engine: Engine) -> None:
    ids = engine.encode_prompt(PROMPTS[0])
    stream = engine.generate(ids, LONG, request_id="abort-me")
    await anext(stream)
    assert engine.abort("abort-me")
    assert not engine.abort("unknown")
    with pytest.raises(errors.InferenceError, match="aborted"):
        async for _ in stream:
            pass
    await eventually(lambda: engine.stats["running"] == 0)


def test_chat_template_and_special_tokens(engine: Engine) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    prompt = engine.apply_chat_template(messages)
    assert prompt == "<s><system>be brief\n<user>hi\n<assistant>"
    ids = engine.encode_prompt(prompt, add_special_tokens=False)
    assert ids.count(engine.tokenizer.bos_token_id) == 1
    assert engine.encode_prompt("hi")[0] == engine.tokenizer.bos_token_id
    with pytest.raises(errors.InvalidInput, match="messages"):
        engine.apply_chat_template([])
    with pytest.raises(errors.InvalidInput, match="role"):
        engine.apply_chat_template([{"content": "no role"}])


def test_embed_mean_pools_hidden_states(engine: Engine) -> None:
    vectors = engine.embed(["hello world", "one two three four", "hello world"])
    assert vectors.shape == (3, 64)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors[0], vectors[2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(vectors[0], vectors[1])
    assert engine.embed([]).shape == (0, 64)
