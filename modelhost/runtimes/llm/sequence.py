"""One request inside the engine: its tokens so far, and the events its tokens become.

The worker thread owns every field but ``cancelled``, which the event loop sets; events
cross back to the loop through ``deliver``. ``adapter`` names the LoRA adapter the request
runs with (``None``: the base model).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from collections.abc import Sequence as Tokens
from typing import TYPE_CHECKING

from modelhost.model.generation import FinishReason, SamplingParams, TokenEvent
from modelhost.runtimes.llm.text import Detokenizer, StopText

if TYPE_CHECKING:
    from modelhost.runtimes.llm.sampling import Choice, RowState

__all__ = ["Item", "Sequence", "deliver"]

# What a request's queue carries: its events, then an error if the engine failed it.
Item = TokenEvent | BaseException


class Sequence:
    """A request's state from the moment it is queued until its last event."""

    def __init__(
        self,
        request_id: str,
        prompt_ids: Tokens[int],
        params: SamplingParams,
        *,
        loop: asyncio.AbstractEventLoop,
        decode: Callable[[list[int]], str],
        eos_ids: frozenset[int],
        adapter: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.adapter = adapter
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.loop = loop
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.output_ids: list[int] = []
        self.finish_reason: FinishReason | None = None
        # Set by the event loop when the consumer goes away; the worker drops the sequence
        # before its next step.
        self.cancelled = False
        # Set by the worker when it fails the sequence (its adapter was unloaded).
        self.failed = False
        # Built by the worker when the sequence starts: it needs torch.
        self.sampling: RowState | None = None
        self._eos_ids = frozenset() if params.ignore_eos else eos_ids
        self._detokenizer = Detokenizer(decode, self.prompt_ids)
        self._stop = StopText(params.stop)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled or self.failed

    @property
    def last_token(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    def advance(self, choice: Choice) -> TokenEvent:
        """Take the sampled token; the event to stream for it, the last one when it ends."""
        token_id = choice.token_id
        self.output_ids.append(token_id)
        if token_id in self._eos_ids:
            self.finish_reason = "stop"
            text = self._final_text(self._detokenizer.flush())
        else:
            text, stopped = self._stop.push(self._detokenizer.push(token_id))
            if stopped:
                self.finish_reason = "stop"
            elif len(self.output_ids) >= self.params.max_tokens:
                self.finish_reason = "length"
                text += self._final_text(self._detokenizer.flush())
        return TokenEvent(
            token_id=token_id,
            text=text,
            logprob=choice.logprob,
            top_logprobs=choice.top_logprobs,
            finish_reason=self.finish_reason,
        )

    def _final_text(self, delta: str) -> str:
        # The held-back text may still complete a stop string, which then ends the output.
        text, stopped = self._stop.push(delta)
        if stopped:
            self.finish_reason = "stop"
            return text
        return text + self._stop.flush()


def deliver(batch: Tokens[tuple[Sequence, Item]]) -> None:
    """Hand each item to its request's queue; runs on the event loop."""
    for sequence, item in batch:
        sequence.queue.put_nowait(item)
