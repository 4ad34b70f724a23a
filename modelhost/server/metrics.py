"""Prometheus metrics of the data plane, in a registry owned by one server.

Request counters, latency histograms and in-flight gauges carry ``model``, ``protocol``
and ``endpoint`` labels; KServe's step histograms keep KServe's names and its single
``model_name`` label so existing dashboards keep working.

A server of 10,000 models must not keep 10,000 models' label children: a model's
children are made on its first request and removed when it unloads
(:meth:`Metrics.forget_model`, called by the repository), so they are bounded by the
models loaded (plus, for a moment, one evicted while a request of its ran). Its series
then restart from zero on its next load, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, exposition, values
from prometheus_client.multiprocess import MultiProcessCollector

from modelhost.server.openai.metrics import LLMMetrics

__all__ = ["Metrics"]

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
        if multiprocess_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
            # Values live in files; this registry only keeps the names unique.
            self.registry = CollectorRegistry()
        else:
            self.registry = registry if registry is not None else CollectorRegistry()
        # prometheus-client's labels() costs microseconds per call; the hot path looks
        # children up here instead, by model, so that a model's are forgotten in one step.
        # Callers pass only known model names; forget_model bounds them to loaded ones.
        self._request_counters: dict[str, dict[tuple[str, str, str], Any]] = {}
        self._request_durations: dict[str, dict[tuple[str, str], Any]] = {}
        self._step_children: dict[str, dict[int, Any]] = {}
        labels = ("model", "protocol", "endpoint")
        self.requests = Counter(
            "modelhost_requests",
            "Requests handled, by model, protocol, endpoint and status.",
            (*labels, "status"),
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "modelhost_request_duration_seconds",
            "Time from request received to response ready.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "modelhost_requests_in_flight",
            "Requests being handled now.",
            ("protocol",),
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "modelhost_batch_size",
            "Rows per batch the adaptive batcher ran as one predict.",
            ("model",),
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.batch_queue_seconds = Histogram(
            "modelhost_batch_queue_seconds",
            "Time a request waited in the batcher's queue before its batch ran.",
            ("model",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        step = ("model_name",)
        self.preprocess = Histogram(
            "request_preprocess_seconds",
            "pre-process request latency",
            step,
            registry=self.registry,
        )
        self.predict = Histogram(
            "request_predict_seconds", "predict request latency", step, registry=self.registry
        )
        self.postprocess = Histogram(
            "request_postprocess_seconds",
            "post-process request latency",
            step,
            registry=self.registry,
        )
        self.explain = Histogram(
            "request_explain_seconds", "explain request latency", step, registry=self.registry
        )
        # Generation metrics under vLLM's names (the OpenAI API observes them).
        self.llm = LLMMetrics(self.registry)

    def observe_request(
        self, model: str, protocol: str, endpoint: str, status: str | int, seconds: float
    ) -> None:
        """Count one finished request and its latency (the hot path: children are cached)."""
        key = (protocol, endpoint, str(status))
        counters = self._request_counters.get(model)
        if counters is None:
            counters = self._request_counters[model] = {}
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = self.requests.labels(model, *key)
        counter.inc()
        durations = self._request_durations.get(model)
        if durations is None:
            durations = self._request_durations[model] = {}
        duration = durations.get(key[:2])
        if duration is None:
            duration = durations[key[:2]] = self.request_duration.labels(model, *key[:2])
        duration.observe(seconds)

    def observe_step(self, histogram: Histogram, model: str, seconds: float) -> None:
        """Record one model step (preprocess, predict, ...) in one of KServe's histograms."""
        children = self._step_children.get(model)
        if children is None:
            children = self._step_children[model] = {}
        child = children.get(id(histogram))
        if child is None:
            child = children[id(histogram)] = histogram.labels(model)
        child.observe(seconds)

    def forget_model(self, model: str) -> None:
        """Remove ``model``'s label children (it unloaded): the label set stays bounded.

        The batcher's histograms are removed too; a batcher made for the model's next
        load makes its children again.
        """
        for counted in self._request_counters.pop(model, {}):
            _remove(self.requests, model, *counted)
        for timed in self._request_durations.pop(model, {}):
            _remove(self.request_duration, model, *timed)
        self._step_children.pop(model, None)
        for histogram in (self.preprocess, self.predict, self.postprocess, self.explain):
            _remove(histogram, model)
        for histogram in (self.batch_size, self.batch_queue_seconds):
            _remove(histogram, model)

    def model_label_children(self) -> int:
        """How many children carry a model label now (what ``forget_model`` bounds)."""
        per_model = (
            self.requests,
            self.request_duration,
            self.batch_size,
            self.batch_queue_seconds,
            self.preprocess,
            self.predict,
            self.postprocess,
            self.explain,
        )
        return sum(len(metric._metrics) for metric in per_model)

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


def _remove(metric: Counter | Histogram, *labels: str) -> None:
    """``metric.remove(*labels)``, for a child that may not exist."""
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
