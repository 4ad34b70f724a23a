"""The ragged KV batch: prompts and decode steps in one forward compute what each sequence
alone would, through joins, moves, growth and failures; models it does not fit fall back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures import build_tiny_mistral

from modelhost.runtimes.llm.ragged import RaggedBatch

PROMPTS = [[1, 40, 41, 42, 43, 44, 45], [1, 50], [1, 60, 61, 62]]


@pytest.fixture
def model(tiny_llama: Path) -> Any:
    """A fresh copy per test: enabling the batch changes the model's attention."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()


@pytest.fixture(scope="module")
def stock(tiny_llama: Path) -> Any:
    """The same weights, never touched by the batch: the reference."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()


def alone(model: Any, ids: list[int]) -> Any:
    """Next-token logits for ``ids``, the whole sequence run without cache or padding."""
    import torch

    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0, -1]


def enabled(model: Any, max_columns: int = 256) -> RaggedBatch:
    import torch

    batch = RaggedBatch(model, torch.device("cpu"), max_rows=4, max_columns=max_columns)
    with torch.inference_mode():
        assert batch.enable(probe_token=5)
    assert model.config._attn_implementation == "modelhost_ragged"
    return batch


def check(stock: Any, logits: Any, sequences: list[list[int]]) -> None:
    """Each row's logits are its sequence's alone; then each takes its greedy token."""
    import torch

    assert logits.shape[0] == len(sequences)
    for row, ids in enumerate(sequences):
        torch.testing.assert_close(logits[row], alone(stock, ids), atol=1e-5, rtol=0)
        ids.append(int(logits[row].argmax()))


def test_prompts_join_decoding_rows_in_one_forward(model: Any, stock: Any) -> None:
    import torch

    batch = enabled(model)
    sequences = [list(p) for p in PROMPTS]
    with torch.inference_mode():
        check(stock, batch.step([], sequences[:2], [None, None]), sequences[:2])
        for _ in range(2):
            check(stock, batch.step([s[-1] for s in sequences[:2]], [], []), sequences[:2])
        # The third prompt starts in the same forward as the others' decode step.
        logits = batch.step([s[-1] for s in sequences[:2]], [sequences[2]], [None])
        check(stock, logits, sequences)
        assert batch.rows == 3
        # Each row caches all its tokens but the last, not yet fed.
        assert batch.cached_tokens == sum(len(s) - 1 for s in sequences)
        # The first leaves: the last row moves into its place.
        batch.keep([2, 1])
        sequences = [sequences[2], sequences[1]]
        for _ in range(3):
            check(stock, batch.step([s[-1] for s in sequences], [], []), sequences)
        batch.keep([])
        assert batch.rows == 0
        assert batch.cached_tokens == 0


def test_the_buffers_grow_past_their_first_size(model: Any, stock: Any) -> None:
    import torch

    batch = enabled(model)
    short = [1, 70, 71]
    long = [1, *(30 + i % 200 for i in range(90))]
    sequences = [short]
    with torch.inference_mode():
        check(stock, batch.step([], [short], [None]), sequences)
        # 91 columns: more than the 64 the buffers started with, while a row is cached.
        sequences.append(long)
        check(stock, batch.step([short[-1]], [long], [None]), sequences)
        for _ in range(3):
            check(stock, batch.step([s[-1] for s in sequences], [], []), sequences)


def test_a_failed_step_leaves_the_batch_as_it_was(model: Any, stock: Any) -> None:
    import torch

    batch = enabled(model)
    sequences = [list(PROMPTS[0])]
    with torch.inference_mode():
        check(stock, batch.step([], sequences, [None]), sequences)
        vocab = int(model.config.vocab_size)
        with pytest.raises(IndexError):
            batch.step([sequences[0][-1]], [[1, vocab + 5]], [None])
        assert batch.rows == 1
        check(stock, batch.step([sequences[0][-1]], [], []), sequences)


def test_outside_a_step_the_model_computes_as_before(model: Any, stock: Any) -> None:
    """Other callers of the model (embeddings, padded batches) get the stock attention."""
    import torch

    enabled(model)
    ids = torch.tensor([[0, 0, 1, 40, 41], [1, 50, 51, 52, 53]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.inference_mode():
        mine = model(input_ids=ids, attention_mask=mask).logits
        theirs = stock(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(mine[:, 2:], theirs[:, 2:], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("window", "fits"), [(None, True), (4096, True), (8, False)])
def test_a_sliding_window_shorter_than_the_context_does_not_fit(
    tmp_path: Path, window: int | None, fits: bool
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    folder = build_tiny_mistral(tmp_path / "mistral", sliding_window=window)
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    stock = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    batch = RaggedBatch(model, torch.device("cpu"), max_rows=4, max_columns=256)
    with torch.inference_mode():
        assert batch.enable(probe_token=5) is fits
        if not fits:
            # Given back as it was: the model's own attention, every position's logits.
            assert model.config._attn_implementation == "sdpa"
            ids = torch.tensor([[1, *range(40, 60)]])
            torch.testing.assert_close(model(ids).logits, stock(ids).logits, atol=1e-6, rtol=0)
            return
        sequences = [[1, *range(40, 52)], [1, 60, 61]]
        check(stock, batch.step([], sequences, [None, None]), sequences)
        check(stock, batch.step([s[-1] for s in sequences], [], []), sequences)
