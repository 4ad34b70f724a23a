"""Prometheus metrics of the data plane, in a registry owned by one server.

Request counters, latency histograms and in-flight gauges carry ``model``, ``protocol``
and ``endpoint`` labels; KServe's step histograms keep KServe's names and its single
``model_name`` label so existing dashboards keep working.

One process keeps them as plain numbers on its event loop, written out at scrape time
(:mod:`modelhost.server.metric_tallies`: no lock per request); a server with several worker
processes keeps them in prometheus-client's multiprocess files, which add up across workers.

A server of 10,000 models must not keep 10,000 models' series: a model's are made on its
first request and removed when it unloads (:meth:`Metrics.forget_model`, called by the
repository), so they are bounded by the models loaded (plus, for a moment, one evicted while
a request of its ran). Its series then restart from zero on its next load, which
Prometheus reads as a counter reset.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, exposition, values
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from modelhost.server.metric_tallies import (
    HistogramTally,
    Level,
    counter_family,
    gauge_family,
    histogram_family,
)
from modelhost.server.openai.metrics import LLMMetrics

__all__ = ["STEPS", "Metrics"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
# The batcher's two histograms' buckets, by the index ``_Tallied.batch`` takes.
_BATCH_BOUNDS = (_BATCH_BUCKETS, _LATENCY_BUCKETS)
# KServe's step histograms keep prometheus-client's default buckets, as KServe's do.
_STEP_BUCKETS = tuple(b for b in Histogram.DEFAULT_BUCKETS if b != float("inf"))

_LABELS = ("model", "protocol", "endpoint")
_REQUESTS = ("modelhost_requests", "Requests handled, by model, protocol, endpoint and status.")
_DURATION = ("modelhost_request_duration_seconds", "Time from request received to response ready.")
_IN_FLIGHT = ("modelhost_requests_in_flight", "Requests being handled now.")
_BATCH_SIZE = ("modelhost_batch_size", "Rows per batch the adaptive batcher ran as one predict.")
_BATCH_QUEUE = (
    "modelhost_batch_queue_seconds",
    "Time a request waited in the batcher's queue before its batch ran.",
)
# A model step (KServe's names): its histogram's name and help.
STEPS = {
    "preprocess": ("request_preprocess_seconds", "pre-process request latency"),
    "predict": ("request_predict_seconds", "predict request latency"),
    "postprocess": ("request_postprocess_seconds", "post-process request latency"),
    "explain": ("request_explain_seconds", "explain request latency"),
}


class Gauged(Protocol):
    """What a caller holds of an in-flight gauge."""

    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...


class Observed(Protocol):
    """What a caller holds of a histogram."""

    def observe(self, amount: float) -> None: ...


class Metrics:
    """Every metric the server exports, and the exposition of them."""

    def __init__(
        self, registry: CollectorRegistry | None = None, multiprocess_dir: str | None = None
    ) -> None:
        """``multiprocess_dir`` makes the metrics of all worker processes add up.

        It must be given in a worker before any metric is made: prometheus-client picks
        where a value lives (memory or a shared file) when the value is created.
        """
        self.multiprocess_dir = multiprocess_dir
        self._series: _Tallied | _Shared
        if multiprocess_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
            # Values live in files; this registry only keeps the names unique.
            self.registry = CollectorRegistry()
            self._series = _Shared(self.registry)
        else:
            self.registry = registry if registry is not None else CollectorRegistry()
            self._series = _Tallied(self.registry)
        # Generation metrics under vLLM's names (the OpenAI API observes them).
        self.llm = LLMMetrics(self.registry)

    def observe_request(
        self, model: str, protocol: str, endpoint: str, status: str | int, seconds: float
    ) -> None:
        """Count one finished request and its latency.

        Callers pass only known model names (an unknown one from a client would grow the
        label set); :meth:`forget_model` bounds them to the loaded ones.
        """
        self._series.observe_request(model, protocol, endpoint, str(status), seconds)

    def observe_step(self, step: str, model: str, seconds: float) -> None:
        """Record one model step (a key of :data:`STEPS`) in KServe's histogram of it."""
        self._series.observe_step(step, model, seconds)

    def in_flight(self, protocol: str) -> Gauged:
        """The gauge of ``protocol``'s requests being handled now (held by its server)."""
        return self._series.in_flight(protocol)

    def in_flight_now(self, protocol: str) -> float:
        return self._series.in_flight_now(protocol)

    def batch_size(self, model: str) -> Observed:
        """The histogram of the rows per batch of ``model`` (held by its batcher)."""
        return self._series.batch(model, 0)

    def batch_queue_seconds(self, model: str) -> Observed:
        """The histogram of the time ``model``'s requests waited for their batch."""
        return self._series.batch(model, 1)

    def forget_model(self, model: str) -> None:
        """Remove ``model``'s series (it unloaded): the label set stays bounded.

        The batcher's histograms go too; a batcher made for the model's next load makes
        its own again.
        """
        self._series.forget_model(model)

    def model_label_children(self) -> int:
        """How many series carry a model label now (what ``forget_model`` bounds)."""
        return self._series.model_label_children()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format ``accept`` asks for (Prometheus text by default)."""
        encoder, content_type = exposition.choose_encoder(accept or "")
        registry = self.registry
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            # Engine gauges are read at scrape time, from this worker's models.
            registry.register(self.llm.stats_collector)
        return encoder(registry), content_type


class _ModelTallies:
    """One model's series: requests by (protocol, endpoint, status), durations by
    (protocol, endpoint), steps by name, and its batcher's two histograms."""

    __slots__ = ("batch", "durations", "requests", "steps")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.durations: dict[tuple[str, str], HistogramTally] = {}
        self.steps: dict[str, HistogramTally] = {}
        self.batch: list[HistogramTally | None] = [None, None]


