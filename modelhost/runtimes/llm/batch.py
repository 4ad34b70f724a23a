"""The padded fallback batch: one left-padded row per sequence, grown a column per step.

The engine runs on ``ragged.RaggedBatch``; this batch serves the models that one does not
fit (attention it cannot reproduce, such as a sliding window shorter than the context).

Continuous batching on a stock ``transformers`` model, without paged attention: the batch
keeps one ``DynamicCache`` whose rows are the running sequences, left-padded to the longest,
with a 2-D attention mask that hides the padding and explicit position ids, so each row
computes exactly what it would alone. New sequences are prefilled together (left-padded
among themselves) and their cache rows concatenated in; finished ones are dropped with an
``index_select``, and padding columns no row needs any more are cut off.

The cost: a join or a leave copies the whole cache once (each step already copies it, as
``DynamicCache`` grows by concatenation), and a short sequence next to a long one attends
over (masked) padding. A paged cache would avoid both; this keeps the model untouched.

Each row also names its LoRA adapter (``None`` for the base model); ``lora.Adapters`` turns
the rows' names into the module to run and ``peft``'s per-row ``adapter_names``, so rows of
different adapters share one forward.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from modelhost import errors
from modelhost.runtimes.llm.lora import Adapters

__all__ = ["KVBatch", "Prefill"]


class Prefill:
    """What a prefill produced: last-position logits and a left-padded cache to join."""

    def __init__(
        self, logits: torch.Tensor, cache: Any, mask: torch.Tensor, adapters: list[str | None]
    ) -> None:
        self.logits = logits
        self.cache = cache
        self.mask = mask
        self.adapters = adapters


class KVBatch:
    """The cache rows of the running sequences, in the order the scheduler keeps them."""

    def __init__(
        self, model: Any, device: torch.device, pad_id: int, adapters: Adapters | None = None
    ) -> None:
        self._model = model
        self._adapters = adapters
        self._device = device
        self._pad_id = pad_id
        parameters = inspect.signature(model.forward).parameters
        # transformers 5 renamed past_key_values to cache.
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"
        self._keeps_logits = "logits_to_keep" in parameters
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # [rows, columns], 1 where a token is
        self._lengths: torch.Tensor | None = None  # [rows]: real tokens in each row
        self._rows: list[str | None] = []  # each row's adapter

    @property
    def rows(self) -> int:
        return 0 if self._mask is None else int(self._mask.shape[0])

    @property
    def columns(self) -> int:
        return 0 if self._mask is None else int(self._mask.shape[1])

    def prefill(
        self, prompts: Sequence[Sequence[int]], adapters: Sequence[str | None] | None = None
    ) -> Prefill:
        """Run the prompts through the model together, left-padded to the longest."""
        from transformers import DynamicCache

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        # No config: every layer a plain DynamicLayer, which rows can be cut from and
        # padded; a sliding-window layer's window then lives in the mask alone.
        cache = DynamicCache()
        rows: list[str | None] = list(adapters) if adapters is not None else [None] * len(prompts)
        logits, cache = self._forward(ids, mask, positions, cache, rows, last_only=True)
        _check_cache(cache)
        return Prefill(logits, cache, mask, rows)

    def join(self, prefill: Prefill) -> None:
        """Append the prefilled sequences as the batch's last rows."""
        lengths = prefill.mask.sum(dim=-1)
        if self._cache is None or self._mask is None or self._lengths is None:
            self._cache, self._mask, self._lengths = prefill.cache, prefill.mask, lengths
            self._rows = list(prefill.adapters)
            return
        width = max(self.columns, int(prefill.mask.shape[1]))
        for mine, theirs in zip(self._cache.layers, prefill.cache.layers, strict=True):
            mine.keys = torch.cat([_pad_kv(mine.keys, width), _pad_kv(theirs.keys, width)])
            mine.values = torch.cat([_pad_kv(mine.values, width), _pad_kv(theirs.values, width)])
        self._mask = torch.cat([_pad_mask(self._mask, width), _pad_mask(prefill.mask, width)])
        self._lengths = torch.cat([self._lengths, lengths])
        self._rows.extend(prefill.adapters)

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows, in this order; cut the padding no row needs any more."""
        if self._mask is None or self._lengths is None or list(rows) == list(range(self.rows)):
            return
        if not rows:
            self.clear()
            return
        index = torch.tensor(list(rows), dtype=torch.long, device=self._device)
        mask = self._mask.index_select(0, index)
        start = int(mask.any(dim=0).long().argmax())
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[..., start:, :]
            layer.values = layer.values.index_select(0, index)[..., start:, :]
        self._mask = mask[:, start:]
        self._lengths = self._lengths.index_select(0, index)
        self._rows = [self._rows[row] for row in rows]

    def clear(self) -> None:
        self._cache = self._mask = self._lengths = None
        self._rows = []

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        """Feed each row its last token; the next-token logits, ``[rows, vocab]``."""
        if self._mask is None or self._lengths is None:
            raise errors.InferenceError("A decode step ran on an empty batch.")
        ids = torch.tensor(tokens, dtype=torch.long, device=self._device)[:, None]
        ones = torch.ones((self.rows, 1), dtype=torch.long, device=self._device)
        mask = torch.cat([self._mask, ones], dim=1)
        logits, self._cache = self._forward(
            ids, mask, self._lengths[:, None], self._cache, self._rows, last_only=False
        )
        self._mask = mask
        self._lengths = self._lengths + 1
        return logits

    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        rows: Sequence[str | None],
        *,
        last_only: bool,
    ) -> tuple[torch.Tensor, Any]:
        options: dict[str, Any]
        model, options = self._model, {}
        if self._adapters is not None:
            model, options = self._adapters.route(rows)
        # The base model's argument names: peft's wrapper passes them on as they are.
        options[self._cache_arg] = cache
        if last_only and self._keeps_logits:
            options["logits_to_keep"] = 1
        output = model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **options
        )
        cache = getattr(output, "cache", None)
        if cache is None:
            cache = getattr(output, "past_key_values", None)
        return output.logits[:, -1, :], cache


def _pad_kv(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - int(tensor.shape[-2])
    return F.pad(tensor, (0, 0, missing, 0)) if missing else tensor


def _pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - int(mask.shape[-1])
    return F.pad(mask, (missing, 0)) if missing else mask


def _check_cache(cache: Any) -> None:
    """Refuse a model whose cache is not one plain key/value tensor pair per layer."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None) or []
    plain = bool(layers) and all(
        type(layer) is DynamicLayer and isinstance(getattr(layer, "keys", None), torch.Tensor)
        for layer in layers
    )
    if not plain:
        raise errors.Unsupported(
            f"The LLM engine batches plain key/value caches; this model keeps a "
            f"{type(cache).__name__} it cannot batch (recurrent or shared-KV layers)."
        )
