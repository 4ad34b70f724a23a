"""One request's generations: ``n`` choices per prompt, run at once, merged into one stream.

Each choice is one ``GenerativeModel.generate`` call (the engine batches them with every
other request's), observed for the metrics and passed through the output guardrails. The
merged stream yields :class:`Piece` objects in the order tokens arrive, and only once every
choice has started, so that an error a choice meets on its first step (a full queue, a
prompt too long) fails the whole request before anything is sent. Closing the stream (or
cancelling the task reading it) closes every model generator under it: their slots free.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from modelhost.model.generation import GenerativeModel, SamplingParams, TokenEvent
from modelhost.server.openai.errors import ContentFiltered
from modelhost.server.openai.guardrails import GuardrailChain
from modelhost.server.openai.metrics import LLMMetrics

__all__ = ["Job", "Piece", "Run", "request_id"]


def request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Job:
    """One choice to generate: its index in the response, its prompt and its sampling."""

    index: int
    prompt_ids: list[int]
    params: SamplingParams


@dataclass(slots=True)
class Piece:
    """What one token adds to choice ``index``: text (after guardrails), the token's event
    (None for a closing piece of text), and the finish reason on the choice's last piece."""

    index: int
    text: str
    event: TokenEvent | None
    finish_reason: str | None = None


class Run:
    """The generations of one request over one model (and adapter)."""

    def __init__(
        self,
        model: GenerativeModel,
        adapter: str | None,
        jobs: Sequence[Job],
        *,
        request_id: str,
        metrics: LLMMetrics,
        started: float,
        guardrails: GuardrailChain,
        prompt_tokens: int,
    ) -> None:
        self.model = model
        self.adapter = adapter
        self.jobs = list(jobs)
        self.request_id = request_id
        self.metrics = metrics
        self.started = started
        self.guardrails = guardrails
        # Usage counts each prompt once, however many choices it has (OpenAI's rule).
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0

    async def pieces(self) -> AsyncGenerator[Piece, None]:
        """Every choice's pieces, merged; raises what any choice raises."""
        if len(self.jobs) == 1:
            async with contextlib.aclosing(self._choice(self.jobs[0])) as pieces:
                async for piece in pieces:
                    yield piece
            return
        queue: asyncio.Queue[Piece | BaseException | int] = asyncio.Queue()

        async def pump(job: Job) -> None:
            try:
                async with contextlib.aclosing(self._choice(job)) as pieces:
                    async for piece in pieces:
                        queue.put_nowait(piece)
                queue.put_nowait(job.index)
            except Exception as exc:
                queue.put_nowait(exc)

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(pump(job)) for job in self.jobs]
        unstarted = {job.index for job in self.jobs}
        held: list[Piece] = []
        running = len(tasks)
        try:
            while running:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, int):
                    running -= 1
                    unstarted.discard(item)
                else:
                    unstarted.discard(item.index)
                    held.append(item)
                if not unstarted:
                    for piece in held:
                        yield piece
                    held.clear()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _choice(self, job: Job) -> AsyncGenerator[Piece, None]:
        observer = self.metrics.observer(self.model.name, self.started, len(job.prompt_ids))
        stream = self.guardrails.output_stream() if self.guardrails else None
        events = self.model.generate(
            job.prompt_ids,
            job.params,
            request_id=f"{self.request_id}-{job.index}",
            adapter=self.adapter,
        )
        finish: str | None = None
        try:
            async for event in events:
                observer.token()
                self.completion_tokens += 1
                text = event.text
                finish = event.finish_reason
                if stream is not None:
                    try:
                        text = await stream.push(text)
                        if finish is not None:
                            text += await stream.finish()
                    except ContentFiltered:
                        finish = "content_filter"
                        yield Piece(job.index, "", event, finish)
                        break
                yield Piece(job.index, text, event, finish)
                if finish is not None:
                    break
            if finish is None:
                # The model ended without a reason, which its contract rules out: call it a stop.
                finish = "stop"
                tail = await stream.finish() if stream is not None else ""
                yield Piece(job.index, tail, None, finish)
        finally:
            # Frees the engine's slot now, not when the garbage collector gets to it.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        observer.finished(finish)
