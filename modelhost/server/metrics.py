"""Prometheus metrics of the data plane, in a registry owned by one server.

Request counters, latency histograms and in-flight gauges carry ``model``, ``protocol``
and ``endpoint`` labels; KServe's step histograms keep KServe's names and its single
``model_name`` label so existing dashboards keep working.
"""

from __future__ import annotations

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
        # children up here instead. Callers pass only known model names, which bounds it.
        self._request_counters: dict[tuple[str, str, str, str], Any] = {}
        self._request_durations: dict[tuple[str, str, str], Any] = {}
        self._step_children: dict[tuple[int, str], Any] = {}
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
        key = (model, protocol, endpoint, str(status))
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._request_counters[key] = self.requests.labels(*key)
        counter.inc()
        duration = self._request_durations.get(key[:3])
        if duration is None:
            duration = self._request_durations[key[:3]] = self.request_duration.labels(*key[:3])
        duration.observe(seconds)

    def observe_step(self, histogram: Histogram, model: str, seconds: float) -> None:
        """Record one model step (preprocess, predict, ...) in one of KServe's histograms."""
        key = (id(histogram), model)
        child = self._step_children.get(key)
        if child is None:
            child = self._step_children[key] = histogram.labels(model)
        child.observe(seconds)

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
