"""The padded KV batch: rows joined, dropped and stepped compute what each sequence alone would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelhost.runtimes.llm.batch import KVBatch

PROMPTS = [[1, 40, 41, 42, 43, 44, 45], [1, 50], [1, 60, 61, 62]]


@pytest.fixture(scope="module")
def model(tiny_llama: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()


def alone(model: Any, ids: list[int]) -> Any:
    """Next-token logits for ``ids``, the whole sequence run without cache or padding."""
    import torch

    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0, -1]


def test_padded_prefill_join_keep_and_step(model: Any) -> None:
    import torch

    batch = KVBatch(model, torch.device("cpu"), pad_id=0)
    sequences = [list(p) for p in PROMPTS]
    with torch.inference_mode():
        first = batch.prefill(sequences[:2])
        for row, ids in enumerate(sequences[:2]):
            torch.testing.assert_close(first.logits[row], alone(model, ids), atol=1e-5, rtol=0)
            ids.append(int(first.logits[row].argmax()))
        batch.join(first)
        # Two steps of the first two rows, then a third sequence joins, shorter than both.
        for _ in range(2):
            logits = batch.step([s[-1] for s in sequences[:2]])
            for row, ids in enumerate(sequences[:2]):
                ids.append(int(logits[row].argmax()))
        third = batch.prefill([sequences[2]])
        sequences[2].append(int(third.logits[0].argmax()))
        batch.join(third)
        assert batch.rows == 3
        for _ in range(3):
            logits = batch.step([s[-1] for s in sequences])
            for row, ids in enumerate(sequences):
                torch.testing.assert_close(logits[row], alone(model, ids), atol=1e-5, rtol=0)
                ids.append(int(logits[row].argmax()))
        # The longest row leaves: the padding only it needed is cut off.
        # Each sequence's last token is not in the cache yet.
        assert batch.columns == len(sequences[0]) - 1
        batch.keep([1, 2])
        sequences = sequences[1:]
        assert batch.rows == 2
        assert batch.columns == max(len(s) for s in sequences) - 1 < len(PROMPTS[0]) + 5
        logits = batch.step([s[-1] for s in sequences])
        for row, ids in enumerate(sequences):
            torch.testing.assert_close(logits[row], alone(model, ids), atol=1e-5, rtol=0)
        batch.keep([])
        assert batch.rows == 0
        assert batch.columns == 0
