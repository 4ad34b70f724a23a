"""LLM metrics under vLLM's names, so that vLLM's dashboards and autoscaling rules work as is.

Latencies and token counts are observed by the API layer as tokens stream out; gauges of
the engine (running and waiting requests, KV-cache usage) are read from each model's
``stats`` when Prometheus scrapes. Labelled by ``model_name``, the base model's name (an
adapter's requests count under the model it runs on, which bounds the label set).

vLLM's V1 engine exports ``vllm:inter_token_latency_seconds`` and, with the same values, the
older ``vllm:time_per_output_token_seconds``; only the current name is exported here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["LLMMetrics", "RequestObserver"]

StatsSource = Callable[[], Iterable[tuple[str, Mapping[str, Any]]]]

# vLLM's buckets, so that quantiles compare across servers.
_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
_E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


class _StatsCollector(Collector):
    """Engine gauges, read from the models at scrape time."""

    def __init__(self) -> None:
        self.source: StatsSource | None = None

    def describe(self) -> Iterable[Metric]:
        # Nothing to declare up front; collect() must not run at registration.
        return []

    def collect(self) -> Iterable[Metric]:
        families = {
            "running": GaugeMetricFamily(
                "vllm:num_requests_running",
                "Number of requests in model execution batches.",
                labels=["model_name"],
            ),
            "waiting": GaugeMetricFamily(
                "vllm:num_requests_waiting",
                "Number of requests waiting to be processed.",
                labels=["model_name"],
            ),
            "kv_cache_usage": GaugeMetricFamily(
                "vllm:kv_cache_usage_perc",
                "KV-cache usage. 1 means 100 percent usage.",
                labels=["model_name"],
            ),
        }
        for name, stats in self._stats():
            for key, family in families.items():
                value = stats.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    family.add_metric([name], float(value))
        return list(families.values())

    def _stats(self) -> Iterable[tuple[str, Mapping[str, Any]]]:
        return () if self.source is None else self.source()


class LLMMetrics:
    """The histograms and counters of generation, in one server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        label = ("model_name",)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            label,
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            label,
            buckets=_ITL_BUCKETS,
            registry=registry,
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            label,
            buckets=_E2E_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", label, registry=registry
        )
        self.generation_tokens = Counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            label,
            registry=registry,
        )
        self.request_success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            ("model_name", "finished_reason"),
            registry=registry,
        )
        self.stats_collector = _StatsCollector()
        registry.register(self.stats_collector)
        self._children: dict[str, tuple[Any, ...]] = {}

    def watch(self, source: StatsSource) -> None:
        """Read engine gauges from ``source`` (name and stats of each generative model)."""
        self.stats_collector.source = source

    def observer(self, model_name: str, started: float, prompt_tokens: int) -> RequestObserver:
        """Observe one generation of ``model_name`` that arrived at ``started`` (perf_counter)."""
        children = self._children.get(model_name)
        if children is None:
            children = self._children[model_name] = (
                self.ttft.labels(model_name),
                self.itl.labels(model_name),
                self.e2e.labels(model_name),
                self.prompt_tokens.labels(model_name),
                self.generation_tokens.labels(model_name),
            )
        return RequestObserver(self, model_name, children, started, prompt_tokens)


class RequestObserver:
    """Times one generation's tokens: the first (TTFT), each next (ITL), the end (e2e)."""

    __slots__ = ("_children", "_last", "_metrics", "_model", "_prompt_tokens", "_started")

    def __init__(
        self,
        metrics: LLMMetrics,
        model_name: str,
        children: tuple[Any, ...],
        started: float,
        prompt_tokens: int,
    ) -> None:
        self._metrics = metrics
        self._model = model_name
        self._children = children
        self._started = started
        self._prompt_tokens = prompt_tokens
        self._last = 0.0

    def token(self) -> None:
        now = time.perf_counter()
        ttft, itl, _, prompt, generated = self._children
        if self._last:
            itl.observe(now - self._last)
        else:
            ttft.observe(now - self._started)
            prompt.inc(self._prompt_tokens)
        self._last = now
        generated.inc()

    def finished(self, reason: str) -> None:
        self._children[2].observe(time.perf_counter() - self._started)
        self._metrics.request_success.labels(self._model, reason).inc()
