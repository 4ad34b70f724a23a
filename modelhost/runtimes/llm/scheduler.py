"""The decode loop: one thread that admits, prefills, steps and retires sequences.

Each turn of the loop, in order: drop the sequences that finished or were cancelled (their
rows leave the batch before the next step), admit waiting ones up to ``max_batch_size``,
then run one forward that starts the newcomers' prompts and takes one decode step for
every running sequence (``ragged.RaggedBatch``); its events go to the event loop right
after. A model the ragged batch does not fit runs on ``batch.KVBatch`` instead, where
newcomers are prefilled in forwards of their own before the decode step, each with its
events sent at once. The event loop never runs the model: it queues, cancels
and reads counters. Work that changes the model (loading a LoRA adapter) is handed to the
worker with ``call`` and runs between two turns, never during a forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import torch

from modelhost import errors
from modelhost.model.generation import EngineOverloaded
from modelhost.runtimes.llm.batch import KVBatch
from modelhost.runtimes.llm.lora import Adapters
from modelhost.runtimes.llm.ragged import RaggedBatch
from modelhost.runtimes.llm.sampling import choose, new_row_state
from modelhost.runtimes.llm.sequence import Item, Sequence, deliver

__all__ = ["Scheduler"]

logger = logging.getLogger("modelhost.runtimes.llm")

T = TypeVar("T")


class Scheduler:
    """Owns the running batch; every method but the worker's is safe from the event loop."""

    def __init__(
        self,
        model: Any,
        *,
        device: torch.device,
        pad_id: int,
        vocab_size: int,
        token_text: Callable[[int], str],
        max_batch_size: int,
        max_queue: int,
        max_prefill_tokens: int,
        max_model_len: int,
        adapters: Adapters | None = None,
    ) -> None:
        self._batch = KVBatch(model, device, pad_id, adapters)
        self._ragged = RaggedBatch(model, device, max_batch_size, max_model_len, adapters)
        self._fused = False  # whether steps run on the ragged batch; set by ``probe``
        self._adapters = adapters
        self._device = device
        self._vocab_size = vocab_size
        self._token_text = token_text
        self._max_batch_size = max_batch_size
        self._max_queue = max_queue
        self._max_prefill_tokens = max_prefill_tokens
        self._capacity = max_batch_size * max_model_len
        self._cond = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._admitting = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.kv_cache_usage = 0.0

    # -- from the event loop ------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._running) + self._admitting

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def probe(self, token_id: int) -> None:
        """Pick the ragged batch if it fits the model; else check the padded one does, so a
        model whose cache cannot be batched at all fails at load time."""
        with torch.inference_mode():
            self._fused = self._ragged.enable(token_id)
            if not self._fused:
                logger.info(
                    "The LLM engine prefills newcomers apart from the decode step: the "
                    "ragged batch does not fit this model's attention."
                )
                self._batch.prefill([[token_id]])

    @property
    def fused(self) -> bool:
        """Whether prompts start within the decode step (the ragged batch)."""
        return self._fused

    @property
    def started(self) -> bool:
        """Whether the worker runs and takes work (false after a fork: no thread survives it)."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping

    def start(self) -> None:
        """Start the worker if it is not running; cheap when it is."""
        if self.started:
            return
        previous = self._thread
        if previous is not None and previous.is_alive():
            # A stop that did not wait: its last step must end before another worker begins.
            previous.join()
        with self._cond:
            if self.started:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="modelhost-llm", daemon=True)
            self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Finish the current step, then fail whatever is still queued or running.

        Blocks until the worker is gone unless ``wait`` is False (the worker then ends on
        its own, right after its current step).
        """
        with self._cond:
            thread = self._thread
            if thread is None:
                return
            self._stopping = True
            self._cond.notify()
        if wait and thread is not threading.current_thread():
            thread.join()
            with self._cond:
                if self._thread is thread:
                    self._thread = None

    def call(self, function: Callable[[], T]) -> Future[T]:
        """Run ``function`` on the worker between two turns; its result or error in a future."""
        future: Future[T] = Future()
        with self._cond:
            if not self.started:
                raise errors.ServerNotReady("The LLM engine is not running.")
            self._calls.append((function, future))
            self._cond.notify()
        return future

    def fail_where(self, condition: Callable[[Sequence], bool], exc: errors.ModelhostError) -> None:
        """Fail the waiting and running sequences ``condition`` picks; on the worker only."""
        with self._cond:
            waiting = [s for s in self._waiting if condition(s)]
            for sequence in waiting:
                self._waiting.remove(sequence)
        running = [s for s in self._running if condition(s) and not s.done]
        for sequence in running:
            sequence.failed = True
        self._retire()
        self._send([(s, exc) for s in [*waiting, *running]])

    def submit(self, sequence: Sequence) -> None:
        with self._cond:
            if not self.started:
                raise errors.ServerNotReady("The LLM engine is not running.")
            if len(self._waiting) >= self._max_queue:
                raise EngineOverloaded(
                    f"The LLM engine is busy: {len(self._waiting)} requests are already "
                    "waiting; retry later."
                )
            self._waiting.append(sequence)
            self._cond.notify()

    def cancel(self, sequence: Sequence) -> None:
        """Forget the sequence: a waiting one at once, a running one before the next step."""
        sequence.cancelled = True
        with self._cond:
            with contextlib.suppress(ValueError):
                self._waiting.remove(sequence)
            self._cond.notify()

    # -- on the worker thread -----------------------------------------------------------------

    def _run(self) -> None:
        # inference_mode is per thread: set here, not by the caller.
        with torch.inference_mode():
            while True:
                try:
                    if not self._turn():
                        break
                except Exception as exc:
                    # A bug here must not leave requests waiting on a dead thread forever.
                    logger.exception("The LLM engine's decode loop failed.")
                    self._fail_all(_inference_error(exc))
        self._fail_all(errors.ServerNotReady("The LLM engine stopped."))

    def _turn(self) -> bool:
        """One turn: run calls, retire, admit and prefill, decode a step; False once stopping."""
        with self._cond:
            while not (self._stopping or self._waiting or self._running or self._calls):
                self._cond.wait()
            if self._stopping:
                return False
            calls = list(self._calls)
            self._calls.clear()
        if calls:
            self._run_calls(calls)
        self._retire()
        with self._cond:
            joining = self._admit()
            self._admitting = len(joining)
        joining = self._check_adapters([s for s in joining if not s.cancelled])
        if self._fused:
            try:
                if joining or self._running:
                    self._step(joining)
            finally:
                self._admitting = 0
            return True
        try:
            for group in self._prefill_groups(joining):
                self._prefill(group)
        finally:
            self._admitting = 0
        if self._running:
            self._decode()
        return True

    def _admit(self) -> list[Sequence]:
        """Waiting sequences for the free rows; on the ragged batch, within the prefill budget."""
        free = self._max_batch_size - len(self._running)
        joining: list[Sequence] = []
        tokens = 0
        while self._waiting and len(joining) < free:
            size = len(self._waiting[0].prompt_ids)
            if self._fused and joining and tokens + size > self._max_prefill_tokens:
                break
            tokens += size
            joining.append(self._waiting.popleft())
        return joining

    def _run_calls(self, calls: list[tuple[Callable[[], Any], Future[Any]]]) -> None:
        # Outside inference mode: what a call builds (an adapter's weights) must be a plain
        # tensor, usable by a later call that loads into it.
        with torch.inference_mode(False):
            for function, future in calls:
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(function())
                except BaseException as exc:
                    future.set_exception(exc)

    def _check_adapters(self, joining: list[Sequence]) -> list[Sequence]:
        """The sequences whose adapter is still loaded; the others fail with a 404."""
        adapters = self._adapters
        gone = [
            s
            for s in joining
            if s.adapter is not None and (adapters is None or s.adapter not in adapters)
        ]
        if not gone:
            return joining
        self._admitting -= len(gone)
        self._send([(s, errors.ModelNotFound(str(s.adapter))) for s in gone])
        return [s for s in joining if s not in gone]

    def _prefill_groups(self, joining: list[Sequence]) -> list[list[Sequence]]:
        """Consecutive groups whose left-padded prompts stay within the prefill budget."""
        groups: list[list[Sequence]] = []
        group: list[Sequence] = []
        for sequence in joining:
            width = max([len(sequence.prompt_ids), *(len(s.prompt_ids) for s in group)])
            if group and width * (len(group) + 1) > self._max_prefill_tokens:
                groups.append(group)
                group = []
            group.append(sequence)
        if group:
            groups.append(group)
        return groups

    def _prefill(self, group: list[Sequence]) -> None:
        try:
            for sequence in group:
                sequence.sampling = new_row_state(sequence.params, self._vocab_size, self._device)
            prefill = self._batch.prefill([s.prompt_ids for s in group], [s.adapter for s in group])
            choices = choose(prefill.logits, [_state(s) for s in group], self._token_text)
        except Exception as exc:
            logger.exception("The LLM engine failed to prefill %d request(s).", len(group))
            self._admitting -= len(group)
            self._send([(s, _inference_error(exc)) for s in group])
            return
        self._batch.join(prefill)
        self._running.extend(group)
        self._admitting -= len(group)
        self.prompt_tokens_total += sum(len(s.prompt_ids) for s in group)
        self._emit(group, choices)

    def _step(self, joining: list[Sequence]) -> None:
        """One forward on the ragged batch: the newcomers' prompts and everyone's next token."""
        running = self._running
        try:
            for sequence in joining:
                sequence.sampling = new_row_state(sequence.params, self._vocab_size, self._device)
            logits = self._ragged.step(
                [s.last_token for s in running],
                [s.prompt_ids for s in joining],
                [s.adapter for s in joining],
            )
        except Exception as exc:
            if not joining:
                logger.exception(
                    "The LLM engine failed a decode step of %d requests.", len(running)
                )
                self._fail_running(exc)
                return
            # The batch is as it was: fail the newcomers, whose prompts may be the cause,
            # and step the others without them.
            logger.exception("The LLM engine failed to prefill %d request(s).", len(joining))
            self._admitting -= len(joining)
            self._send([(s, _inference_error(exc)) for s in joining])
            if running:
                self._step([])
            return
        sequences = [*running, *joining]
        self._running = sequences
        self._admitting -= len(joining)
        self.prompt_tokens_total += sum(len(s.prompt_ids) for s in joining)
        try:
            choices = choose(logits, [_state(s) for s in sequences], self._token_text)
        except Exception as exc:
            logger.exception("The LLM engine failed to sample for %d requests.", len(sequences))
            self._fail_running(exc)
            return
        self._emit(sequences, choices)

    def _fail_running(self, exc: Exception) -> None:
        running = self._running
        self._batch.clear()
        self._ragged.clear()
        self._running = []
        self.kv_cache_usage = 0.0
        self._send([(s, _inference_error(exc)) for s in running])

    def _decode(self) -> None:
        running = self._running
        try:
            logits = self._batch.step([s.last_token for s in running])
            choices = choose(logits, [_state(s) for s in running], self._token_text)
        except Exception as exc:
            logger.exception("The LLM engine failed a decode step of %d requests.", len(running))
            self._fail_running(exc)
            return
        self._emit(running, choices)

    def _emit(self, sequences: list[Sequence], choices: list[Any]) -> None:
        self.generation_tokens_total += len(sequences)
        events: list[tuple[Sequence, Item]] = [
            (s, s.advance(choice)) for s, choice in zip(sequences, choices, strict=True)
        ]
        # Retired first, so a client that sees its last event sees its slot free too.
        self._retire()
        self.kv_cache_usage = self._usage()
        self._send(events)

    def _retire(self) -> None:
        """Drop finished and cancelled sequences from the batch, before the next step."""
        alive = [not s.done for s in self._running]
        if all(alive):
            return
        order = _compaction(alive)
        if self._fused:
            self._ragged.keep(order)
        else:
            self._batch.keep(order)
        self._running = [self._running[i] for i in order]
        self.kv_cache_usage = self._usage()

    def _usage(self) -> float:
        """The cache's share of ``max_batch_size`` full-length sequences (the padded batch
        counts its padding)."""
        if self._fused:
            return self._ragged.cached_tokens / self._capacity
        return self._batch.rows * self._batch.columns / self._capacity

    def _fail_all(self, exc: errors.ModelhostError) -> None:
        with self._cond:
            pending = [*self._running, *self._waiting]
            self._waiting.clear()
            calls = list(self._calls)
            self._calls.clear()
        for _, future in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(exc)
        self._running = []
        self._batch.clear()
        self._ragged.clear()
        self.kv_cache_usage = 0.0
        self._send([(s, exc) for s in pending if not s.done])

    def _send(self, items: list[tuple[Sequence, Item]]) -> None:
        """Hand events to their event loops: one callback per loop per step."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Sequence, Item]]] = {}
        for sequence, item in items:
            if not sequence.cancelled:
                by_loop.setdefault(sequence.loop, []).append((sequence, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(deliver, batch)
            except RuntimeError:
                # The loop closed under a request nobody waits on any more.
                logger.debug("Dropped %d LLM events for a closed event loop.", len(batch))


def _compaction(alive: list[bool]) -> list[int]:
    """The rows to keep, in their new order: each survivor stays where it is, but for the
    last ones, which move into the holes (one row copied per hole, not every later row)."""
    kept = sum(alive)
    order = list(range(kept))
    holes = [i for i in range(kept) if not alive[i]]
    movers = [i for i in range(kept, len(alive)) if alive[i]]
    for hole, mover in zip(holes, movers, strict=True):
        order[hole] = mover
    return order


def _state(sequence: Sequence) -> Any:
    assert sequence.sampling is not None
    return sequence.sampling


def _inference_error(exc: Exception) -> errors.ModelhostError:
    if isinstance(exc, errors.ModelhostError):
        return exc
    return errors.InferenceError(f"Generation failed: {type(exc).__name__}: {exc}")
