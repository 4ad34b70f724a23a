"""The gateway's Prometheus metrics: requests, latency, cold starts and replicas per revision.

Named after what Knative's activator and queue-proxy export, under a ``modelhost_gateway_``
prefix; the registry is the platform's own, so that two platforms in one process (tests) do
not collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, exposition
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["GatewayMetrics", "ReplicaCount"]

# (namespace, service, component, revision, state, count)
ReplicaCount = tuple[str, str, str, str, str, int]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self, replicas: Callable[[], Iterable[ReplicaCount]]) -> None:
        self.registry = CollectorRegistry()
        labels = ("namespace", "service", "component", "revision")
        self.requests = Counter(
            "modelhost_gateway_requests",
            "Requests the gateway answered, by revision and HTTP status code.",
            (*labels, "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelhost_gateway_request_duration_seconds",
            "Time from a request's arrival at the gateway to its last response byte.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "modelhost_gateway_cold_starts",
            "Requests that found their revision scaled to zero and waited for a replica.",
            labels,
            registry=self.registry,
        )
        self.registry.register(_ReplicaCollector(replicas))

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = exposition.choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _ReplicaCollector(Collector):
    """Replica counts are read when scraped: they live in the runners, not in counters."""

    def __init__(self, replicas: Callable[[], Iterable[ReplicaCount]]) -> None:
        self._replicas = replicas

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "modelhost_gateway_replicas",
            "Replicas of each revision, by state (Starting, Ready, Draining).",
            labels=("namespace", "service", "component", "revision", "state"),
        )
        for namespace, service, component, revision, state, count in self._replicas():
            family.add_metric((namespace, service, component, revision, state), count)
        yield family
