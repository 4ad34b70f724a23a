"""Next-token choice for each row of a batch of logits, with each request's own settings.

Greedy rows take one batched ``argmax``; only sampled rows go through temperature, top-k,
top-p and ``torch.multinomial`` with the request's own ``torch.Generator``, so a seeded
request draws the same tokens whatever else shares the batch. Log probabilities are the
model's own (before penalties and temperature), as vLLM reports them by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from modelhost.model.generation import SamplingParams

__all__ = ["Choice", "RowState", "choose", "new_row_state"]


@dataclass
class RowState:
    """What sampling needs of one sequence: its settings, random stream and token counts."""

    params: SamplingParams
    generator: torch.Generator
    # Occurrences of each token in the output so far; only kept when a penalty asks for it.
    counts: torch.Tensor | None = None

    def record(self, token_id: int) -> None:
        if self.counts is not None:
            self.counts[token_id] += 1


@dataclass(frozen=True)
class Choice:
    token_id: int
    logprob: float | None
    top_logprobs: list[tuple[str, float]] | None


def new_row_state(params: SamplingParams, vocab_size: int, device: torch.device) -> RowState:
    generator = torch.Generator(device=device)
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)
    counts = torch.zeros(vocab_size, device=device) if params.penalized else None
    return RowState(params=params, generator=generator, counts=counts)


def choose(
    logits: torch.Tensor, rows: Sequence[RowState], token_text: Callable[[int], str]
) -> list[Choice]:
    """One token per row of ``logits`` (``[rows, vocab]``), with log probabilities if asked."""
    logits = logits.float()
    picks = logits.argmax(dim=-1).tolist()
    for index, row in enumerate(rows):
        params = row.params
        if params.greedy and not params.penalized:
            continue
        scores = _penalized(logits[index], row)
        picks[index] = int(scores.argmax()) if params.greedy else _sample(scores, row)
    logprobs = None
    if any(row.params.logprobs is not None for row in rows):
        logprobs = torch.log_softmax(logits, dim=-1)
    choices = []
    for index, row in enumerate(rows):
        token_id = int(picks[index])
        row.record(token_id)
        wanted = row.params.logprobs
        if logprobs is None or wanted is None:
            choices.append(Choice(token_id, None, None))
            continue
        own = logprobs[index]
        top: list[tuple[str, float]] = []
        if wanted:
            values, ids = own.topk(wanted)
            top = [(token_text(i), v) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
        choices.append(Choice(token_id, float(own[token_id]), top))
    return choices


def _penalized(scores: torch.Tensor, row: RowState) -> torch.Tensor:
    if row.counts is None:
        return scores
    params = row.params
    seen = (row.counts > 0).to(scores.dtype)
    return scores - params.presence_penalty * seen - params.frequency_penalty * row.counts


def _sample(scores: torch.Tensor, row: RowState) -> int:
    params = row.params
    scores = scores / params.temperature
    if params.top_k > 0 and params.top_k < scores.numel():
        kth = scores.topk(params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = scores.sort(descending=True)
        probabilities = ordered.softmax(dim=-1)
        # Drop a token when the ones before it already reach top_p; the first always stays.
        drop = (probabilities.cumsum(dim=-1) - probabilities) >= params.top_p
        drop[0] = False
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probabilities = scores.softmax(dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=row.generator))
