"""Runs a model's steps (preprocess, predict, postprocess, explain) off the event loop.

A synchronous step runs in the server's thread pool, so a slow ``predict`` never
stalls health checks or other requests (KServe runs them on the loop: its issue 3950).
An ``async`` step is awaited on the loop. Steps the model does not override are
skipped, and each step's time goes to KServe's step histograms. ``predict`` goes through
the model's adaptive batcher when batching is on for it (``model.batching``, or the
server's default). A transformer, a model that keeps the base ``predict`` and names a
``predictor_host``, has its ``predict`` done by its predictor (``remote_predictor``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from modelhost.model.model import Model
from modelhost.server.batcher import Batcher
from modelhost.server.metrics import Metrics
from modelhost.settings import BatchSettings

if TYPE_CHECKING:
    from modelhost.server.remote_predictor import RemotePredictor, RemotePredictors

__all__ = ["StepRunner"]

# Calls a step makes in the pool, timed, before it may run inline.
_WARMUP_CALLS = 5
# Weight of the newest call in a step's moving mean: one slow call moves it a lot.
_ALPHA = 0.2


class _Timing:
    """The moving mean time of one model step, from inside the call (no hand-off)."""

    __slots__ = ("count", "mean")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.mean = seconds if self.count == 1 else self.mean + _ALPHA * (seconds - self.mean)

    def fast(self, limit: float) -> bool:
        return self.count >= _WARMUP_CALLS and self.mean < limit


class StepRunner:
    """Calls model methods the right way round: sync ones in a pool, async ones awaited."""

    def __init__(
        self,
        executor: Executor,
        metrics: Metrics,
        batching: BatchSettings | None = None,
        inline_below_ms: float = 0.0,
    ) -> None:
        self._executor = executor
        self._metrics = metrics
        self._default_batching = batching or BatchSettings()
        # Opt-in: a sync step whose moving mean is below this runs on the loop, saving the
        # thread hand-off (two context switches, ~0.2 ms on a small VM). 0: never.
        self._inline_below = inline_below_ms / 1000.0
        self._timings: weakref.WeakKeyDictionary[Model, dict[str, _Timing]] = (
            weakref.WeakKeyDictionary()
        )
        # Keyed by the model object: a reloaded model gets a fresh batcher.
        self._batchers: weakref.WeakKeyDictionary[Model, Batcher] = weakref.WeakKeyDictionary()
        # Made for the first transformer: a plain model's server does not import the REST
        # and gRPC clients (and gRPC's stubs) that forwarding needs.
        self._remote: RemotePredictors | None = None
        # Decided once per model object: its forwarder, or None for the model's own predict.
        self._forwarders: weakref.WeakKeyDictionary[Model, RemotePredictor | None] = (
            weakref.WeakKeyDictionary()
        )

    def batcher(self, model: Model) -> Batcher | None:
        """The model's batcher, made on first use; None when batching is off for it."""
        batcher = self._batchers.get(model)
        if batcher is None:
            settings = model.batching or self._default_batching
            if not settings.enabled:
                return None
            extra = model.return_response_headers
            method = self.predict_method(model)

            async def predict(payload: Any, headers: dict[str, str]) -> Any:
                args = (payload, headers, {}) if extra else (payload, headers)
                return await self._timed(model, method, "predict", args)

            batcher = self._batchers[model] = Batcher(model, settings, predict, self._metrics)
        return batcher

    def predict_method(self, model: Model) -> Callable[..., Any]:
        """``model.predict``, or for a transformer the call to its predictor."""
        if type(model).predict is not Model.predict:
            return model.predict
        try:
            forwarder = self._forwarders[model]
        except KeyError:
            forwarder = self._forwarders[model] = self._forwarder(model)
        # Without a predictor_host the base predict raises NotImplementedError: a 501.
        return model.predict if forwarder is None else forwarder.predict

    async def close(self) -> None:
        """Stop every batcher's queue tasks and close the predictor clients (at shutdown)."""
        for batcher in list(self._batchers.values()):
            await batcher.close()
        if self._remote is not None:
            await self._remote.close()

    def _forwarder(self, model: Model) -> RemotePredictor | None:
        config = model.predictor_config
        if config is None or not config.predictor_host:
            return None
        if self._remote is None:
            from modelhost.server.remote_predictor import RemotePredictors

            self._remote = RemotePredictors()
        return self._remote.for_model(model)

    async def _timed(
        self,
        model: Model,
        method: Callable[..., Any],
        step: str,
        args: tuple[Any, ...],
    ) -> Any:
        started = time.perf_counter()
        if self._inline_below > 0 and not inspect.iscoroutinefunction(method):
            result = await self._adaptive(model, method, args)
        else:
            result = await self.call(method, *args)
        self._metrics.observe_step(step, model.name, time.perf_counter() - started)
        return result

    async def _adaptive(
        self, model: Model, method: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        """A sync step inline when it has proven fast, in the pool (and timed) otherwise.

        A step that turns slow is back in the pool from its next call: one slow call
        lifts the moving mean past the limit by itself.
        """
        timings = self._timings.get(model)
        if timings is None:
            timings = self._timings[model] = {}
        timing = timings.get(method.__name__)
        if timing is None:
            timing = timings[method.__name__] = _Timing()
        if timing.fast(self._inline_below):
            started = time.perf_counter()
            try:
                result = method(*args)
            finally:
                timing.add(time.perf_counter() - started)
        else:

            def timed() -> Any:
                started = time.perf_counter()
                try:
                    return method(*args)
                finally:
                    timing.add(time.perf_counter() - started)

            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, timed)
        if inspect.isawaitable(result):
            return await result
        return result

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
        explain: Callable[[Any, dict[str, str]], Any] | None = None,
    ) -> tuple[Any, dict[str, str]]:
        """The model's result for ``payload``, and any response headers it set.

        ``explain`` is the explain step for a model without one of its own (the server's
        explainer); it runs as the model's own would, off the loop and timed.
        """
        response_headers: dict[str, str] = {}
        extra = (response_headers,) if model.return_response_headers else ()
        kind = type(model)
        if kind.preprocess is not Model.preprocess:
            payload = await self._timed(model, model.preprocess, "preprocess", (payload, headers))
        if verb == "explain":
            step = model.explain if explain is None else explain
            result = await self._timed(model, step, "explain", (payload, headers))
        else:
            batcher = self.batcher(model)
            if batcher is not None:
                result = await batcher.submit(payload, headers)
            else:
                # Only a model without a predict of its own can be a transformer.
                predict = (
                    model.predict
                    if kind.predict is not Model.predict
                    else self.predict_method(model)
                )
                result = await self._timed(model, predict, "predict", (payload, headers, *extra))
        if kind.postprocess is not Model.postprocess:
            result = await self._timed(
                model, model.postprocess, "postprocess", (result, headers, *extra)
            )
        return result, response_headers
