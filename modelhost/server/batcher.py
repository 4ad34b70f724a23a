"""Adaptive batching: concurrent requests to one model run as one ``predict``.

Requests from v1, v2 REST and gRPC queue per model and per *shape key* (input names,
datatypes, trailing dimensions and model-visible parameters), so only requests that can
be stacked are stacked. A batch is cut when it holds ``max_batch_size`` rows, when
``max_latency_ms`` has passed since its first request, or at once when nothing else is
queued and the model is idle: under light load a request waits for nobody, under heavy
load the requests that arrive while a batch runs form the next one. Outputs are split
back along the first axis. When a batch fails, or its outputs cannot be split, each of
its requests is run alone, so one bad request fails only itself.

With batching on, ``predict`` always receives an ``InferRequest``: v1 ``instances`` that
form a numeric array arrive as its one input, ``input-0``, whether batched or alone, so a
model sees the same thing under any load. Other v1 payloads (dicts, strings) pass as sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import numpy as np
import numpy.typing as npt

from modelhost.model.model import Model
from modelhost.model.payload import get_predict_response
from modelhost.protocol import datatypes
from modelhost.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse
from modelhost.server.metrics import Metrics
from modelhost.settings import BatchSettings

__all__ = ["BatchSettings", "Batcher"]

logger = logging.getLogger("modelhost.batcher")

# Request parameters that only steer the wire format, never what the model computes.
_TRANSPORT_PARAMETERS = frozenset({"binary_data_output", "headers"})

Predict = Callable[[Any, dict[str, str]], Awaitable[Any]]


@dataclasses.dataclass(eq=False)
class _Item:
    request: InferRequest
    rows: int
    headers: dict[str, str]
    future: asyncio.Future[Any]
    queued_at: float


class Batcher:
    """Batches one model's predict calls; ``submit`` is all a caller needs."""

    def __init__(
        self, model: Model, settings: BatchSettings, predict: Predict, metrics: Metrics
    ) -> None:
        self.model = model
        self.settings = settings
        self._predict = predict
        self._queues: dict[Hashable, asyncio.Queue[_Item]] = {}
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrent_batches)
        self._batch_size = metrics.batch_size(model.name)
        self._queue_time = metrics.batch_queue_seconds(model.name)

    async def submit(self, payload: Any, headers: dict[str, str]) -> Any:
        """The model's result for ``payload``, computed in a batch when it can be."""
        prepared = _as_tensor_request(payload)
        if prepared is None:
            return await self._predict(payload, headers)
        request, rows, key = prepared
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._tasks[key] = asyncio.create_task(self._run(queue), name=f"batcher-{key!r}")
        loop = asyncio.get_running_loop()
        item = _Item(request, rows, headers, loop.create_future(), time.perf_counter())
        queue.put_nowait(item)
        return await item.future

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._queues.clear()

    async def _run(self, queue: asyncio.Queue[_Item]) -> None:
        max_rows = self.settings.max_batch_size
        max_wait = self.settings.max_latency_ms / 1000.0
        carry: _Item | None = None
        while True:
            first = carry if carry is not None else await queue.get()
            carry = None
            # The slot is shared by every shape key of the model, so it is taken only with
            # a request in hand: an idle key must never hold it. Requests that queue while
            # this waits for the slot join the batch below.
            await self._slots.acquire()
            batch = [first]
            rows = first.rows
            deadline = batch[0].queued_at + max_wait
            while rows < max_rows:
                if queue.empty():
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    item = queue.get_nowait()
                if rows + item.rows > max_rows:
                    carry = item  # too big to join: it heads the next batch
                    break
                batch.append(item)
                rows += item.rows
            self._run_soon(batch)

    def _run_soon(self, batch: list[_Item]) -> None:
        task = asyncio.create_task(self._execute(batch))
        task.add_done_callback(_log_unexpected)

    async def _execute(self, batch: list[_Item]) -> None:
        try:
            started = time.perf_counter()
            for item in batch:
                self._queue_time.observe(started - item.queued_at)
            self._batch_size.observe(sum(item.rows for item in batch))
            live = [item for item in batch if not item.future.done()]
            if len(live) == 1:
                await self._run_alone(live[0])
            elif live:
                await self._run_batch(live)
        finally:
            self._slots.release()

    async def _run_batch(self, batch: list[_Item]) -> None:
        merged = _merge([item.request for item in batch])
        try:
            result = await self._predict(merged, batch[0].headers)
            parts = _split(self.model, merged, result, [item.rows for item in batch])
        except Exception as exc:
            logger.debug("Batch of %d failed (%s); running each alone", len(batch), exc)
            await asyncio.gather(*(self._run_alone(item) for item in batch))
            return
        for item, part in zip(batch, parts, strict=True):
            part.id = item.request.id
            if not item.future.done():
                item.future.set_result(part)

    async def _run_alone(self, item: _Item) -> None:
        try:
            result = await self._predict(item.request, item.headers)
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
            return
        if not item.future.done():
            item.future.set_result(result)


