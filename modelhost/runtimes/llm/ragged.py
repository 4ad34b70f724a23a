"""The running batch as ragged rows of a preallocated KV cache: prompts and decode in one forward.

``batch.KVBatch`` keeps the stock ``DynamicCache``: it grows by concatenation, so every step
copies the whole cache, every join and leave copies it again, and each newcomer's prompt
needs a forward of its own that stalls everyone's decoding. Here each running sequence
owns a row of per-layer key/value buffers allocated once (grown by doubling when a longer
sequence arrives): a step writes each new token's keys and values in place, at its row and
position, and a leaving sequence's row is filled by moving one other row into it.

A step feeds the model every new token of the batch as one flat list, ``[tokens, 1]``: one
token per decoding row, then each newcomer's whole prompt. The linear layers, where the
time goes, see one matrix of all of them, so a prompt rides along with the decode step
instead of stalling it. Only attention needs to know which row a token belongs to: the
model's attention runs through ``_attention``, registered with ``transformers`` as the
model's implementation, which (inside a step on this thread, and only then) attends each
decoding row over its own cached prefix and each prompt causally over itself, both with
``transformers``' own SDPA function, the one the model uses alone. Each row's positions
are explicit, and a pre-hook on the output layer keeps only each row's last token, so the
vocabulary projection runs once per row. LoRA adapters still mix: ``peft`` takes one
adapter name per batch entry, here per token.

A model qualifies when its attention goes through ``AttentionInterface`` with SDPA and
nothing this path would ignore (logit soft-capping, attention sinks, a sliding window
shorter than ``max_model_len``); ``RaggedBatch.enable`` checks that on a few tokens
against the model's own stock forward at load time, and the engine falls back to
``KVBatch`` when it fails.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import torch

from modelhost import errors
from modelhost.runtimes.llm.lora import Adapters

__all__ = ["RaggedBatch"]

logger = logging.getLogger("modelhost.runtimes.llm")

_IMPLEMENTATION = "modelhost_ragged"
# The attention implementation the ragged path reproduces, and falls back to outside a step.
_BASE_IMPLEMENTATION = "sdpa"
# Attention arguments that carry nothing the ragged path could get wrong when they are set.
_HARMLESS = frozenset({"position_ids", "use_cache", "cache_position", "scaling"})
_MIN_COLUMNS = 64
# Where the worker thread publishes the step in flight to the attention function and the
# output hook; other threads (an embedding request) see none and run the stock path.
_LOCAL = threading.local()


class _Step:
    """What the cache, the attention function and the output hook need of the step in flight."""

    __slots__ = ("cache", "columns", "decoding", "last", "mask", "prompts", "rows", "span")

    def __init__(
        self,
        cache: _Cache,
        indices: torch.Tensor,
        tokens: int,
        decoding: int,
        span: int,
        mask: torch.Tensor | None,
        prompts: list[tuple[int, int, int]],
    ) -> None:
        self.cache = cache
        # ``indices`` is [positions | rows | last], built as one tensor: each token's column
        # (its position) and row in the cache, then each row's last token in the step.
        self.columns = indices[:tokens]
        self.rows = indices[tokens : 2 * tokens]
        self.last = indices[2 * tokens :]
        self.decoding = decoding  # the first ``decoding`` tokens are one per row 0, 1, ...
        self.span = span  # cached columns the decoding rows attend over
        self.mask = mask  # [decoding, 1, 1, span], None when every row spans them all
        self.prompts = prompts  # (row, first token, length) of each newcomer's prompt

    @property
    def tokens(self) -> int:
        return int(self.columns.shape[0])


class _Cache:
    """Per-layer key and value buffers, ``[rows, kv_heads, columns, head_dim]``.

    What the model calls ``update`` on: it writes the step's tokens at their rows and
    positions and hands the whole buffers to ``_attention``, which knows what to read.
    Buffers grow (doubling, up to ``max_columns``) when a step needs more columns.
    """

    def __init__(self, rows: int, max_columns: int) -> None:
        self.rows = rows
        self.max_columns = max_columns
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.needed = 0  # the columns the step in flight needs

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *_: Any,
        **__: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        step: _Step | None = getattr(_LOCAL, "step", None)
        if step is None or step.cache is not self:
            raise errors.Unsupported("The ragged KV cache was used outside a step.")
        if key_states.shape[0] != step.tokens or key_states.shape[2] != 1:
            raise errors.Unsupported("The model reshaped the ragged batch's tokens.")
        if layer_idx >= len(self.keys) or self.keys[layer_idx].shape[2] < self.needed:
            self._grow(layer_idx, key_states, value_states)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        # [tokens, heads, 1, dim] (one token per batch entry) to [tokens, heads, dim].
        keys[step.rows, :, step.columns] = key_states[:, :, 0]
        values[step.rows, :, step.columns] = value_states[:, :, 0]
        return keys, values

    def _grow(self, layer: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        while len(self.keys) <= layer:
            # Placeholders until the layer's first update says its shape.
            self.keys.append(key_states.new_zeros((0, 0, 0, 0)))
            self.values.append(value_states.new_zeros((0, 0, 0, 0)))
        for buffers, states in ((self.keys, key_states), (self.values, value_states)):
            old = buffers[layer]
            columns = min(max(_MIN_COLUMNS, self.needed, 2 * int(old.shape[2])), self.max_columns)
            columns = max(columns, self.needed)
            # Zeros, not empty: a masked column still goes through the softmax's product,
            # and a NaN left in memory there would poison the row.
            grown = states.new_zeros((self.rows, states.shape[1], columns, states.shape[-1]))
            if old.numel():
                grown[:, :, : old.shape[2]] = old
            buffers[layer] = grown

    def move(self, sources: list[int], targets: list[int], columns: int) -> None:
        """Copy rows ``sources`` over rows ``targets`` (their first ``columns`` only)."""
        if not sources or not self.keys:
            return
        # The buffers are inference tensors; a call between two turns (an adapter unloaded)
        # retires rows outside inference mode.
        with torch.inference_mode():
            device = self.keys[0].device
            index = torch.tensor(sources, device=device)
            target = torch.tensor(targets, device=device)
            for buffer in (*self.keys, *self.values):
                if buffer.numel():
                    # The right side is gathered into a new tensor first: overlaps are safe.
                    buffer[target, :, :columns] = buffer[index, :, :columns]


class RaggedBatch:
    """The cache rows of the running sequences, in the order the scheduler keeps them."""

    def __init__(
        self,
        model: Any,
        device: torch.device,
        max_rows: int,
        max_columns: int,
        adapters: Adapters | None = None,
    ) -> None:
        self._model = model
        self._adapters = adapters
        self._device = device
        # Two at least: enable's check runs two rows, whatever the engine's batch size.
        self._max_rows = max(max_rows, 2)
        self._cache = _Cache(self._max_rows, max_columns)
        self._lengths: list[int] = []  # tokens cached in each row
        self._rows: list[str | None] = []  # each row's adapter
        self._hook: Any = None
        self._ready = False
        self._cache_arg = "cache"
        self._mask: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return len(self._lengths)

    @property
    def adapters(self) -> list[str | None]:
        return list(self._rows)

    @property
    def cached_tokens(self) -> int:
        return sum(self._lengths)

    # -- set-up -------------------------------------------------------------------------------

    def enable(self, probe_token: int) -> bool:
        """Switch the model's attention to the ragged path if it computes what the model does.

        Runs three short steps against the model's stock forward; on any difference or
        error, restores the model as it was and returns False.
        """
        import inspect

        config: Any = getattr(self._model, "config", None)
        if getattr(config, "_attn_implementation", None) != _BASE_IMPLEMENTATION:
            return False
        parameters = inspect.signature(self._model.forward).parameters
        # transformers 5 renamed past_key_values to cache.
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"
        try:
            _register()
            self._model.set_attn_implementation(_IMPLEMENTATION)
            if config._attn_implementation != _IMPLEMENTATION:
                raise errors.Unsupported("the model kept its own attention implementation")
            head = self._model.get_output_embeddings()
            self._hook = head.register_forward_pre_hook(_keep_last_tokens)
            self._ready = True
            agrees = self._agrees(probe_token)
        except Exception as exc:
            logger.info("The ragged LLM batch does not fit this model: %s", exc)
            agrees = False
        self.clear()
        if not agrees:
            self.disable()
        return agrees

    def disable(self) -> None:
        """Give the model back its own attention."""
        self._ready = False
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        config = getattr(self._model, "config", None)
        if getattr(config, "_attn_implementation", None) == _IMPLEMENTATION:
            self._model.set_attn_implementation(_BASE_IMPLEMENTATION)

    def _agrees(self, token: int) -> bool:
        """Whether prompts and decode steps, alone and mixed, give the stock logits."""
        vocab = int(self._model.get_output_embeddings().weight.shape[0])
        first = [(token + i) % vocab for i in range(5)]
        second = [(token + 7 * i + 3) % vocab for i in range(3)]
        stock = self._stock
        checks = [(self.step([], [first], [None])[0], stock(first))]
        logits = self.step([token], [second], [None])
        checks += [(logits[0], stock([*first, token])), (logits[1], stock(second))]
        self.keep([1])
        checks.append((self.step([token], [], [])[0], stock([*second, token])))
        return all(_close(mine, theirs) for mine, theirs in checks)

    def _stock(self, ids: list[int]) -> torch.Tensor:
        """The model's own next-token logits for ``ids``, through its stock attention."""
        # Outside a step, _attention is the stock SDPA. Routed as a step's rows are: peft's
        # layers, once injected, would add the active adapter to an unrouted forward.
        model, options = self._model, dict[str, Any]()
        if self._adapters is not None:
            model, options = self._adapters.route([None])
        tensor = torch.tensor([ids], dtype=torch.long, device=self._device)
        logits: torch.Tensor = model(input_ids=tensor, use_cache=False, **options).logits[0, -1]
        return logits

    # -- the batch ----------------------------------------------------------------------------

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows, in this order, moving as few rows as that allows."""
        rows = list(rows)
        if rows == list(range(self.rows)):
            return
        if not rows:
            self.clear()
            return
        moves = [(source, target) for target, source in enumerate(rows) if source != target]
        columns = max((self._lengths[source] for source, _ in moves), default=0)
        self._cache.move([s for s, _ in moves], [t for _, t in moves], columns)
        self._lengths = [self._lengths[row] for row in rows]
        self._rows = [self._rows[row] for row in rows]

    def clear(self) -> None:
        """Forget every row; the buffers stay, for the next sequences."""
        self._lengths = []
        self._rows = []

    def step(
        self,
        tokens: Sequence[int],
        prompts: Sequence[Sequence[int]],
        adapters: Sequence[str | None],
    ) -> torch.Tensor:
        """Feed each row its last token and start each prompt as a new row, in one forward.

        Returns the next-token logits, ``[rows, vocab]``: the running rows', in order, then
        the newcomers'. Nothing changes when the forward fails.
        """
        if not self._ready:
            raise errors.InferenceError("The ragged batch is not enabled for this model.")
        decoding = len(tokens)
        if decoding != self.rows:
            raise errors.InferenceError(f"{decoding} tokens for a batch of {self.rows} rows.")
        if decoding + len(prompts) > self._max_rows:
            raise errors.InferenceError(f"More than {self._max_rows} rows in one batch.")
        ids = list(tokens)
        columns = list(self._lengths)
        rows = list(range(decoding))
        names = list(self._rows)
        spans: list[tuple[int, int, int]] = []
        last = list(range(decoding))
        for offset, (prompt, adapter) in enumerate(zip(prompts, adapters, strict=True)):
            row, size = decoding + offset, len(prompt)
            spans.append((row, len(ids), size))
            ids.extend(prompt)
            columns.extend(range(size))
            rows.extend([row] * size)
            names.extend([adapter] * size)
            last.append(len(ids) - 1)
        # Each decoding row attends over its cached tokens and the one it adds now.
        reach = [length + 1 for length in self._lengths]
        span = max(reach, default=0)
        count = len(ids)
        # One host-to-device copy for all of the step's indices.
        flat = self._tensor([*ids, *columns, *rows, *last, *reach])
        mask = None
        if reach and min(reach) != span:
            limits = flat[3 * count + len(last) :]
            mask = (torch.arange(span, device=self._device)[None, :] < limits[:, None])[
                :, None, None, :
            ]
        step = _Step(
            self._cache, flat[count : 3 * count + len(last)], count, decoding, span, mask, spans
        )
        self._cache.needed = max(span, max((len(p) for p in prompts), default=0))
        model, options = self._model, dict[str, Any]()
        if self._adapters is not None:
            # One adapter name per batch entry, here per token.
            model, options = self._adapters.route(names)
        options[self._cache_arg] = self._cache
        if self._mask is None:
            # A prepared 4-D mask skips the model's own mask building; _attention ignores it.
            self._mask = torch.zeros((1, 1, 1, 1), dtype=torch.bool, device=self._device)
        _LOCAL.step = step
        try:
            output = model(
                input_ids=flat[:count, None],
                position_ids=step.columns[:, None],
                attention_mask=self._mask,
                use_cache=True,
                **options,
            )
        finally:
            _LOCAL.step = None
        logits: torch.Tensor = output.logits[:, -1, :]
        if logits.shape[0] != len(last):
            raise errors.InferenceError("The model's output layer did not keep one token per row.")
        self._lengths = [*reach, *(len(p) for p in prompts)]
        self._rows.extend(adapters)
        return logits

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long).to(self._device, non_blocking=True)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(_IMPLEMENTATION, _attention)
    # Outside a step the model builds its masks as SDPA wants them.
    AttentionMaskInterface.register(_IMPLEMENTATION, sdpa_mask)


def _attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA over each row's own cache inside a step; the stock SDPA anywhere else."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    step: _Step | None = getattr(_LOCAL, "step", None)
    if step is None:
        result: tuple[torch.Tensor, None] = sdpa_attention_forward(
            module, query, key, value, attention_mask, **kwargs
        )
        return result
    ignored = [k for k, v in kwargs.items() if not _honoured(k, v, step.cache.max_columns)]
    if ignored or query.shape[0] != step.tokens or query.shape[2] != 1:
        raise errors.Unsupported(f"The ragged LLM batch cannot honour {sorted(ignored)}.")
    layer = getattr(module, "layer_idx", None)
    cache = step.cache
    if layer is None or key is not cache.keys[layer] or value is not cache.values[layer]:
        raise errors.Unsupported("The model did not attend over the ragged KV cache.")
    scaling = kwargs.get("scaling")
    outputs: list[torch.Tensor] = []
    rows = step.decoding
    if rows:
        # [rows, heads, 1, dim]: one query per row, over its own first ``span`` columns.
        out, _ = sdpa_attention_forward(
            module,
            query[:rows],
            key[:rows, :, : step.span],
            value[:rows, :, : step.span],
            step.mask,
            scaling=scaling,
        )
        outputs.append(out)
    for row, first, size in step.prompts:
        # [1, heads, size, dim]: the prompt's tokens, causally over themselves.
        prompt = query[first : first + size].permute(2, 1, 0, 3)
        out, _ = sdpa_attention_forward(
            module,
            prompt,
            key[row : row + 1, :, :size],
            value[row : row + 1, :, :size],
            None,
            scaling=scaling,
        )
        outputs.append(out.reshape(size, 1, *out.shape[2:]))
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs)), None


def _keep_last_tokens(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Inside a step, hand the output layer only each row's last token."""
    step: _Step | None = getattr(_LOCAL, "step", None)
    if step is None or not args or not isinstance(args[0], torch.Tensor):
        return None
    hidden = args[0]
    if hidden.shape[0] != step.tokens:
        return None
    return (hidden.index_select(0, step.last), *args[1:])


def _honoured(name: str, value: object, max_columns: int) -> bool:
    """Whether the ragged path computes what this attention argument asks for."""
    if name in _HARMLESS or value is None:
        return True
    if name == "is_causal":
        return value is True
    if name == "sliding_window":
        # A window that spans the longest sequence there can be never hides a token.
        return isinstance(value, int) and value >= max_columns
    # Anything else (soft-capping, sinks, dropout) only when it is off.
    return isinstance(value, (bool, int, float)) and not value


def _close(mine: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Equal but for rounding: batching changes the order of a sum, not its value."""
    relative = 1e-3 if theirs.dtype == torch.float32 else 2e-2
    mine, theirs = mine.float(), theirs.float()
    tolerance = relative * (float(theirs.abs().max()) + 1e-6)
    return bool((mine - theirs).abs().max() <= tolerance)
