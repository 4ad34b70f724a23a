"""Runs a model's steps (preprocess, predict, postprocess, explain) off the event loop.

A synchronous step runs in the server's thread pool, so a slow ``predict`` never
stalls health checks or other requests (KServe runs them on the loop: its issue 3950).
An ``async`` step is awaited on the loop. Steps the model does not override are
skipped, and each step's time goes to KServe's step histograms.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from modelhost.model.model import Model
from modelhost.server.metrics import Metrics

__all__ = ["StepRunner"]


class StepRunner:
    """Calls model methods the right way round: sync ones in a pool, async ones awaited."""

    def __init__(self, executor: Executor, metrics: Metrics) -> None:
        self._executor = executor
        self._metrics = metrics

    async def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """``method(*args)``, off the loop when it is synchronous."""
        if inspect.iscoroutinefunction(method):
            return await method(*args)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, functools.partial(method, *args))
        if inspect.isawaitable(result):
            return await result
        return result

    async def run(
        self,
        model: Model,
        payload: Any,
        headers: dict[str, str],
        verb: str = "predict",
    ) -> tuple[Any, dict[str, str]]:
        """The model's result for ``payload``, and any response headers it set."""
        response_headers: dict[str, str] = {}
        extra = (response_headers,) if model.return_response_headers else ()
        name = model.name
        kind = type(model)
        if kind.preprocess is not Model.preprocess:
            started = time.perf_counter()
            payload = await self.call(model.preprocess, payload, headers)
            self._metrics.preprocess.labels(name).observe(time.perf_counter() - started)
        started = time.perf_counter()
        if verb == "explain":
            result = await self.call(model.explain, payload, headers)
            self._metrics.explain.labels(name).observe(time.perf_counter() - started)
        else:
            result = await self.call(model.predict, payload, headers, *extra)
            self._metrics.predict.labels(name).observe(time.perf_counter() - started)
        if kind.postprocess is not Model.postprocess:
            started = time.perf_counter()
            result = await self.call(model.postprocess, result, headers, *extra)
            self._metrics.postprocess.labels(name).observe(time.perf_counter() - started)
        return result, response_headers
