"""Streamed text and request settings: incremental detokenization, stop strings, validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelhost import errors
from modelhost.runtimes.llm import SamplingParams
from modelhost.runtimes.llm.text import Detokenizer, StopText


@pytest.fixture(scope="module")
def tokenizer(tiny_llama: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama))


def test_detokenizer_releases_whole_characters_only(tokenizer: Any) -> None:
    text = "café 🙂 über, hello 🎉!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # The emoji are outside the training corpus: several byte tokens each.
    assert len(ids) > len(text.split())
    prompt = tokenizer("say:", add_special_tokens=True)["input_ids"]
    detokenizer = Detokenizer(lambda i: tokenizer.decode(i, skip_special_tokens=True), prompt)
    deltas = [detokenizer.push(i) for i in ids]
    deltas.append(detokenizer.flush())
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)
    # Some tokens ended mid-character and released nothing until the character completed.
    assert "" in deltas[:-1]


def test_detokenizer_flush_releases_an_incomplete_character(tokenizer: Any) -> None:
    ids = tokenizer("🙂", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1
    detokenizer = Detokenizer(lambda i: tokenizer.decode(i, skip_special_tokens=True), [])
    assert detokenizer.push(ids[0]) == ""
    assert detokenizer.flush() == tokenizer.decode(ids[:1])


def test_detokenizer_keeps_its_window_short(tokenizer: Any) -> None:
    ids = tokenizer("one two three four five " * 20, add_special_tokens=False)["input_ids"]
    decoded: list[int] = []

    def decode(window: list[int]) -> str:
        decoded.append(len(window))
        return str(tokenizer.decode(window))

    detokenizer = Detokenizer(decode, [])
    text = "".join(detokenizer.push(i) for i in ids)
    assert text == "one two three four five " * 20
    assert max(decoded) < 40


@pytest.mark.parametrize(
    ("deltas", "stops", "released", "stopped_at"),
    [
        (["hello", " wor", "ld"], ("world",), "hello ", 2),
        (["ab", "c", "d"], ("cd",), "ab", 2),
        # A partial match that does not complete is released when it stops matching.
        (["a", "b", "x", "cd"], ("abc", "cd"), "abx", 3),
        (["no stop here"], ("zzz",), "no stop here", None),
        (["x", "STOP", "y"], ("STOP",), "x", 1),
    ],
)
def test_stop_text(
    deltas: list[str], stops: tuple[str, ...], released: str, stopped_at: int | None
) -> None:
    stop_text = StopText(stops)
    out = []
    for index, delta in enumerate(deltas):
        text, stopped = stop_text.push(delta)
        out.append(text)
        if stopped:
            assert index == stopped_at
            break
    else:
        assert stopped_at is None
        out.append(stop_text.flush())
    assert "".join(out) == released


def test_stop_text_holds_back_only_a_possible_stop() -> None:
    stop_text = StopText(("</end>",))
    assert stop_text.push("text </e") == ("text ", False)
    assert stop_text.push("xtra") == ("</extra", False)
    assert stop_text.push("</") == ("", False)
    assert stop_text.flush() == "</"


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"seed": "7"}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"stop": ("",)}, "stop"),
        ({"stop": "abc"}, "stop"),
        ({"n": 2}, "n"),
        ({"n": 0}, "n"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"logprobs": 21}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"ignore_eos": "yes"}, "ignore_eos"),
    ],
)
def test_invalid_sampling_params_name_the_parameter(options: dict[str, Any], name: str) -> None:
    with pytest.raises(errors.InvalidInput) as info:
        SamplingParams(**options)
    assert str(info.value).startswith(name)
    assert errors.http_status(info.value) == 400


def test_valid_sampling_params() -> None:
    params = SamplingParams(max_tokens=3, temperature=0, top_k=-1, seed=-5, stop=("x",), logprobs=0)
    assert params.greedy
    assert not params.penalized
    assert SamplingParams(frequency_penalty=0.5).penalized