class _Tallied:
    """The series as plain numbers, written by the loop's thread, collected at scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._models: dict[str, _ModelTallies] = {}
        self._in_flight: dict[str, Level] = {}
        registry.register(self)

    def _of(self, model: str) -> _ModelTallies:
        tallies = self._models.get(model)
        if tallies is None:
            tallies = self._models[model] = _ModelTallies()
        return tallies

    def observe_request(
        self, model: str, protocol: str, endpoint: str, status: str, seconds: float
    ) -> None:
        tallies = self._of(model)
        requests = tallies.requests
        key = (protocol, endpoint, status)
        requests[key] = requests.get(key, 0) + 1
        duration = tallies.durations.get((protocol, endpoint))
        if duration is None:
            duration = tallies.durations[protocol, endpoint] = HistogramTally(_LATENCY_BUCKETS)
        duration.observe(seconds)

    def observe_step(self, step: str, model: str, seconds: float) -> None:
        steps = self._of(model).steps
        tally = steps.get(step)
        if tally is None:
            tally = steps[step] = HistogramTally(_STEP_BUCKETS)
        tally.observe(seconds)

    def in_flight(self, protocol: str) -> Level:
        level = self._in_flight.get(protocol)
        if level is None:
            level = self._in_flight[protocol] = Level()
        return level

    def in_flight_now(self, protocol: str) -> float:
        return self.in_flight(protocol).value

    def batch(self, model: str, which: int) -> HistogramTally:
        batch = self._of(model).batch
        tally = batch[which]
        if tally is None:
            tally = batch[which] = HistogramTally(_BATCH_BOUNDS[which])
        return tally

    def forget_model(self, model: str) -> None:
        self._models.pop(model, None)

    def model_label_children(self) -> int:
        return sum(
            len(t.requests) + len(t.durations) + len(t.steps) + sum(b is not None for b in t.batch)
            for t in list(self._models.values())
        )

    # -- the registry's collector --

    def describe(self) -> list[Metric]:
        return list(self._families({}, {}))

    def collect(self) -> list[Metric]:
        # Copied first: a scrape sees each series as it was.
        return list(self._families(dict(self._models), dict(self._in_flight)))

    def _families(
        self, models: dict[str, _ModelTallies], in_flight: dict[str, Level]
    ) -> Iterator[Metric]:
        yield counter_family(
            *_REQUESTS,
            (*_LABELS, "status"),
            (
                ((model, *key), count)
                for model, t in models.items()
                for key, count in list(t.requests.items())
            ),
        )
        yield histogram_family(
            *_DURATION,
            _LABELS,
            _LATENCY_BUCKETS,
            (
                ((model, *key), d)
                for model, t in models.items()
                for key, d in list(t.durations.items())
            ),
        )
        yield gauge_family(*_IN_FLIGHT, ("protocol",), (((p,), v) for p, v in in_flight.items()))
        for which, (name, documentation) in enumerate((_BATCH_SIZE, _BATCH_QUEUE)):
            yield histogram_family(
                name,
                documentation,
                ("model",),
                _BATCH_BOUNDS[which],
                (((model,), b) for model, t in models.items() if (b := t.batch[which]) is not None),
            )
        for step, (name, documentation) in STEPS.items():
            yield histogram_family(
                name,
                documentation,
                ("model_name",),
                _STEP_BUCKETS,
                (
                    ((model,), s)
                    for model, t in models.items()
                    if (s := t.steps.get(step)) is not None
                ),
            )


class _Shared:
    """The series as prometheus-client metrics (their values in multiprocess files)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # prometheus-client's labels() costs microseconds per call; children are looked
        # up here instead, by model, so that a model's are forgotten in one step.
        self._request_counters: dict[str, dict[tuple[str, str, str], Any]] = {}
        self._request_durations: dict[str, dict[tuple[str, str], Any]] = {}
        self._step_children: dict[str, dict[str, Any]] = {}
        self.requests = Counter(*_REQUESTS, (*_LABELS, "status"), registry=registry)
        self.request_duration = Histogram(
            *_DURATION, _LABELS, buckets=_LATENCY_BUCKETS, registry=registry
        )
        self.gauge = Gauge(
            *_IN_FLIGHT, ("protocol",), registry=registry, multiprocess_mode="livesum"
        )
        self.batch_histograms = (
            Histogram(*_BATCH_SIZE, ("model",), buckets=_BATCH_BUCKETS, registry=registry),
            Histogram(*_BATCH_QUEUE, ("model",), buckets=_LATENCY_BUCKETS, registry=registry),
        )
        self.steps = {
            step: Histogram(name, documentation, ("model_name",), registry=registry)
            for step, (name, documentation) in STEPS.items()
        }

    def observe_request(
        self, model: str, protocol: str, endpoint: str, status: str, seconds: float
    ) -> None:
        key = (protocol, endpoint, status)
        counters = self._request_counters.setdefault(model, {})
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = self.requests.labels(model, *key)
        counter.inc()
        durations = self._request_durations.setdefault(model, {})
        duration = durations.get(key[:2])
        if duration is None:
            duration = durations[key[:2]] = self.request_duration.labels(model, *key[:2])
        duration.observe(seconds)

    def observe_step(self, step: str, model: str, seconds: float) -> None:
        children = self._step_children.setdefault(model, {})
        child = children.get(step)
        if child is None:
            child = children[step] = self.steps[step].labels(model)
        child.observe(seconds)

    def in_flight(self, protocol: str) -> Gauged:
        return self.gauge.labels(protocol)

    def in_flight_now(self, protocol: str) -> float:
        return float(self.gauge.labels(protocol)._value.get())

    def batch(self, model: str, which: int) -> Observed:
        return self.batch_histograms[which].labels(model)

    def forget_model(self, model: str) -> None:
        for counted in self._request_counters.pop(model, {}):
            _remove(self.requests, model, *counted)
        for timed in self._request_durations.pop(model, {}):
            _remove(self.request_duration, model, *timed)
        self._step_children.pop(model, None)
        for histogram in (*self.steps.values(), *self.batch_histograms):
            _remove(histogram, model)

    def model_label_children(self) -> int:
        per_model = (
            self.requests,
            self.request_duration,
            *self.batch_histograms,
            *self.steps.values(),
        )
        return sum(len(metric._metrics) for metric in per_model)


def _remove(metric: Counter | Histogram, *labels: str) -> None:
    """``metric.remove(*labels)``, for a child that may not exist."""
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