def _log_unexpected(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("Batch task failed", exc_info=task.exception())


def _as_tensor_request(payload: Any) -> tuple[InferRequest, int, Hashable] | None:
    """The payload as a stackable tensor request, its row count and shape key, or None."""
    if isinstance(payload, InferRequest):
        inputs = payload.inputs
        if not inputs:
            return None
        rows = -1
        tensors = []
        for tensor in inputs:
            shape = tensor.as_numpy().shape
            if not shape:
                return None
            if rows < 0:
                rows = shape[0]
            elif shape[0] != rows:
                return None
            tensors.append((tensor.name, tensor.datatype, shape[1:]))
        if rows == 0:
            return None
        return payload, rows, _shape_key(payload, tuple(tensors))
    if isinstance(payload, dict):
        instances = payload.get("instances", payload.get("inputs"))
        if not isinstance(instances, list) or not instances or len(payload) != 1:
            return None
        if isinstance(instances[0], (dict, str)):
            return None
        try:
            array = np.asarray(instances)
        except ValueError:
            return None
        if array.ndim == 0 or array.dtype.kind not in "biuf":
            return None
        datatype = datatypes.datatype_of(array)
        request = InferRequest("", [InferInput.wrap("input-0", datatype, array)])
        return (
            request,
            array.shape[0],
            _shape_key(request, (("input-0", datatype, array.shape[1:]),)),
        )
    return None


def _shape_key(request: InferRequest, tensors: tuple[Hashable, ...]) -> Hashable:
    """What requests share to be stacked: ``tensors`` (names, datatypes, trailing
    dimensions), the parameters a model sees, and the outputs asked for."""
    parameters = request.parameters
    steering = (
        tuple(sorted((k, repr(v)) for k, v in parameters.items() if k not in _TRANSPORT_PARAMETERS))
        if parameters
        else ()
    )
    requested = request.request_outputs
    outputs = tuple(sorted(o.name for o in requested)) if requested else ()
    return tensors, steering, outputs


def _merge(requests: list[InferRequest]) -> InferRequest:
    first = requests[0]
    inputs = []
    for index, tensor in enumerate(first.inputs):
        stacked = np.concatenate([r.inputs[index].as_numpy() for r in requests])
        inputs.append(InferInput(tensor.name, list(stacked.shape), tensor.datatype, stacked))
    return InferRequest(
        first.model_name,
        inputs,
        parameters=first.parameters,
        request_outputs=first.request_outputs,
    )


def _split(model: Model, merged: InferRequest, result: Any, rows: list[int]) -> list[Any]:
    if isinstance(result, dict) and "predictions" in result and len(result) == 1:
        result = result["predictions"]
    response = (
        result
        if isinstance(result, InferResponse)
        else get_predict_response(merged, result, model.name)
    )
    assert isinstance(response, InferResponse)
    total = sum(rows)
    arrays: list[npt.NDArray[Any]] = []
    for output in response.outputs:
        array = output.as_numpy()
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(f"output {output.name} does not have {total} rows to split")
        arrays.append(array)
    parts: list[Any] = []
    start = 0
    for count in rows:
        outputs = []
        for output, array in zip(response.outputs, arrays, strict=True):
            piece = array[start : start + count]
            parameters = output.parameters
            outputs.append(
                InferOutput.wrap(
                    output.name, output.datatype, piece, dict(parameters) if parameters else None
                )
            )
        parts.append(
            InferResponse(None, response.model_name, outputs, parameters=response.parameters)
        )
        start += count
    return parts
